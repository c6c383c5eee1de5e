package memcachestore_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
)

// TestOpen checks memcache://, which importing memcachestore registers with
// store.Open, against a real server.
func TestOpen(t *testing.T) {
	srv := testserver.Memcached(t)
	ctx := t.Context()
	s, err := store.Open(ctx, "memcache://"+srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key); err != nil || got.Value != "v" {
		t.Fatalf("Get: %v, %v", got, err)
	}
	c := s.(io.Closer)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for raw, want := range map[string]string{
		"memcache://u:S3CRETPW@h:1": "no user or password",
		"memcache://":               "want memcache://HOST:PORT",
		"memcache://h:1,h2:x":       "not a URL",
		"memcache://h:1,:2":         `server ":2" is not HOST:PORT`,
		"memcache://h:1/x":          "nothing more",
	} {
		_, err := store.Open(ctx, raw)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "S3CRETPW") {
			t.Errorf("store.Open: %v, want an error saying %q and no password", err, want)
		}
	}
}
