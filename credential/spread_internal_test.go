package credential

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// Issue #14: the grant schedule of n credentials granted in the same
// instant, cycle after cycle, computed from the engine's own refresh points
// (staleAt) with WeChat's 7200 s tokens: each is re-granted at the first
// call (one a second) at or after its refresh point, and the new token's
// value, random as WeChat's, picks the next point. TestRefreshSpread runs
// the first cycle through real Keepers; this follows the spread further.
func TestGrantScheduleSpreadsOverCycles(t *testing.T) {
	const (
		n      = 10000
		ttl    = 7200 * time.Second
		cycles = 6
	)
	k, err := New(Config{Name: "access_token", Key: "{app}:access_token", Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	value := func() string {
		b := make([]byte, 48)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	granted := make([]time.Time, n)
	items := make([]store.Item, n)
	for i := range items {
		granted[i] = t0
		items[i] = store.Item{Value: value(), ExpiresAt: t0.Add(ttl)}
	}
	for c := 1; c <= cycles; c++ {
		perSec := map[int64]int{}
		for i, it := range items {
			at := k.staleAt(it)
			if at.Before(granted[i].Add(ttl / 2)) {
				t.Fatalf("refresh point %v less than half a life after the grant", at.Sub(granted[i]))
			}
			if sec := at.Truncate(time.Second); sec.Before(at) {
				at = sec.Add(time.Second) // the next call
			}
			granted[i] = at
			items[i] = store.Item{Value: value(), ExpiresAt: at.Add(ttl)}
			perSec[at.Unix()]++
		}
		secs := make([]int64, 0, len(perSec))
		busiest := 0
		for s, c := range perSec {
			secs = append(secs, s)
			busiest = max(busiest, c)
		}
		slices.Sort(secs)
		span := time.Duration(secs[len(secs)-1]-secs[0]) * time.Second
		t.Logf("cycle %d: %d grants over %v, in %d distinct seconds, at most %d in one second (%.1f%% of n)",
			c, n, span, len(secs), busiest, 100*float64(busiest)/n)
		if busiest > n/20 {
			t.Errorf("cycle %d: %d grants in one second; want at most n/20", c, busiest)
		}
	}
}
