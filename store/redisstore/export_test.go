package redisstore

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// Prefix returns the key prefix s was made with, so that tests can open a
// second Store (another node) on the same key space.
func Prefix(s *Store) string { return s.prefix }

// MustNew is New for tests: it fails tb when New refuses.
func MustNew(tb testing.TB, c redis.UniversalClient, opts ...Option) *Store {
	tb.Helper()
	s, err := New(c, opts...)
	if err != nil {
		tb.Fatalf("redisstore.New: %v", err)
	}
	return s
}
