package boltstore

import (
	"path/filepath"
	"testing"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// TestConformance runs the store contract suite. Each store is a fresh file;
// its peer is a second Store from New over the same *bbolt.DB (the way many
// Confs in one process share one DB), so leases, newer-wins and watches are
// proven across Stores. The broken store has been closed.
func TestConformance(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) store.Store { return open(t) },
		storetest.WithPeer(func(t *testing.T, s store.Store) store.Store {
			bs := s.(*Store)
			peer, err := New(bs.DB(), WithBucket(string(bs.bucket)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { peer.Close() })
			return peer
		}),
		storetest.WithBroken(func(t *testing.T) store.Store {
			s, err := Open(filepath.Join(t.TempDir(), "broken.db"))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			return s
		}),
		storetest.WithRawWriter(func(t *testing.T, s store.Store, key string, raw []byte) {
			putRaw(t, s.(*Store), itemsBucket, key, raw)
		}),
		storetest.WithMalformed(malformedItems...),
	)
}
