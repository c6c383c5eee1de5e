package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Lease group: one holder at a time, expiry after the TTL, owner-checked
// Unlock and Extend.

func testOneOf64(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	const n = 64
	type holder struct {
		lease  store.Lease
		handle int
	}
	var (
		wg         sync.WaitGroup
		start      = make(chan struct{})
		mu         sync.Mutex
		winners    []holder
		locked     int
		unexpected []error
	)
	for i := range n {
		h := handle(i, s, peer)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), r.prompt())
			defer cancel()
			<-start
			l, err := h.Lock(ctx, keyToken, r.long())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && l == nil:
				unexpected = append(unexpected, errors.New("a nil Lease with a nil error"))
			case err == nil:
				winners = append(winners, holder{l, i})
			case errors.Is(err, store.ErrLocked):
				locked++
			case ctx.Err() != nil:
				unexpected = append(unexpected, fmt.Errorf("%w (Lock must return ErrLocked at once, not wait for the lease)", err))
			default:
				unexpected = append(unexpected, err)
			}
		})
	}
	close(start)
	wg.Wait()

	for _, err := range unexpected[:min(len(unexpected), 5)] {
		t.Errorf("lease: a contender's Lock: want a lease or ErrLocked (errors.Is), got %v", err)
	}
	if len(winners) != 1 {
		t.Errorf("lease: exactly one of %d concurrent contenders must get the lease (split across %s); %d did, %d got ErrLocked",
			n, map[bool]string{true: "two handles", false: "one handle"}[r.hasPeer()], len(winners), locked)
		for _, w := range winners {
			_ = w.lease.Unlock(t.Context())
		}
		return
	}
	if locked != n-1 {
		t.Errorf("lease: the %d contenders that did not get the lease must get ErrLocked; %d did", n-1, locked)
	}
	w := winners[0]
	r.wantLocked(t, handle(w.handle, s, peer), keyToken, "lease: while held, even the holder's own handle")
	mustUnlock(t, w.lease, "by the holder")
	other := handle(w.handle+1, s, peer)
	l := mustLock(t, other, keyToken, r.long(), "right after the holder's Unlock")
	mustUnlock(t, l, "by the holder")
}

func testExpiresAfterTTL(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ttl := 2 * r.g()
	start := time.Now()
	_ = mustLock(t, s, keyToken, ttl, "on a free key") // never unlocked: its holder "crashed"

	l, err := peer.Lock(t.Context(), keyToken, r.long())
	elapsed := time.Since(start)
	switch {
	case err == nil && elapsed < ttl-r.g():
		t.Fatalf("lease expiry: a second Lock(%q) got the lease %v after the first, whose TTL is %v; want ErrLocked: the lease must hold for its whole TTL",
			keyToken, elapsed.Round(time.Millisecond), ttl)
	case err == nil:
		t.Logf("storetest: Lock took %v, too slow to check that a %v lease is held", elapsed, ttl)
		_ = l.Unlock(t.Context())
	case !errors.Is(err, store.ErrLocked):
		t.Fatalf("lease: Lock(%q) of a held key: want ErrLocked (errors.Is), got %v", keyToken, err)
	}

	l, after := r.acquire(t, peer, keyToken, r.long(), start, start.Add(ttl))
	r.checkNotEarly(t, keyToken, ttl, after)
	r.wantLocked(t, s, keyToken, "lease: the holder that took over an expired lease must hold it")
	mustUnlock(t, l, "by the new holder")
}

func testStaleUnlockAfterTakeover(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ttl := 2 * r.g()
	start := time.Now()
	stale := mustLock(t, s, keyToken, ttl, "on a free key")
	fresh, after := r.acquire(t, peer, keyToken, r.long(), start, start.Add(ttl))
	r.checkNotEarly(t, keyToken, ttl, after)

	if err := stale.Unlock(t.Context()); err != nil {
		t.Errorf("lease: Unlock by a holder whose lease expired and was taken over: want nil (nothing of ours to release), got %v", err)
	}
	r.wantLocked(t, s, keyToken, "lease: Unlock by a stale holder must not release the new holder's lease")
	mustUnlock(t, fresh, "by the new holder")
	l := mustLock(t, s, keyToken, r.long(), "after the new holder's Unlock")
	mustUnlock(t, l, "by the holder")
}

