package credential_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

// readCounter is a store that counts the Gets it answers by the second
// (since start) they arrive in, and remembers each key's longest gap
// between two Gets.
type readCounter struct {
	store.Store
	start time.Time

	mu       sync.Mutex
	perSec   map[int]int
	last     map[string]time.Time
	maxGap   time.Duration
	gapKey   string
	reads    int
	readKeys map[string]bool
}

func newReadCounter(s store.Store) *readCounter {
	return &readCounter{Store: s, start: time.Now(), perSec: map[int]int{}, last: map[string]time.Time{}, readKeys: map[string]bool{}}
}

func (r *readCounter) Get(ctx context.Context, key string) (store.Item, error) {
	now := time.Now()
	r.mu.Lock()
	r.perSec[int(now.Sub(r.start)/time.Second)]++
	r.reads++
	if at, ok := r.last[key]; ok {
		if gap := now.Sub(at); gap > r.maxGap {
			r.maxGap, r.gapKey = gap, key
		}
	}
	r.last[key] = now
	r.mu.Unlock()
	return r.Store.Get(ctx, key)
}

// Issue #14: n copies loaded in the same instant (a process starting with
// n apps) all became due for a re-read Reread later, and again every
// Reread: a burst of n store reads in one second. Each key now re-reads at
// its own phase of the Reread cycle, so the store sees about n/Reread reads
// a second, and no copy goes longer than Reread without one.
func TestRereadsAreSpreadOverTheCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n    = 10000
			span = 5 * time.Minute
		)
		base := store.NewMemory()
		exp := time.Now().Add(2 * time.Hour)
		key := func(i int) string { return fmt.Sprintf("{wx%05d}:access_token", i) }
		for i := range n {
			if err := base.Set(t.Context(), key(i), store.Item{Value: fmt.Sprintf("token-%d", i), ExpiresAt: exp}); err != nil {
				t.Fatal(err)
			}
		}
		rc := newReadCounter(base)
		g := &granter{ttl: 2 * time.Hour}
		keepers := make([]*credential.Keeper, n)
		for i := range keepers {
			keepers[i] = keeper(t, rc, g, func(c *credential.Config) { c.Key = key(i) })
		}
		for _, k := range keepers {
			if _, err := k.Get(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		// A busy server asks for every credential each second.
		for range int(span / time.Second) {
			time.Sleep(time.Second)
			for _, k := range keepers {
				if _, err := k.Get(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			synctest.Wait()
		}
		if got := g.n.Load(); got != 0 {
			t.Fatalf("%d grants; every credential was in the store", got)
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		busiest, at := 0, 0
		for s, c := range rc.perSec {
			if s >= 1 && c > busiest { // second 0 is the cold start's own loads
				busiest, at = c, s
			}
		}
		reread := credential.DefaultReread
		even := float64(n) / reread.Seconds()
		steady := rc.reads - rc.perSec[0]
		t.Logf("%d copies loaded in the same instant, asked for every second for %v: %d re-reads (%.1f/s; n/Reread = %.1f/s), at most %d in one second (second %d, %.1f× n/Reread), longest gap between two reads of a key %v",
			n, span, steady, float64(steady)/span.Seconds(), even, busiest, at, float64(busiest)/even, rc.maxGap)
		if limit := int(5 * even); busiest > limit {
			t.Errorf("%d store reads in second %d; want at most %d (5 × n/Reread)", busiest, at, limit)
		}
		if rc.maxGap > reread+time.Second {
			t.Errorf("%s went %v without a re-read; want at most Reread (%v) and the second until the next call", rc.gapKey, rc.maxGap, reread)
		}
		for i := range n {
			if rc.last[key(i)].Before(rc.start.Add(span - reread - time.Second)) {
				t.Fatalf("%s was last read at %v; want a read in every Reread", key(i), rc.last[key(i)].Sub(rc.start))
			}
		}
	})
}
