package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// benchValue is as long as a real access token today (136 bytes), so that
// encoding and the wire carry a realistic load.
const benchValue = "93_BENCHMARKtokenAbCdEfGhIjKlMnOpQrStUvWxYz0123456789-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-AbCdEfGh"

// Bench measures the three calls package conf makes of a store, as
// sub-benchmarks of b, in this order: Get (of an item that is there), Set
// (each one newer than the last, so each one writes) and LockUnlock (Lock of
// a free key, then Unlock). It gives a backend's benchmarks in one line, the way Run
// gives its tests:
//
//	func BenchmarkStore(b *testing.B) {
//		storetest.Bench(b, func(b *testing.B) store.Store { return newStoreOnFreshPrefix(b) })
//	}
//
// newStore is called once per sub-benchmark, with its b (for b.Cleanup, or
// b.Skip when the server is missing), and must return a store over a fresh,
// empty namespace, as for Run. The numbers include whatever round trips and
// fsyncs the backend pays. Bench checks just enough to know it measured the
// path it names: an error fails the benchmark, and so does a Get that
// returns another item, a Set run that did not leave its newest item stored,
// or an Unlock that did not release the lease.
func Bench(b *testing.B, newStore func(b *testing.B) store.Store) {
	b.Helper()
	if newStore == nil {
		b.Fatal("storetest.Bench: newStore is nil")
	}
	open := func(b *testing.B) store.Store {
		b.Helper()
		s := newStore(b)
		if s == nil {
			b.Fatal("storetest: newStore returned a nil Store")
		}
		return s
	}
	b.Run("Get", func(b *testing.B) { benchGet(b, open(b)) })
	b.Run("Set", func(b *testing.B) { benchSet(b, open(b)) })
	b.Run("LockUnlock", func(b *testing.B) { benchLockUnlock(b, open(b)) })
}

func benchGet(b *testing.B, s store.Store) {
	ctx := b.Context()
	want := store.Item{Value: benchValue, ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(ctx, keyToken, want); err != nil {
		b.Fatalf("Set(%q) before measuring Get: %v", keyToken, err)
	}
	b.ReportAllocs()
	var got store.Item
	for b.Loop() {
		var err error
		if got, err = s.Get(ctx, keyToken); err != nil {
			b.Fatalf("Get(%q) of a stored item: %v", keyToken, err)
		}
	}
	if got.Value != want.Value {
		b.Fatalf("Get(%q) returned a value of %d bytes, want the %d bytes set", keyToken, len(got.Value), len(want.Value))
	}
}

func benchSet(b *testing.B, s store.Store) {
	ctx := b.Context()
	// A millisecond apart: every backend keeps at least that precision,
	// so each Set is strictly newer and writes.
	it := store.Item{Value: benchValue, ExpiresAt: time.Now().Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		it.ExpiresAt = it.ExpiresAt.Add(time.Millisecond)
		if err := s.Set(ctx, keyToken, it); err != nil {
			b.Fatalf("Set(%q) of a newer item: %v", keyToken, err)
		}
	}
	got, err := s.Get(ctx, keyToken)
	if err != nil {
		b.Fatalf("Get(%q) after the Sets: %v", keyToken, err)
	}
	if !sameItem(got, it) {
		b.Fatalf("after Sets of ever newer items, Get(%q) returned one expiring %s, want the last, expiring %s (did the Sets write?)",
			keyToken, got.ExpiresAt.Format(time.RFC3339Nano), it.ExpiresAt.Format(time.RFC3339Nano))
	}
}

func benchLockUnlock(b *testing.B, s store.Store) {
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.Lock(ctx, keyToken, time.Minute)
		if err != nil {
			if errors.Is(err, store.ErrLocked) {
				b.Fatalf("Lock(%q) after the previous holder's Unlock: %v (Unlock did not release)", keyToken, err)
			}
			b.Fatalf("Lock(%q) of a free key: %v", keyToken, err)
		}
		if l == nil {
			b.Fatalf("Lock(%q) returned a nil Lease and a nil error", keyToken)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatalf("Unlock of a live lease: %v", err)
		}
	}
}