func testUnlockIdempotent(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	long := r.long()
	first := mustLock(t, s, keyToken, long, "on a free key")
	mustUnlock(t, first, "of a live lease")
	if err := first.Unlock(t.Context()); err != nil {
		t.Errorf("lease: a second Unlock of the same lease: want nil (Unlock is idempotent), got %v", err)
	}
	second := mustLock(t, peer, keyToken, long, "after the holder's Unlock")
	if err := first.Unlock(t.Context()); err != nil {
		t.Errorf("lease: a third Unlock of a released lease, with someone else now holding the key: want nil, got %v", err)
	}
	r.wantLocked(t, s, keyToken, "lease: an old holder's repeated Unlock must not release the next holder's lease")
	mustUnlock(t, second, "by the holder")
}

func testLeaseIndependentKeys(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	long := r.long()
	keys := []string{keyToken, keyTicket, keyOther, keyBare}
	leases := make([]store.Lease, len(keys))
	for i, key := range keys {
		leases[i] = mustLock(t, handle(i, s, peer), key, long, "on a key whose only neighbours are leased")
	}
	for i, key := range keys {
		r.wantLocked(t, handle(i+1, s, peer), key, "lease: independent keys")
	}
	mustUnlock(t, leases[0], "by the holder")
	for i, key := range keys[1:] {
		r.wantLocked(t, handle(i, s, peer), key, "lease: Unlock of one key must not release another")
	}
	for _, l := range leases[1:] {
		mustUnlock(t, l, "by the holder")
	}
}

func testExtendKeepsHeld(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	g := r.g()
	ttl := 3 * g
	// A loaded machine may spend most of the short lease between Lock and
	// Extend; then the lease may really have expired, and the check is
	// tried again on a fresh lease rather than skipped.
	const tries = 5
	var (
		start time.Time
		l     store.Lease
		ext   store.Extender
	)
	for try := 1; ; try++ {
		start = time.Now()
		l = mustLock(t, s, keyToken, ttl, "on a free key")
		var ok bool
		if ext, ok = l.(store.Extender); !ok {
			_ = l.Unlock(t.Context())
			t.Skipf("storetest: the Lease (%T) does not implement store.Extender", l)
		}
		err := ext.Extend(t.Context(), r.long())
		if err == nil {
			break
		}
		elapsed := time.Since(start)
		if elapsed < ttl-g {
			t.Fatalf("extend: Extend of a live lease: want nil, got %v", err)
		}
		if try == tries {
			t.Fatalf("extend: Lock+Extend took %v of a %v lease in each of %d tries; cannot check Extend on this machine: %v", elapsed, ttl, tries, err)
		}
		_ = l.Unlock(t.Context())
		time.Sleep(time.Until(start.Add(ttl + g)))
	}
	time.Sleep(time.Until(start.Add(ttl + g)))
	r.wantLocked(t, peer, keyToken, fmt.Sprintf("extend: Extend must keep the lease held past its original TTL of %v", ttl))
	if err := ext.Extend(t.Context(), r.long()); err != nil {
		t.Errorf("extend: a second Extend of a live, extended lease: want nil, got %v", err)
	}
	mustUnlock(t, l, "of an extended lease")
	l = mustLock(t, peer, keyToken, r.long(), "after Unlock of an extended lease")
	mustUnlock(t, l, "by the holder")
}

func testExtendAfterTakeover(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ttl := 2 * r.g()
	start := time.Now()
	stale := mustLock(t, s, keyToken, ttl, "on a free key")
	ext, ok := stale.(store.Extender)
	if !ok {
		_ = stale.Unlock(t.Context())
		t.Skipf("storetest: the Lease (%T) does not implement store.Extender", stale)
	}
	fresh, after := r.acquire(t, peer, keyToken, r.long(), start, start.Add(ttl))
	r.checkNotEarly(t, keyToken, ttl, after)
	if err := ext.Extend(t.Context(), r.long()); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("extend: Extend of a lease that expired and was taken over: want ErrLeaseLost (errors.Is), got %v", err)
	}
	r.wantLocked(t, s, keyToken, "extend: a stale holder's Extend must not take or release the new holder's lease")
	mustUnlock(t, fresh, "by the new holder")

	// A lease released by its holder is lost too.
	l := mustLock(t, s, keyTicket, r.long(), "on a free key")
	mustUnlock(t, l, "of a live lease")
	if ext, ok := l.(store.Extender); !ok {
		t.Errorf("extend: one Lease from this store implements store.Extender, another (%T) does not", l)
	} else if err := ext.Extend(t.Context(), r.long()); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("extend: Extend after Unlock: want ErrLeaseLost (errors.Is), got %v", err)
	}
	l = mustLock(t, peer, keyTicket, r.long(), "after Unlock and a failed Extend")
	mustUnlock(t, l, "by the holder")
}
