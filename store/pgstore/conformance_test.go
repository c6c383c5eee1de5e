package pgstore

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// TestConformance runs the store contract suite against the shared server.
// Each store gets a fresh prefix on one table for the run; its peer is a
// Store over a second pool (another node) on the same table and prefix. The
// broken store's pool points at a port where no server listens.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"Notify", []Option{WithNotify()}},
		{"ExplicitMigrate", []Option{WithNotify(), WithoutAutoMigrate()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, peerPool := newPool(t), newPool(t)
			table := freshTable()
			setup := newStore(t, pool, WithTable(table))
			if err := setup.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			var seq atomic.Int64
			with := func(extra ...Option) []Option {
				return append(append([]Option{WithTable(table)}, tc.opts...), extra...)
			}
			storetest.Run(t,
				func(t *testing.T) store.Store {
					return newStore(t, pool, with(WithPrefix(fmt.Sprintf("run%d:", seq.Add(1))))...)
				},
				storetest.WithPeer(func(t *testing.T, s store.Store) store.Store {
					return newStore(t, peerPool, with(WithPrefix(s.(*Store).prefix))...)
				}),
				storetest.WithBroken(func(t *testing.T) store.Store {
					// Port 1 on loopback: nothing listens, connect is refused.
					return newStore(t, poolFor(t, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5"), with()...)
				}),
			)
		})
	}
}
