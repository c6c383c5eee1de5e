package memcachestore_test

import (
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/memcachestore"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// TestConformance runs the store contract suite against a real memcached:
// every store gets a fresh prefix, its peer is a second client on the same
// prefix (another node), and the broken store's server has been killed.
// Expiry is honoured to the second.
func TestConformance(t *testing.T) {
	srv := testserver.Memcached(t)
	down := testserver.Memcached(t)
	down.Stop()

	var (
		mu       sync.Mutex
		prefixes = map[store.Store]string{}
	)
	client := func(t *testing.T, addr string) *memcache.Client {
		c := memcache.New(addr)
		c.Timeout = 5 * time.Second
		t.Cleanup(func() { c.Close() })
		return c
	}
	newStore := func(t *testing.T) store.Store {
		p := uniquePrefix(t)
		s := memcachestore.New(client(t, srv.Addr), memcachestore.WithPrefix(p))
		mu.Lock()
		prefixes[s] = p
		mu.Unlock()
		return s
	}
	peer := func(t *testing.T, s store.Store) store.Store {
		mu.Lock()
		p, ok := prefixes[s]
		mu.Unlock()
		if !ok {
			t.Fatal("peer asked for a store newStore did not make")
		}
		return memcachestore.New(client(t, srv.Addr), memcachestore.WithPrefix(p))
	}
	broken := func(t *testing.T) store.Store {
		return memcachestore.New(client(t, down.Addr), memcachestore.WithPrefix(uniquePrefix(t)))
	}
	storetest.Run(t, newStore, storetest.WithPeer(peer), storetest.WithBroken(broken), storetest.WithGranularity(time.Second))
}
