package procout

import (
	"strings"
	"sync"
	"testing"
)

func TestBufferConcurrentAndTail(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Write([]byte("x"))
				_ = b.Len()
			}
		})
	}
	wg.Wait()
	if b.Len() != 8000 || b.String() != strings.Repeat("x", 8000) {
		t.Fatalf("len %d", b.Len())
	}
	b.Write([]byte("END"))
	if tail := b.Tail(); len(tail) != tailBytes || !strings.HasSuffix(tail, "END") {
		t.Fatalf("tail of %d bytes, suffix %q", len(tail), tail[len(tail)-3:])
	}
}
