package redisstore

// Reloads returns how many cluster-state reloads s has asked its
// ClusterClient for, and whether s wraps a ClusterClient at all.
func Reloads(s *Store) (int64, bool) {
	c, ok := s.c.(*clusterClient)
	if !ok {
		return 0, false
	}
	return c.r.n.Load(), true
}
