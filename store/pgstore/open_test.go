package pgstore

import (
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// TestOpenURL checks the forms that importing pgstore registers with
// store.Open, a URL and a key=value DSN, against the shared server: the
// Store owns the pool it made and closes it.
func TestOpenURL(t *testing.T) {
	dsn := serverDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	kv := "postgres:host=" + u.Hostname() + " port=" + u.Port() + " user=postgres dbname=postgres sslmode=disable"
	ctx := t.Context()
	for _, raw := range []string{dsn, strings.Replace(dsn, "postgres://", "postgresql://", 1), kv} {
		s, err := store.Open(ctx, raw)
		if err != nil {
			t.Fatalf("store.Open(%s): %v", raw, err)
		}
		ps := s.(*Store)
		if ps.closePool == nil || !ps.notify {
			t.Errorf("store.Open(%s): the Store does not own its pool, or has no NOTIFY", raw)
		}
		k := "open:" + raw
		if err := s.Set(ctx, k, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatalf("Set through %s: %v", raw, err)
		}
		if got, err := s.Get(ctx, k); err != nil || got.Value != "v" {
			t.Fatalf("Get through %s: %v, %v", raw, got, err)
		}
		if err := s.(io.Closer).Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, k); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Get after Close: %v, want ErrClosed", err)
		}
		if err := ps.pool.Ping(ctx); err == nil {
			t.Errorf("store.Open(%s): the pool still answers after Close", raw)
		}
	}
	for raw, want := range map[string]string{
		"postgres:":                                "want a URL",
		"postgres:host=h password='S3CRETPW":       "pgstore",
		"postgres://u:S3CRETPW@h:notaport/db":      "not a URL",
		"postgres://u:S3CRETPW@h/db?sslmode=bogus": "pgstore",
	} {
		_, err := store.Open(ctx, raw)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "S3CRETPW") {
			t.Errorf("store.Open: %v, want an error saying %q and no password", err, want)
		}
	}
}
