package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/boltstore"
	"github.com/wechatconf/wechatconf/store/memcachestore"
	"github.com/wechatconf/wechatconf/store/pgstore"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

const (
	// pingTimeout bounds the check that a networked store answers, so that
	// an unreachable one is a prompt error, not a hang.
	pingTimeout = 5 * time.Second
	// boltLockTimeout is how long Open waits for a bbolt file another
	// process holds. bbolt serves one process at a time, so concurrent
	// `wechatconf token` runs on one file take turns: the wait must cover
	// a few of them. A running `serve` holds its file for good.
	boltLockTimeout = 30 * time.Second
	// memcacheIdleConns keeps enough connections for a busy serve.
	memcacheIdleConns = 32
)

// storeSchemes lists the accepted schemes for error messages.
const storeSchemes = "memory:, bolt:PATH, redis://, rediss://, memcache://HOST:PORT, postgres://"

// storeScheme returns the scheme of a store URL, or a usage error.
func storeScheme(raw string) (string, error) {
	i := strings.Index(raw, ":")
	if i <= 0 {
		return "", usagef("--store %q has no scheme (want %s)", raw, storeSchemes)
	}
	switch s := strings.ToLower(raw[:i]); s {
	case "memory", "bolt", "redis", "rediss", "memcache", "postgres", "postgresql":
		return s, nil
	}
	return "", usagef("unknown store scheme %q (want %s)", raw[:i], storeSchemes)
}

// openStore opens the store at raw and checks that it answers. The returned
// func releases it (bbolt file, client connections, pool).
func openStore(ctx context.Context, raw string) (store.Store, func() error, error) {
	scheme, err := storeScheme(raw)
	if err != nil {
		return nil, nil, err
	}
	rest := raw[len(scheme)+1:]
	switch scheme {
	case "memory":
		if rest != "" && rest != "//" {
			return nil, nil, usagef("--store memory: takes nothing after the colon")
		}
		return store.NewMemory(), func() error { return nil }, nil
	case "bolt":
		return openBolt(strings.TrimPrefix(rest, "//"))
	case "redis", "rediss":
		return openRedis(ctx, raw)
	case "memcache":
		return openMemcache(rest)
	default:
		return openPostgres(ctx, raw)
	}
}

func openBolt(path string) (store.Store, func() error, error) {
	if path == "" {
		return nil, nil, usagef("--store bolt: needs a file path, as in bolt:/var/lib/wechatconf/wechatconf.db")
	}
	s, err := boltstore.Open(path, boltstore.WithTimeout(boltLockTimeout))
	if err != nil {
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	return s, s.Close, nil
}

func openRedis(ctx context.Context, raw string) (store.Store, func() error, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, nil, usagef("--store %s: invalid redis URL: %v", redactURL(raw), urlCause(err))
	}
	c := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("store %s unreachable: %w", redactURL(raw), err)
	}
	return redisstore.New(c), c.Close, nil
}

func openMemcache(rest string) (store.Store, func() error, error) {
	hosts, ok := strings.CutPrefix(rest, "//")
	hosts = strings.TrimSuffix(hosts, "/")
	servers := splitList(hosts)
	if !ok || len(servers) == 0 {
		return nil, nil, usagef("--store memcache: wants memcache://HOST:PORT[,HOST:PORT...]")
	}
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || n <= 0 || n > 65535 {
			return nil, nil, usagef("--store memcache: server %q is not HOST:PORT", s)
		}
	}
	var sl memcache.ServerList
	if err := sl.SetServers(servers...); err != nil {
		return nil, nil, fmt.Errorf("store memcache://%s unreachable: %w", hosts, err)
	}
	c := memcache.NewFromSelector(&sl)
	c.MaxIdleConns = memcacheIdleConns
	// Ping is bounded by the client's socket timeout.
	if err := c.Ping(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("store memcache://%s unreachable: %w", hosts, err)
	}
	return memcachestore.New(c), c.Close, nil
}

func openPostgres(ctx context.Context, raw string) (store.Store, func() error, error) {
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		// pgx's message may quote the URL, password and all.
		return nil, nil, usagef("--store %s: invalid postgres URL", redactURL(raw))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", redactURL(raw), err)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("store %s unreachable: %w", redactURL(raw), err)
	}
	s, err := pgstore.New(pool, pgstore.WithNotify())
	if err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("store %s: %w", redactURL(raw), err)
	}
	return s, func() error {
		err := s.Close()
		pool.Close()
		return err
	}, nil
}

// urlCause drops the *url.Error wrapper, whose message repeats the whole
// URL, password included.
func urlCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactURL returns raw fit for logs and errors: the password of the user
// part and any query parameter that looks like a secret are masked.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// A URL Go cannot parse (memcache://a:1,b:2 has two hosts):
		// mask whatever precedes an @.
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			if j := strings.Index(raw, "://"); j >= 0 && j < i {
				return raw[:j+3] + "xxxxx@" + raw[i+1:]
			}
			return "xxxxx@" + raw[i+1:]
		}
		return raw
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "pass") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") || strings.Contains(lk, "key") {
				q[k] = []string{"xxxxx"}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
