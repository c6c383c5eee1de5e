// Package conformance runs storetest.Run, the store contract, against every
// backend on a real server: Redis, Memcached and PostgreSQL in containers
// from the configured images, bbolt on disk.
package conformance

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"

	"github.com/wechatconf/wechatconf/integration/backends"
	"github.com/wechatconf/wechatconf/internal/record/recordtest"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/boltstore"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// TestStoreContract starts each backend once and runs the whole contract on
// it. Every store storetest asks for gets a fresh namespace and a client of
// its own; its peer is another client on the same namespace (another node),
// so leases, newer-wins and watches are proven across connections to the
// real server. The broken store's server is gone.
func TestStoreContract(t *testing.T) {
	for _, k := range backends.All() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			d := backends.Start(t, k)
			var (
				seq       atomic.Int64
				namespace sync.Map // store.Store -> its namespace
			)
			storetest.Run(t,
				func(t *testing.T) store.Store {
					ns := fmt.Sprintf("conf%d:", seq.Add(1))
					s := d.Open(t, ns)
					namespace.Store(s, ns)
					return s
				},
				storetest.WithPeer(func(t *testing.T, s store.Store) store.Store {
					ns, ok := namespace.Load(s)
					if !ok {
						t.Fatalf("peer asked for a store that newStore did not make: %T", s)
					}
					return d.Open(t, ns.(string))
				}),
				storetest.WithBroken(func(t *testing.T) store.Store { return d.Broken(t) }),
				storetest.WithGranularity(k.Granularity()),
				storetest.WithRawWriter(func(t *testing.T, s store.Store, key string, raw []byte) {
					ns, ok := namespace.Load(s)
					if !ok {
						t.Fatalf("raw writer asked for a store that newStore did not make: %T", s)
					}
					writeRaw(t, d, s, ns.(string), key, raw)
				}),
				storetest.WithMalformed(malformed(k)...),
			)
		})
	}
}

// malformed returns records that the backend of kind k cannot decode, in
// the form writeRaw takes: internal/record records for Redis and
// Memcached, expires_at literals for PostgreSQL, short item records for
// bbolt (whose header is 12 bytes).
func malformed(k backends.Kind) [][]byte {
	switch k {
	case backends.Postgres:
		return [][]byte{[]byte("infinity"), []byte("-infinity")}
	case backends.Bolt:
		return storetest.DefaultMalformed
	}
	var raws [][]byte
	for _, rec := range recordtest.Malformed {
		raws = append(raws, []byte(rec))
	}
	return raws
}

// writeRaw puts raw under key in namespace, behind the store's back: as
// the record itself for Redis, Memcached and bbolt, as the expires_at
// literal of a row (valued POISON) for PostgreSQL.
func writeRaw(t *testing.T, d *backends.Deployment, s store.Store, ns, key string, raw []byte) {
	t.Helper()
	ctx := t.Context()
	var err error
	switch d.Kind {
	case backends.Redis:
		c := redis.NewClient(&redis.Options{Addr: d.Target})
		defer c.Close()
		err = c.Set(ctx, ns+key, raw, time.Hour).Err()
	case backends.Memcached:
		c := memcache.New(d.Target)
		c.Timeout = 3 * time.Second
		defer c.Close()
		err = c.Set(&memcache.Item{Key: ns + key, Value: raw, Expiration: 3600})
	case backends.Postgres:
		var pool *pgxpool.Pool
		if pool, err = pgxpool.New(ctx, d.Target); err == nil {
			defer pool.Close()
			_, err = pool.Exec(ctx, `INSERT INTO wechatconf_it (key, value, expires_at) VALUES ($1, 'POISON', $2::timestamptz)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`, ns+key, string(raw))
		}
	case backends.Bolt:
		// boltstore keeps items in the "items" bucket nested in the
		// store's bucket (backends names it "wechatconf:"+namespace).
		err = s.(*boltstore.Store).DB().Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("wechatconf:" + ns))
			if b == nil || b.Bucket([]byte("items")) == nil {
				return fmt.Errorf("no items bucket for namespace %q", ns)
			}
			return b.Bucket([]byte("items")).Put([]byte(key), raw)
		})
	default:
		t.Fatalf("writeRaw: unknown backend %q", d.Kind)
	}
	if err != nil {
		t.Fatalf("raw write of %q under %q on %s: %v", key, ns, d.Kind, err)
	}
}
