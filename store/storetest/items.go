package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Item group: what Get returns after Set, a miss, expiry, the keys
// package conf uses, and the lease living apart from the item.

func testRoundTrip(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	want := store.Item{Value: tokenValue("round-trip"), ExpiresAt: time.Now().Add(2*time.Hour + 123456789)}
	mustSet(t, s, keyToken, want)
	for name, h := range map[string]store.Store{"the same handle": s, "the peer": peer} {
		got := mustGet(t, h, keyToken)
		if !sameItem(got, want) {
			t.Errorf("round trip: Get on %s returned %s after Set(%s); want the same value and ExpiresAt to the millisecond",
				name, show(got), show(want))
		}
		if !got.Fresh(time.Now(), 0) {
			t.Errorf("round trip: Get on %s returned %s, not fresh, for an item two hours from expiry", name, show(got))
		}
	}
}

func testNotFound(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	for _, key := range []string{keyToken, keyTicket} {
		for name, h := range map[string]store.Store{"the store": s, "the peer": peer} {
			got, err := h.Get(t.Context(), key)
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("ErrNotFound: Get(%q) on %s of an empty namespace: want ErrNotFound (errors.Is), got item %s, error %v",
					key, name, show(got), err)
			}
		}
	}
}

func testExpiry(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	g := r.g()
	ctx := t.Context()

	start := time.Now()
	short := store.Item{Value: tokenValue("short-lived"), ExpiresAt: start.Add(3 * g)}
	mustSet(t, s, keyToken, short)
	got, err := s.Get(ctx, keyToken)
	if elapsed := time.Since(start); elapsed < g {
		if err != nil || !sameItem(got, short) {
			t.Errorf("expiry: Get %v after Set of an item that expires in %v: want it back, got %s, error %v",
				elapsed.Round(time.Millisecond), 3*g, show(got), err)
		}
	} else {
		t.Logf("storetest: Set+Get took %v, too slow to check that an item is kept until it expires", elapsed)
	}

	// An item that expired before it was set is accepted and never fresh.
	past := store.Item{Value: tokenValue("already-expired"), ExpiresAt: start.Add(-time.Minute)}
	if err := s.Set(ctx, keyTicket, past); err != nil {
		t.Errorf("expiry: Set of an item that has already expired: want nil (expired items may be dropped), got %v", err)
	}

	time.Sleep(time.Until(short.ExpiresAt.Add(g)))
	for _, key := range []string{keyToken, keyTicket} {
		for name, h := range map[string]store.Store{"the store": s, "the peer": peer} {
			got, err := h.Get(ctx, key)
			switch {
			case err == nil && got.Fresh(time.Now(), 0):
				t.Errorf("expiry: Get(%q) on %s returned %s as fresh after its ExpiresAt passed; want ErrNotFound or an item that is not Fresh",
					key, name, show(got))
			case err != nil && !errors.Is(err, store.ErrNotFound):
				t.Errorf("expiry: Get(%q) on %s of an expired item: want ErrNotFound or the stale item, got error %v", key, name, err)
			}
		}
	}

	// An expired item does not stand in the way of the next one.
	next := store.Item{Value: tokenValue("after-expiry"), ExpiresAt: time.Now().Add(time.Hour)}
	mustSet(t, peer, keyToken, next)
	if got := mustGet(t, s, keyToken); !sameItem(got, next) {
		t.Errorf("expiry: after the old item expired, Set(%s) then Get returned %s", show(next), show(got))
	}
}

func testKeys(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	keys := []string{keyToken, keyTicket, keyCard, keyOther, keyBare}
	base := time.Now().Add(time.Hour)
	items := make(map[string]store.Item, len(keys))
	for i, key := range keys {
		items[key] = store.Item{Value: tokenValue(fmt.Sprintf("key-%d", i)), ExpiresAt: base.Add(time.Duration(i) * time.Minute)}
		mustSet(t, handle(i, s, peer), key, items[key])
	}
	for i, key := range keys {
		if got := mustGet(t, handle(i+1, s, peer), key); !sameItem(got, items[key]) {
			t.Errorf("independent keys: Get(%q) returned %s; want %s, the item set under that key", key, show(got), show(items[key]))
		}
	}
}

func testLeaseBesideItem(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ctx := t.Context()
	long := r.long()

	// A lease alone is not an item.
	l := mustLock(t, s, keyTicket, long, "on a free key")
	if got, err := peer.Get(ctx, keyTicket); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lease beside item: Get(%q) of a key that has only a lease: want ErrNotFound, got %s, error %v", keyTicket, show(got), err)
	}
	mustUnlock(t, l, "of a live lease")

	// A lease does not disturb the item, nor the item the lease.
	item := store.Item{Value: tokenValue("beside"), ExpiresAt: time.Now().Add(time.Hour)}
	mustSet(t, s, keyToken, item)
	l = mustLock(t, s, keyToken, long, "on a key that holds an item")
	if got := mustGet(t, peer, keyToken); !sameItem(got, item) {
		t.Errorf("lease beside item: Lock(%q) changed the item: Get returned %s; want %s", keyToken, show(got), show(item))
	}
	newer := store.Item{Value: tokenValue("beside-newer"), ExpiresAt: item.ExpiresAt.Add(time.Hour)}
	mustSet(t, peer, keyToken, newer)
	r.wantLocked(t, peer, keyToken, "lease beside item: a Set under the leased key must not release the lease")
	mustUnlock(t, l, "of a live lease")
	if got := mustGet(t, s, keyToken); !sameItem(got, newer) {
		t.Errorf("lease beside item: Unlock(%q) changed the item: Get returned %s; want %s", keyToken, show(got), show(newer))
	}
}
