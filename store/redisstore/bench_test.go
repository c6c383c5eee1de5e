package redisstore_test

import (
	"testing"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// BenchmarkStore measures Get (one GET), Set (one Lua script) and
// Lock+Unlock (SET NX PX, then a Lua script) against a local server.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store {
		_, _, s, _ := newStore(b)
		return s
	})
}
