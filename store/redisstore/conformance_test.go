package redisstore_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/record/recordtest"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// TestConformance runs the store contract suite against a real Redis server:
// every store gets a fresh prefix, its peer is a second client on the same
// prefix (another node), and the broken store's server has been killed.
func TestConformance(t *testing.T) {
	srv := testserver.Redis(t)
	down := testserver.Redis(t)
	down.Stop()

	client := func(t *testing.T, addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}
	storetest.Run(t,
		func(t *testing.T) store.Store {
			return redisstore.MustNew(t, client(t, srv.Addr), redisstore.WithPrefix(uniquePrefix(t)))
		},
		storetest.WithPeer(func(t *testing.T, s store.Store) store.Store {
			return redisstore.MustNew(t, client(t, srv.Addr), redisstore.WithPrefix(redisstore.Prefix(s.(*redisstore.Store))))
		}),
		storetest.WithBroken(func(t *testing.T) store.Store {
			return redisstore.MustNew(t, client(t, down.Addr), redisstore.WithPrefix(uniquePrefix(t)))
		}),
		storetest.WithRawWriter(func(t *testing.T, s store.Store, key string, raw []byte) {
			full := redisstore.Prefix(s.(*redisstore.Store)) + key
			if err := client(t, srv.Addr).Set(t.Context(), full, raw, time.Hour).Err(); err != nil {
				t.Fatalf("raw SET %q: %v", full, err)
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
