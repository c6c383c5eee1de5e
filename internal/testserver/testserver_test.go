package testserver

import (
	"net"
	"testing"
	"time"
)

func dial(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

func TestServersStartStopStart(t *testing.T) {
	pg, dsn := Postgres(t)
	if dsn == "" {
		t.Fatal("empty dsn")
	}
	for _, s := range []*Server{Redis(t), Memcached(t), pg} {
		if err := dial(s.Addr); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		s.Stop()
		if err := dial(s.Addr); err == nil {
			t.Fatalf("%s still listening after Stop", s.name)
		}
		s.Start()
		if err := dial(s.Addr); err != nil {
			t.Fatalf("%s after restart: %v", s.name, err)
		}
	}
}

// TestRedisCluster starts a cluster, kills the master of one slot and checks
// that WaitPromotion names its replica.
func TestRedisCluster(t *testing.T) {
	c := RedisCluster(t)
	if len(c.Addrs()) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Addrs()))
	}
	m := c.Master(0, nil)
	m.Stop()
	n := c.WaitPromotion(0, m, 60*time.Second)
	if n == m || n == nil {
		t.Fatalf("promoted %v", n)
	}
}

// TestRedisSentinel starts a Sentinel setup, kills the master and waits for
// the replica's promotion.
func TestRedisSentinel(t *testing.T) {
	s := RedisSentinel(t)
	if len(s.SentinelAddrs()) != 3 {
		t.Fatalf("%d sentinels, want 3", len(s.SentinelAddrs()))
	}
	s.Master.Stop()
	s.WaitPromotion(60 * time.Second)
}
