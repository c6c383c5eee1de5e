package pgstore

import (
	"context"
	"testing"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// Round trips to a local server: the numbers are mostly network and
// PostgreSQL, the allocations mostly pgx.

func benchStore(b *testing.B, opts ...Option) store.Store {
	b.Helper()
	s := newStore(b, newPool(b), append([]Option{WithTable(freshTable())}, opts...)...)
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkStore measures Get, Set and Lock+Unlock, one statement each.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return benchStore(b) })
}

// BenchmarkNotify is BenchmarkStore with WithNotify: each Set's statement
// also sends a NOTIFY (Get and Lock+Unlock are unchanged, for comparison).
func BenchmarkNotify(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return benchStore(b, WithNotify()) })
}
