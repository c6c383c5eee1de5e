package testserver

import (
	"net"
	"testing"
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
