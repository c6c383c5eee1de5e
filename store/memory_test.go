package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return store.NewMemory() })
}

// TestMemoryConformancePeer runs the suite with the store as its own peer:
// in one process, one Memory is every node.
func TestMemoryConformancePeer(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return store.NewMemory() },
		storetest.WithPeer(func(_ *testing.T, s store.Store) store.Store { return s }),
		storetest.WithGranularity(20*time.Millisecond))
}

func item(value string, expiresIn time.Duration) store.Item {
	return store.Item{Value: value, ExpiresAt: time.Now().Add(expiresIn)}
}

func TestMemoryNewerWins(t *testing.T) {
	ctx := t.Context()
	m := store.NewMemory()
	older, newer := item("older", time.Hour), item("newer", 2*time.Hour)
	for _, step := range []struct {
		set  store.Item
		want store.Item
	}{
		{older, older},
		{newer, newer},
		{older, newer}, // loses
		{store.Item{Value: "same-expiry", ExpiresAt: newer.ExpiresAt}, store.Item{Value: "same-expiry", ExpiresAt: newer.ExpiresAt}},
	} {
		if err := m.Set(ctx, "k", step.set); err != nil {
			t.Fatalf("Set(%v): %v", step.set, err)
		}
		got, err := m.Get(ctx, "k")
		if err != nil || got != step.want {
			t.Fatalf("after Set(%q): Get = %q, %v; want %q", step.set.Value, got.Value, err, step.want.Value)
		}
	}
}

// TestMemoryImplausibleReplaced: an item set with an expiry no WeChat
// credential has (a node whose clock ran decades ahead) does not hold the
// key by newer-wins: the next normal Set replaces it, whatever its expiry.
func TestMemoryImplausibleReplaced(t *testing.T) {
	for _, exp := range []time.Time{
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now().Add(store.MaxLifetime + store.ClockSlack + time.Minute),
	} {
		m := store.NewMemory()
		if err := m.Set(t.Context(), "k", store.Item{Value: "POISON", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		good := store.Item{Value: "good", ExpiresAt: time.Now().Add(2 * time.Hour)}
		if err := m.Set(t.Context(), "k", good); err != nil {
			t.Fatal(err)
		}
		if got, err := m.Get(t.Context(), "k"); err != nil || got != good {
			t.Errorf("after POISON expiring %v then %v: Get = %v, %v; want the good item", exp, good, got, err)
		}
	}
}

func TestMemoryItemExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		m := store.NewMemory()
		it := item("tok", 2*time.Hour)
		if err := m.Set(ctx, "k", it); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2*time.Hour - time.Nanosecond)
		if got, err := m.Get(ctx, "k"); err != nil || got != it {
			t.Fatalf("Get 1ns before expiry: got %v, %v; want the item", got, err)
		}
		time.Sleep(time.Nanosecond)
		if _, err := m.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get at ExpiresAt: want ErrNotFound, got %v", err)
		}
		// The expired item was dropped: an older item now goes in.
		older := store.Item{Value: "late", ExpiresAt: it.ExpiresAt.Add(-time.Minute)}
		if err := m.Set(ctx, "k", older); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get of an item set already expired: want ErrNotFound, got %v", err)
		}
	})
}

func TestMemoryLeaseExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		m := store.NewMemory()
		first, err := m.Lock(ctx, "k", 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(30*time.Second - time.Nanosecond)
		if _, err := m.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("Lock 1ns before the TTL: want ErrLocked, got %v", err)
		}
		time.Sleep(time.Nanosecond)
		second, err := m.Lock(ctx, "k", time.Minute)
		if err != nil {
			t.Fatalf("Lock at the TTL: want a lease, got %v", err)
		}
		if err := first.(store.Extender).Extend(ctx, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("Extend by the old holder: want ErrLeaseLost, got %v", err)
		}
		if err := first.Unlock(ctx); err != nil {
			t.Errorf("Unlock by the old holder: want nil, got %v", err)
		}
		if _, err := m.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Errorf("the old holder's Unlock released the new holder's lease: Lock got %v", err)
		}
		if err := second.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Lock(ctx, "k", time.Minute); err != nil {
			t.Errorf("Lock after the holder's Unlock: %v", err)
		}
	})
}

func TestMemoryLeaseExpiredNotTakenOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		m := store.NewMemory()
		l, err := m.Lock(ctx, "k", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		// Expired, though no one took it: no longer ours.
		if err := l.(store.Extender).Extend(ctx, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("Extend of an expired lease: want ErrLeaseLost, got %v", err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock of an expired lease: want nil, got %v", err)
		}
	})
}

func TestMemoryExtend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		m := store.NewMemory()
		l, err := m.Lock(ctx, "k", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ext := l.(store.Extender)
		time.Sleep(9 * time.Second)
		if err := ext.Extend(ctx, 10*time.Second); err != nil {
			t.Fatalf("Extend of a live lease: %v", err)
		}
		time.Sleep(9 * time.Second) // 18s after Lock, 9s after Extend
		if _, err := m.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("Lock 8s past the first TTL, 1s before the extended one: want ErrLocked, got %v", err)
		}
		// Extend sets the remaining time: shorter is allowed.
		if err := ext.Extend(ctx, time.Second); err != nil {
			t.Fatalf("Extend to a shorter ttl: %v", err)
		}
		time.Sleep(time.Second)
		if _, err := m.Lock(ctx, "k", time.Minute); err != nil {
			t.Fatalf("Lock after the shortened lease ran out: %v", err)
		}
	})
}

func TestMemoryLockBadTTL(t *testing.T) {
	ctx := t.Context()
	m := store.NewMemory()
	for _, ttl := range []time.Duration{0, -time.Second} {
		_, err := m.Lock(ctx, "{wx1}:access_token", ttl)
		if err == nil || errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "ttl must be positive") {
			t.Errorf("Lock with ttl %v: want an error saying the ttl must be positive, got %v", ttl, err)
		}
	}
	if _, err := m.Lock(ctx, "k", 0); err == nil || err.Error() != `store: lock "k": ttl must be positive, got 0s` {
		t.Errorf("error text: got %v", err)
	}
	l, err := m.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("a Lock with a bad ttl must not leave a lease behind: %v", err)
	}
	if err := l.(store.Extender).Extend(ctx, 0); err == nil || !strings.Contains(err.Error(), "ttl must be positive") {
		t.Errorf("Extend with ttl 0: want an error saying the ttl must be positive, got %v", err)
	}
}

func TestMemoryBadItem(t *testing.T) {
	ctx := t.Context()
	m := store.NewMemory()
	for _, c := range []struct {
		item store.Item
		want string
	}{
		{store.Item{ExpiresAt: time.Now().Add(time.Hour)}, "empty Value"},
		{store.Item{Value: "tok"}, "zero ExpiresAt"},
	} {
		err := m.Set(ctx, "k", c.item)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Set(%v): want an error containing %q, got %v", c.item, c.want, err)
		}
	}
	if _, err := m.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused item was stored: Get = %v", err)
	}
}

func TestMemoryContext(t *testing.T) {
	m := store.NewMemory()
	live := t.Context()
	l, err := m.Lock(live, "held", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set(live, "k", item("v", time.Hour)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(live)
	cancel()
	checks := map[string]error{}
	_, checks["Get"] = m.Get(ctx, "k")
	checks["Set"] = m.Set(ctx, "k", item("w", 2*time.Hour))
	_, checks["Lock"] = m.Lock(ctx, "free", time.Minute)
	_, checks["Watch"] = m.Watch(ctx, "k")
	checks["Unlock"] = l.Unlock(ctx)
	checks["Extend"] = l.(store.Extender).Extend(ctx, time.Minute)
	for op, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled ctx: want context.Canceled, got %v", op, err)
		}
	}
	// Nothing happened.
	if got, err := m.Get(live, "k"); err != nil || got.Value != "v" {
		t.Errorf("Set with a cancelled ctx stored its item: Get = %q, %v", got.Value, err)
	}
	if _, err := m.Lock(live, "held", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Errorf("Unlock with a cancelled ctx released the lease: Lock = %v", err)
	}
}

func TestMemoryWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := store.NewMemory()
		ctx, cancel := context.WithCancel(t.Context())
		ch, err := m.Watch(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		other, err := m.Watch(ctx, "other")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Set(ctx, "k", item("a", time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := m.Set(ctx, "k", item("b", 2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		// Two sets, one pending notification: coalesced, and the setter
		// did not block.
		if n := len(ch); n != 1 {
			t.Fatalf("after two Sets, %d notifications pending; want 1", n)
		}
		<-ch
		if n := len(other); n != 0 {
			t.Errorf("a Set under another key woke the watcher of %q", "other")
		}
		// A Set that loses changes nothing and wakes no one.
		if err := m.Set(ctx, "k", item("older", time.Minute)); err != nil {
			t.Fatal(err)
		}
		if n := len(ch); n != 0 {
			t.Errorf("a losing Set woke the watcher")
		}
		cancel()
		synctest.Wait()
		for _, c := range []<-chan struct{}{ch, other} {
			select {
			case _, ok := <-c:
				if ok {
					t.Error("a value arrived after cancel instead of the close")
				}
			default:
				t.Error("the channel is still open after its ctx was cancelled")
			}
		}
		// Sets after the watch ended do not panic on the closed channel.
		if err := m.Set(t.Context(), "k", item("c", 3*time.Hour)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMemoryWatchMany(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := store.NewMemory()
		const n = 8
		chans := make([]<-chan struct{}, n)
		cancels := make([]context.CancelFunc, n)
		for i := range n {
			ctx, cancel := context.WithCancel(t.Context())
			ch, err := m.Watch(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			chans[i], cancels[i] = ch, cancel
		}
		cancels[0]() // one watcher leaves; the others still hear
		synctest.Wait()
		if err := m.Set(t.Context(), "k", item("v", time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-chans[0]; ok {
			t.Error("the cancelled watcher got a value")
		}
		for i, ch := range chans[1:] {
			if len(ch) != 1 {
				t.Errorf("watcher %d was not woken", i+1)
			}
		}
		for _, c := range cancels {
			c()
		}
	})
}

func TestMemoryZeroValue(t *testing.T) {
	var m store.Memory
	ctx := t.Context()
	if _, err := m.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get on a zero Memory: want ErrNotFound, got %v", err)
	}
	it := item("v", time.Hour)
	if err := m.Set(ctx, "k", it); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get(ctx, "k"); err != nil || got != it {
		t.Errorf("Get = %v, %v; want %v", got, err, it)
	}
	l, err := m.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryLeaseOwnersDiffer(t *testing.T) {
	// Leases taken one after another on the same key are distinct owners:
	// the first's Unlock, repeated, never frees the tenth holder.
	ctx := t.Context()
	m := store.NewMemory()
	var old []store.Lease
	for range 10 {
		l, err := m.Lock(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range old {
			if err := o.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("an old lease's Unlock released the current one: Lock = %v", err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		old = append(old, l)
	}
}

func BenchmarkMemoryGet(b *testing.B) {
	ctx := context.Background()
	m := store.NewMemory()
	if err := m.Set(ctx, "{wx1}:access_token", item("tok", time.Hour)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Get(ctx, "{wx1}:access_token"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemorySet(b *testing.B) {
	ctx := context.Background()
	m := store.NewMemory()
	it := item("tok", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		it.ExpiresAt = it.ExpiresAt.Add(time.Nanosecond) // each one wins
		if err := m.Set(ctx, "{wx1}:access_token", it); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryLockUnlock(b *testing.B) {
	ctx := context.Background()
	m := store.NewMemory()
	b.ReportAllocs()
	for b.Loop() {
		l, err := m.Lock(ctx, "{wx1}:access_token", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryGetParallel(b *testing.B) {
	ctx := context.Background()
	m := store.NewMemory()
	if err := m.Set(ctx, "{wx1}:access_token", item("tok", time.Hour)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Get(ctx, "{wx1}:access_token"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
