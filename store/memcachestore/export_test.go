package memcachestore

import (
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
)

// SetBeforeWrite makes s run f between each gets and the add or cas that
// follows, so that tests can step in as a concurrent writer would.
func SetBeforeWrite(s *Store, f func()) { s.beforeWrite = f }

// Expiration exposes expiration to tests.
var Expiration = expiration

// Prefix returns the key prefix s was made with, so that tests can open a
// second Store (another node) on the same key space.
func Prefix(s *Store) string { return s.prefix }

// MustNew is New for tests: it fails tb when New refuses.
func MustNew(tb testing.TB, c *memcache.Client, opts ...Option) *Store {
	tb.Helper()
	s, err := New(c, opts...)
	if err != nil {
		tb.Fatalf("memcachestore.New: %v", err)
	}
	return s
}
