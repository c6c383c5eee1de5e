package redisstore_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

// TestOpen checks the URL forms that importing redisstore registers with
// store.Open, against real servers: single, cluster and sentinel.
func TestOpen(t *testing.T) {
	srv := testserver.Redis(t)
	urls := map[string]string{"single": "redis://" + srv.Addr + "/0"}
	if testing.Short() {
		t.Log("-short: cluster and sentinel URLs are not opened")
	} else {
		cl := testserver.RedisCluster(t)
		urls["cluster"] = "redis+cluster://" + cl.Nodes[0].Addr + "?addr=" + cl.Nodes[1].Addr
		sn := testserver.RedisSentinel(t)
		urls["sentinel"] = "redis+sentinel://" + sn.Sentinels[0].Addr + "?master_name=" + sn.MasterName
	}
	for name, raw := range urls {
		t.Run(name, func(t *testing.T) {
			openRoundTrip(t, raw)
		})
	}
}

func openRoundTrip(t *testing.T, raw string) {
	t.Helper()
	ctx := t.Context()
	s, err := store.Open(ctx, raw)
	if err != nil {
		t.Fatalf("store.Open(%s): %v", raw, err)
	}
	k := "{open" + strings.ReplaceAll(t.Name(), "/", ".") + "}:access_token"
	item := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(ctx, k, item); err != nil {
		t.Fatalf("Set through an opened store: %v", err)
	}
	if got, err := s.Get(ctx, k); err != nil || got.Value != "v" {
		t.Fatalf("Get through an opened store: %v, %v", got, err)
	}
	c, ok := s.(io.Closer)
	if !ok {
		t.Fatal("an opened store is no io.Closer: nothing would close its client")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Get(ctx, k); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	const pw = "S3CRETPW"
	for raw, want := range map[string]string{
		"redis:opaque": "want redis://",
		"redis+sentinel://u:" + pw + "@h:1?password=" + pw:       "master_name",
		"redis+sentinel://h:1?master_name=m&route_randomly=true": "route_randomly",
		"redis://u:" + pw + "@h:1/0?nosuch=" + pw:                "invalid URL",
		"rediss+cluster://h:1?dial_timeout=x&password=" + pw:     "invalid URL",
	} {
		_, err := store.Open(t.Context(), raw)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "redisstore") {
			t.Errorf("store.Open: %v, want a redisstore error saying %q", err, want)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("store.Open error reveals the password: %v", err)
		}
	}
}

func TestNewRefusesNilClient(t *testing.T) {
	for name, c := range map[string]redis.UniversalClient{
		"nil":                nil,
		"nil *redis.Client":  (*redis.Client)(nil),
		"nil *ClusterClient": (*redis.ClusterClient)(nil),
	} {
		if _, err := redisstore.New(c); err == nil || !strings.HasPrefix(err.Error(), "redisstore: ") {
			t.Errorf("New(%s): %v, want an error naming redisstore", name, err)
		}
	}
}
