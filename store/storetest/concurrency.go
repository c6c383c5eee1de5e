package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Concurrency group: Gets, Sets and Locks at once, under the race
// detector.

func testMixed(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	const (
		workers = 16
		ops     = 48
	)
	keys := []string{keyToken, keyTicket, keyOther}
	seed := rand.Uint64()
	t.Logf("storetest: seed %d", seed)
	base := time.Now().Add(time.Hour)

	var (
		wg       sync.WaitGroup
		seq      atomic.Int64
		holders  [3]atomic.Int32
		acquired atomic.Int64
		mu       sync.Mutex
		best     = map[string]store.Item{}
		problems []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for w := range workers {
		h := handle(w, s, peer)
		wg.Go(func() {
			ctx := t.Context()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range ops {
				k := rng.IntN(len(keys))
				key := keys[k]
				switch rng.IntN(3) {
				case 0:
					if _, err := h.Get(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
						report("Get(%q): want an item or ErrNotFound, got %v", key, err)
					}
				case 1:
					n := seq.Add(1) // distinct expiries: n is below 1000
					it := store.Item{
						Value:     fmt.Sprintf("mixed-%d", n),
						ExpiresAt: base.Add(time.Duration(rng.IntN(1000))*time.Second + time.Duration(n)*time.Millisecond),
					}
					if err := h.Set(ctx, key, it); err != nil {
						report("Set(%q, %s): want nil, got %v", key, show(it), err)
						continue
					}
					mu.Lock()
					if it.Newer(best[key]) {
						best[key] = it
					}
					mu.Unlock()
				case 2:
					l, err := h.Lock(ctx, key, r.long())
					if err != nil {
						if !errors.Is(err, store.ErrLocked) {
							report("Lock(%q): want a lease or ErrLocked, got %v", key, err)
						}
						continue
					}
					acquired.Add(1)
					if n := holders[k].Add(1); n != 1 {
						report("lease: %d holders of %q at once", n, key)
					}
					if ext, ok := l.(store.Extender); ok && rng.IntN(2) == 0 {
						if err := ext.Extend(ctx, r.long()); err != nil {
							report("Extend of a live lease on %q: want nil, got %v", key, err)
						}
					}
					if _, err := h.Get(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
						report("Get(%q) under a lease: want an item or ErrNotFound, got %v", key, err)
					}
					holders[k].Add(-1)
					if err := l.Unlock(ctx); err != nil {
						report("Unlock of a live lease on %q: want nil, got %v", key, err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, p := range problems {
		t.Errorf("concurrency: %s", p)
	}
	if acquired.Load() == 0 {
		t.Errorf("concurrency: no Lock out of %d workers got a lease, though every holder unlocked", workers)
	}
	checked := 0
	for _, key := range keys {
		want, ok := best[key]
		if !ok {
			continue
		}
		checked++
		if got := mustGet(t, s, key); !sameItem(got, want) {
			t.Errorf("newer-wins Set amid Gets and Locks: Get(%q) returned %s; want the item that expires last, %s", key, show(got), show(want))
		}
	}
	if checked == 0 {
		t.Errorf("concurrency: no Set ran (seed %d); nothing was checked", seed)
	}
}
