package pgstore

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
				// A row is no bytes: the raw record is the expires_at
				// literal of a row whose value is POISON.
				storetest.WithRawWriter(func(t *testing.T, s store.Store, key string, raw []byte) {
					putRow(t, pool, s.(*Store), key, "POISON", string(raw))
				}),
				storetest.WithMalformed([]byte("infinity"), []byte("-infinity")),
			)
		})
	}
}

// putRow writes a row under key in s's items table behind the store's
// back, its expires_at given as a PostgreSQL literal ('infinity' works).
func putRow(t *testing.T, pool *pgxpool.Pool, s *Store, key, value, expiresAt string) {
	t.Helper()
	q := `INSERT INTO ` + pgx.Identifier{s.table}.Sanitize() + ` (key, value, expires_at) VALUES ($1, $2, $3::timestamptz)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`
	if _, err := pool.Exec(t.Context(), q, s.prefix+key, value, expiresAt); err != nil {
		t.Fatalf("raw row %q: %v", key, err)
	}
}
