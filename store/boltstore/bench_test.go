package boltstore

import (
	"testing"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// BenchmarkStore measures Get, Set and Lock+Unlock on a fresh file. The
// numbers include bbolt's fsync on every Update (Set, Lock, Unlock), as a
// real deployment pays it.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b) })
}
