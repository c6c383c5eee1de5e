package memcachestore_test

import (
	"testing"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// BenchmarkStore measures Get (one get), a winning Set (gets, compare, cas)
// and Lock+Unlock (add, then gets and cas) against a local server.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		_, _, s, _ := newStore(b)
		return s
	})
}
