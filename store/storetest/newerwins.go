package storetest

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The NewerWins group: Set keeps the item that expires last, alone and under
// contention.

func testOlderNeverReplacesNewer(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	now := time.Now()
	older := store.Item{Value: tokenValue("older"), ExpiresAt: now.Add(time.Hour)}
	newer := store.Item{Value: tokenValue("newer"), ExpiresAt: now.Add(2 * time.Hour)}
	newest := store.Item{Value: tokenValue("newest"), ExpiresAt: now.Add(3 * time.Hour)}

	mustSet(t, s, keyToken, newer)
	mustSet(t, peer, keyToken, older) // a slow node, late with an older grant
	for name, h := range map[string]store.Store{"the store": s, "the peer": peer} {
		if got := mustGet(t, h, keyToken); !sameItem(got, newer) {
			t.Errorf("newer-wins Set: after Set(newer %s) then Set(older %s), Get on %s returned %s; an older item must never replace a newer one",
				show(newer), show(older), name, show(got))
		}
	}
	mustSet(t, peer, keyToken, newest)
	if got := mustGet(t, s, keyToken); !sameItem(got, newest) {
		t.Errorf("newer-wins Set: Set(%s) over %s left %s; the item that expires later must replace the stored one",
			show(newest), show(newer), show(got))
	}
}

func testNewerWinsConcurrent(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	const (
		rounds    = 10
		setters   = 16
		perSetter = 3
	)
	for round := range rounds {
		key := fmt.Sprintf("{wx%014d}:access_token", round)
		base := time.Now().Add(time.Hour)
		// Distinct expiries, handed out in random order.
		order := rand.Perm(setters * perSetter)
		items := make([]store.Item, len(order))
		want := 0
		for i, o := range order {
			items[i] = store.Item{
				Value:     fmt.Sprintf("round-%d-item-%d", round, i),
				ExpiresAt: base.Add(time.Duration(o)*time.Second + time.Duration(rand.IntN(1000))*time.Millisecond),
			}
			if items[i].Newer(items[want]) {
				want = i
			}
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make(chan error, len(items))
		)
		for w := range setters {
			h := handle(w, s, peer)
			wg.Go(func() {
				<-start
				for j := range perSetter {
					it := items[w*perSetter+j]
					if err := h.Set(t.Context(), key, it); err != nil {
						errs <- fmt.Errorf("Set(%s): %w", show(it), err)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("newer-wins Set under contention: a Set that loses must not be an error: %v", err)
		}
		if got := mustGet(t, s, key); !sameItem(got, items[want]) {
			t.Fatalf("newer-wins Set under contention (round %d): %d goroutines set %d items with random expiries; Get returned %s, want the one that expires last, %s",
				round, setters, len(items), show(got), show(items[want]))
		}
	}
}
