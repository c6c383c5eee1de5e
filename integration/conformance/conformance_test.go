// Package conformance runs storetest.Run, the store contract, against every
// backend on a real server: Redis, Memcached and PostgreSQL in containers
// from the configured images, bbolt on disk.
package conformance

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wechatconf/wechatconf/integration/backends"
	"github.com/wechatconf/wechatconf/store"
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
			)
		})
	}
}
