package pgstore

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// Round trips to a local server: the numbers are mostly network and
// PostgreSQL, the allocations mostly pgx.

func benchStore(b *testing.B, opts ...Option) *Store {
	b.Helper()
	s := newStore(b, newPool(b), append([]Option{WithTable(freshTable())}, opts...)...)
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	if err := s.Set(ctx, "{wx1}:access_token", store.Item{Value: "token-value-of-a-realistic-length-0123456789abcdef0123456789abcdef", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, "{wx1}:access_token"); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSet(b *testing.B, opts ...Option) {
	ctx := context.Background()
	s := benchStore(b, opts...)
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		exp = exp.Add(time.Millisecond) // newer every time: every Set writes
		if err := s.Set(ctx, "{wx1}:access_token", store.Item{Value: "token-value-of-a-realistic-length-0123456789abcdef0123456789abcdef", ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSet(b *testing.B) { benchSet(b) }

// BenchmarkSetNotify is Set with WithNotify: the statement also sends a
// NOTIFY.
func BenchmarkSetNotify(b *testing.B) { benchSet(b, WithNotify()) }

func BenchmarkLockUnlock(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.Lock(ctx, "{wx1}:access_token", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
