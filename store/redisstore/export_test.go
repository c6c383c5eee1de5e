package redisstore

// Prefix returns the key prefix s was made with, so that tests can open a
// second Store (another node) on the same key space.
func Prefix(s *Store) string { return s.prefix }
