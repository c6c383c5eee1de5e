package keeperset

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

func TestGetMakesOnceAndCloseRefusesMore(t *testing.T) {
	var s Set
	var made atomic.Int64
	mk := func() (*credential.Keeper, error) {
		made.Add(1)
		return credential.New(credential.Config{Name: "n", Key: "k", Store: store.NewMemory()})
	}
	if s.Load(1) != nil {
		t.Fatal("an empty Set loaded a Keeper")
	}
	var wg sync.WaitGroup
	got := make([]*credential.Keeper, 16)
	for i := range got {
		wg.Go(func() {
			k, err := s.Get(1, mk)
			if err != nil {
				t.Error(err)
			}
			got[i] = k
		})
	}
	wg.Wait()
	if made.Load() != 1 || s.Load(1) != got[0] {
		t.Fatalf("made %d Keepers; want 1, loaded by Load", made.Load())
	}
	for _, k := range got {
		if k != got[0] {
			t.Fatal("callers got different Keepers")
		}
	}
	if _, err := s.Get(0, func() (*credential.Keeper, error) { return nil, errors.New("boom") }); err == nil || s.Load(0) != nil {
		t.Fatalf("a failed make: %v; want its error and nothing kept", err)
	}
	s.Close()
	if _, err := got[0].Get(t.Context()); !errors.Is(err, credential.ErrClosed) {
		t.Fatalf("a Keeper after Close: %v; want ErrClosed", err)
	}
	if _, err := s.Get(2, mk); !errors.Is(err, credential.ErrClosed) || made.Load() != 1 {
		t.Fatalf("Get after Close: %v (made %d); want ErrClosed and nothing made", err, made.Load())
	}
	s.Close()
}
