package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	redisv8 "github.com/go-redis/redis/v8"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/officialaccount"
	offconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/boltstore"
	"github.com/wechatconf/wechatconf/store/memcachestore"
	"github.com/wechatconf/wechatconf/store/pgstore"
	"github.com/wechatconf/wechatconf/store/redisstore"
	"github.com/wechatconf/wechatconf/wechattest"
)

// The servers, named by environment variables that run.sh sets.
const (
	envRedis     = "WECHATCONF_BENCH_REDIS"
	envMemcached = "WECHATCONF_BENCH_MEMCACHED"
	envPostgres  = "WECHATCONF_BENCH_POSTGRES"
)

// backends are the stores every comparison walks through, in table order.
var backends = []string{"memory", "redis", "memcached", "bolt", "postgres"}

// server returns the value of env. Without it the backend is skipped, so a
// plain `go test -bench` runs the rest; under CI=true (make test, which runs
// bench/run.sh test) a missing server is a failure.
func server(tb testing.TB, env string) string {
	tb.Helper()
	v := os.Getenv(env)
	if v == "" {
		msg := fmt.Sprintf("%s is not set: no server for this backend (bench/run.sh starts one)", env)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return v
}

// app registers a fresh random AppID on a fake WeChat, so that runs sharing a
// server start from empty keys, and returns it with its secret.
func app() (appID, secret string) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "wx" + hex.EncodeToString(b[:8]), hex.EncodeToString(b[8:])
}

// cluster returns a function that opens one node's view of a store of
// backend. A networked backend gets a client of its own per node, as separate
// processes would have; the in-process ones (memory, bolt) are one store that
// every node shares, since bbolt allows one process per file anyway.
func cluster(tb testing.TB, backend string) func() store.Store {
	tb.Helper()
	switch backend {
	case "memory":
		s := store.NewMemory()
		return func() store.Store { return s }
	case "bolt":
		s, err := boltstore.Open(filepath.Join(tb.TempDir(), "bench.db"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return func() store.Store { return s }
	case "redis":
		addr := server(tb, envRedis)
		return func() store.Store {
			s, err := redisstore.New(redisClient(tb, addr))
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}
	case "memcached":
		addr := server(tb, envMemcached)
		return func() store.Store {
			c := memcache.New(addr)
			c.MaxIdleConns = 64
			c.Timeout = 2 * time.Second
			tb.Cleanup(func() { c.Close() })
			s, err := memcachestore.New(c)
			if err != nil {
				tb.Fatal(err)
			}
			return s
		}
	case "postgres":
		dsn := server(tb, envPostgres)
		var once sync.Once
		return func() store.Store {
			pool, err := pgxpool.New(context.Background(), dsn)
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(pool.Close)
			s, err := pgstore.New(pool, pgstore.WithNotify())
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { s.Close() })
			// Create the tables once, before any node races another
			// node's first use to do it.
			var merr error
			once.Do(func() { merr = s.Migrate(context.Background()) })
			if merr != nil {
				tb.Fatal(merr)
			}
			return s
		}
	}
	tb.Fatalf("unknown backend %q", backend)
	return nil
}

func redisClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

// fake starts a fake WeChat that knows appID and never runs out of quota.
func fake(tb testing.TB, appID, secret string, opts ...wechattest.Option) *wechattest.Server {
	opts = append([]wechattest.Option{wechattest.WithApp(appID, secret), wechattest.WithDailyQuota(-1)}, opts...)
	srv := wechattest.NewServer(opts...)
	tb.Cleanup(srv.Close)
	return srv
}

// ours is one node: a Conf on s that grants from srv.
func ours(tb testing.TB, srv *wechattest.Server, appID, secret string, s store.Store, opts ...conf.Option) *conf.Conf {
	tb.Helper()
	opts = append([]conf.Option{
		conf.WithAppID(appID, secret),
		conf.WithStore(s),
		conf.WithBaseURLs(srv.URL()),
		conf.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}),
	}, opts...)
	c, err := conf.New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// peerBackends are the caches silenceper/wechat ships for these backends;
// it has none for bbolt or PostgreSQL.
var peerBackends = map[string]bool{"memory": true, "redis": true, "memcached": true}

// peerCache returns a function that opens one silenceper node's cache of
// backend, each node with a client of its own, or skips tb when silenceper
// has no cache for it.
func peerCache(tb testing.TB, backend string) func() cache.Cache {
	tb.Helper()
	switch backend {
	case "memory":
		return func() cache.Cache { return cache.NewMemory() }
	case "redis":
		addr := server(tb, envRedis)
		return func() cache.Cache {
			// Its constructor makes a client that nothing can close:
			// without an idle timeout that one starts no goroutine and
			// is never used, since SetConn hands it one that the
			// benchmark closes.
			conn := redisv8.NewClient(&redisv8.Options{Addr: addr})
			tb.Cleanup(func() { conn.Close() })
			c := cache.NewRedis(context.Background(), &cache.RedisOpts{Host: addr, IdleTimeout: -1})
			c.SetConn(conn)
			return c
		}
	case "memcached":
		addr := server(tb, envMemcached)
		return func() cache.Cache { return cache.NewMemcache(addr) }
	}
	tb.Skipf("silenceper/wechat has no cache for %s", backend)
	return nil
}

// peerBase is where silenceper's requests to api.weixin.qq.com go instead.
// Its URLs are constants, but util.SetURIModifier rewrites every request,
// so it talks HTTP to the same fake as ours.
var (
	peerBase     atomic.Pointer[string]
	peerBaseOnce sync.Once
)

const wechatHost = "https://api.weixin.qq.com"

// theirs is one silenceper node on cache c whose token requests reach srv.
func theirs(srv *wechattest.Server, appID, secret string, c cache.Cache) *officialaccount.OfficialAccount {
	u := srv.URL()
	peerBase.Store(&u)
	peerBaseOnce.Do(func() {
		util.SetURIModifier(func(uri string) string {
			if rest, ok := strings.CutPrefix(uri, wechatHost); ok {
				return *peerBase.Load() + rest
			}
			return uri
		})
	})
	return officialaccount.NewOfficialAccount(&offconfig.Config{AppID: appID, AppSecret: secret, Cache: c})
}
