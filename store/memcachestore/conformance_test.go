package memcachestore_test

import (
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/wechatconf/wechatconf/internal/record/recordtest"
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

	client := func(t *testing.T, addr string) *memcache.Client {
		c := memcache.New(addr)
		c.Timeout = 5 * time.Second
		t.Cleanup(func() { c.Close() })
		return c
	}
	storetest.Run(t,
		func(t *testing.T) store.Store {
			return memcachestore.MustNew(t, client(t, srv.Addr), memcachestore.WithPrefix(uniquePrefix(t)))
		},
		storetest.WithPeer(func(t *testing.T, s store.Store) store.Store {
			return memcachestore.MustNew(t, client(t, srv.Addr), memcachestore.WithPrefix(memcachestore.Prefix(s.(*memcachestore.Store))))
		}),
		storetest.WithBroken(func(t *testing.T) store.Store {
			return memcachestore.MustNew(t, client(t, down.Addr), memcachestore.WithPrefix(uniquePrefix(t)))
		}),
		storetest.WithGranularity(time.Second),
		storetest.WithRawWriter(func(t *testing.T, s store.Store, key string, raw []byte) {
			c := client(t, srv.Addr)
			full := memcachestore.Prefix(s.(*memcachestore.Store)) + key
			if err := c.Set(&memcache.Item{Key: full, Value: raw, Expiration: 3600}); err != nil {
				t.Fatalf("raw set %q: %v", full, err)
			}
		}),
		storetest.WithMalformed(malformed()...),
	)
}

// malformed is recordtest.Malformed as storetest.WithMalformed takes it.
func malformed() [][]byte {
	var raws [][]byte
	for _, rec := range recordtest.Malformed {
		raws = append(raws, []byte(rec))
	}
	return raws
}
