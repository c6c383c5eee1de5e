package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jackc/pgx/v5/pgconn"
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

// storeSchemes lists the built-in forms for error messages.
const storeSchemes = "memory:, bolt:PATH, redis://, rediss://, redis+cluster://, redis+sentinel://, memcache://HOST:PORT, postgres://, postgres:KEY=VALUE..."

// builtinSchemes are the schemes the command parses itself: their forms are
// checked completely before anything is dialled, and insecure choices are
// warned about. Any other scheme registered with store.Register (by a
// backend this binary links in: see backends.go) is opened by store.Open.
var builtinSchemes = map[string]bool{
	"memory": true, "bolt": true, "memcache": true, "postgres": true, "postgresql": true,
	"redis": true, "rediss": true, "redis+cluster": true, "rediss+cluster": true,
	"redis+sentinel": true, "rediss+sentinel": true,
}

// schemeRegistry is the storeSpec.scheme of a location opened by
// store.Open.
const schemeRegistry = "registry"

// wantSchemes is storeSchemes plus the schemes registered by backends
// beyond the built-in ones, for error messages.
func wantSchemes() string {
	var extra []string
	for _, sc := range store.Schemes() {
		if !builtinSchemes[sc] {
			extra = append(extra, sc+":")
		}
	}
	if len(extra) == 0 {
		return storeSchemes
	}
	return storeSchemes + ", " + strings.Join(extra, ", ")
}

// Kinds of Redis deployment.
const (
	redisSingle   = "redis"
	redisCluster  = "cluster"
	redisSentinel = "sentinel"
)

// storeSpec is a parsed --store: everything checked, nothing dialled yet.
type storeSpec struct {
	scheme   string // memory, bolt, redis, memcache or postgres
	desc     string // redactURL of the location, for messages
	boltPath string
	redis    string // redisSingle, redisCluster or redisSentinel
	redisOpt *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
	servers  []string // memcache
	pg       *pgxpool.Config
	// warnings are the insecure choices in the location, to be said
	// once at start.
	warnings []string
}

// storeScheme returns the scheme of a store URL, or a usage error that
// shows no more of raw than redactURL does.
func storeScheme(raw string) (string, error) {
	scheme, _, ok := splitScheme(raw)
	if !ok {
		if strings.Contains(raw, "=") {
			return "", usagef("--store %s has no scheme: write a PostgreSQL key=value DSN as postgres:host=... (want %s)", redactURL(raw), wantSchemes())
		}
		return "", usagef("--store %q has no scheme (want %s)", redactURL(raw), wantSchemes())
	}
	switch scheme {
	case "memory", "bolt", "memcache":
		return scheme, nil
	case "redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel":
		return scheme, nil
	case "postgres", "postgresql":
		return "postgres", nil
	}
	if slices.Contains(store.Schemes(), scheme) {
		return schemeRegistry, nil
	}
	return "", usagef("unknown store scheme %q (want %s)", scheme, wantSchemes())
}

// parseStore checks a store location completely, without connecting, so
// that every mistake is a usage error before anything starts. No error
// quotes a password or a client library's raw message.
func parseStore(raw string) (*storeSpec, error) {
	scheme, err := storeScheme(raw)
	if err != nil {
		return nil, err
	}
	_, rest, _ := splitScheme(raw)
	sp := &storeSpec{scheme: scheme, desc: redactURL(raw)}
	switch scheme {
	case "memory":
		if rest != "" && rest != "//" {
			return nil, usagef("--store memory: takes nothing after the colon")
		}
	case "bolt":
		sp.boltPath = strings.TrimPrefix(rest, "//")
		if sp.boltPath == "" {
			return nil, usagef("--store bolt: needs a file path, as in bolt:/var/lib/wechatconf/wechatconf.db")
		}
	case "memcache":
		if err := sp.parseMemcache(rest); err != nil {
			return nil, err
		}
	case "postgres":
		if err := sp.parsePostgres(raw, rest); err != nil {
			return nil, err
		}
	case schemeRegistry:
		// The backend's opener checks the rest, in open.
	default:
		sp.scheme = "redis"
		if err := sp.parseRedis(raw, scheme); err != nil {
			return nil, err
		}
	}
	return sp, nil
}

// libError is a client library's complaint about raw, with every secret
// of raw removed and the *url.Error wrapper (which repeats the whole URL)
// dropped.
func libError(err error, raw string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// "cannot parse `<the location>`: why": keep the why.
		if i := strings.LastIndex(msg, "`: "); i >= 0 && strings.HasPrefix(msg, "cannot parse `") {
			msg = msg[i+3:]
		}
	}
	return scrub(oneLine(msg), raw)
}

func (sp *storeSpec) parseRedis(raw, scheme string) error {
	base, kind, _ := strings.Cut(scheme, "+")
	if kind == "" {
		kind = redisSingle
	}
	if !strings.HasPrefix(raw[len(scheme)+1:], "//") {
		return usagef("--store %s: want %s://[USER:PASSWORD@]HOST:PORT...", sp.desc, scheme)
	}
	sp.redis = kind
	// go-redis reads redis:// and rediss:// only.
	u := base + raw[len(scheme):]
	bad := func(err error) error {
		return usagef("--store %s: invalid %s URL: %s", sp.desc, scheme, libError(err, raw))
	}
	var tlsOff bool
	switch kind {
	case redisSingle:
		opt, err := redis.ParseURL(u)
		if err != nil {
			return bad(err)
		}
		sp.redisOpt = opt
		tlsOff = opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify
	case redisCluster:
		// ParseClusterURL knows no skip_verify: apply it here, as
		// ParseURL does for one node.
		skip, u, err := cutSkipVerify(u)
		if err != nil {
			return bad(err)
		}
		opt, err := redis.ParseClusterURL(u)
		if err != nil {
			return bad(err)
		}
		if skip && opt.TLSConfig != nil {
			opt.TLSConfig.InsecureSkipVerify = true
		}
		sp.cluster = opt
		tlsOff = opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify
	case redisSentinel:
		opt, err := redis.ParseFailoverURL(u)
		if err != nil {
			return bad(err)
		}
		if opt.MasterName == "" {
			return usagef("--store %s: a sentinel URL needs the master's name: add ?master_name=NAME", sp.desc)
		}
		// NewFailoverClient panics on these.
		if opt.RouteByLatency || opt.RouteRandomly {
			return usagef("--store %s: route_by_latency and route_randomly need a failover cluster client, which wechatconf does not build", sp.desc)
		}
		sp.failover = opt
		tlsOff = opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify
	}
	if tlsOff {
		sp.warnings = append(sp.warnings, fmt.Sprintf("store %s: TLS certificates are not verified (skip_verify=true): anyone on the path can read the credentials", sp.desc))
	}
	return nil
}

// cutSkipVerify removes skip_verify from the query of u and reports its
// value.
func cutSkipVerify(u string) (bool, string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return false, "", err
	}
	q := pu.Query()
	if !q.Has("skip_verify") {
		return false, u, nil
	}
	v, err := strconv.ParseBool(q.Get("skip_verify"))
	if err != nil {
		return false, "", fmt.Errorf("skip_verify must be true or false")
	}
	q.Del("skip_verify")
	pu.RawQuery = q.Encode()
	return v, pu.String(), nil
}

func (sp *storeSpec) parseMemcache(rest string) error {
	hosts, ok := strings.CutPrefix(rest, "//")
	hosts = strings.TrimSuffix(hosts, "/")
	if strings.Contains(hosts, "@") {
		return usagef("--store %s: memcache:// takes no user or password (memcached has no authentication); drop the part before @", sp.desc)
	}
	servers := splitList(hosts)
	if !ok || len(servers) == 0 {
		return usagef("--store memcache: wants memcache://HOST:PORT[,HOST:PORT...]")
	}
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || n <= 0 || n > 65535 {
			return usagef("--store memcache: server %q is not HOST:PORT", maskQuery(s))
		}
	}
	sp.servers = servers
	return nil
}

// parsePostgres reads a postgres:// URL, or a key=value DSN written as
// postgres:host=... user=... (pgx takes the DSN alone).
func (sp *storeSpec) parsePostgres(raw, rest string) error {
	conn := raw
	form := "postgres URL"
	if !strings.HasPrefix(rest, "//") {
		conn, form = rest, "postgres key=value DSN"
		if strings.TrimSpace(conn) == "" {
			return usagef("--store postgres: needs a URL (postgres://...) or a key=value DSN (postgres:host=... dbname=...)")
		}
		if _, _, ok := parseDSN(conn); !ok {
			return usagef("--store %s: invalid %s: want space-separated key=value settings, values with spaces in single quotes", sp.desc, form)
		}
	}
	cfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		return usagef("--store %s: invalid %s: %s", sp.desc, form, libError(err, raw))
	}
	sp.pg = cfg
	if mode := pgSSLMode(conn); mode != "" && !strings.HasPrefix(mode, "verify") && !pgLocal(cfg) {
		sp.warnings = append(sp.warnings, fmt.Sprintf("store %s: sslmode=%s does not verify the server's TLS certificate: use sslmode=verify-full", sp.desc, mode))
	}
	return nil
}

// pgSSLMode returns the sslmode written in a PostgreSQL URL or DSN, "" if
// none.
func pgSSLMode(conn string) string {
	if strings.Contains(conn, "://") {
		if u, err := url.Parse(conn); err == nil {
			return u.Query().Get("sslmode")
		}
		return ""
	}
	pairs, _, _ := parseDSN(conn)
	for _, p := range pairs {
		if p.Key == "sslmode" {
			return p.Value
		}
	}
	return ""
}

// pgLocal reports whether every host of cfg is this machine (a loopback
// address or a Unix socket), where TLS matters little.
func pgLocal(cfg *pgxpool.Config) bool {
	hosts := []string{cfg.ConnConfig.Host}
	for _, fb := range cfg.ConnConfig.Fallbacks {
		hosts = append(hosts, fb.Host)
	}
	for _, h := range hosts {
		if !strings.HasPrefix(h, "/") && !isLoopbackHost(h) {
			return false
		}
	}
	return true
}

// isLoopbackHost reports whether host names this machine.
func isLoopbackHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// open opens the parsed store and checks that it answers (the networked
// ones within pingTimeout). The returned func releases it (bbolt file,
// client connections, pool). raw is the location as given, for scrubbing
// client errors.
func (sp *storeSpec) open(ctx context.Context, raw string) (st store.Store, closeFn func() error, err error) {
	// A client constructor that panics on options it dislikes is bad
	// input, not a crash.
	defer func() {
		if p := recover(); p != nil {
			st, closeFn = nil, nil
			err = usagef("--store %s: the client refused the options: %s", sp.desc, scrub(oneLine(fmt.Sprint(p)), raw))
		}
	}()
	switch sp.scheme {
	case "memory":
		return store.NewMemory(), func() error { return nil }, nil
	case "bolt":
		return openBolt(sp.boltPath)
	case "redis":
		return sp.openRedis(ctx, raw)
	case "memcache":
		return sp.openMemcache(raw)
	case schemeRegistry:
		return openRegistered(ctx, raw)
	default:
		return sp.openPostgres(ctx, raw)
	}
}

// openRegistered opens a store of a scheme a linked-in backend registered
// with store.Open, whose errors mask every secret of raw. The Store owns
// what its opener made: closing it releases that.
func openRegistered(ctx context.Context, raw string) (store.Store, func() error, error) {
	s, err := store.Open(ctx, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("store: %s", scrub(oneLine(err.Error()), raw))
	}
	closeFn := func() error { return nil }
	if c, ok := s.(io.Closer); ok {
		closeFn = c.Close
	}
	return s, closeFn, nil
}

func openBolt(path string) (store.Store, func() error, error) {
	s, err := boltstore.Open(path, boltstore.WithTimeout(boltLockTimeout))
	if err != nil {
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	return s, s.Close, nil
}

func (sp *storeSpec) openRedis(ctx context.Context, raw string) (store.Store, func() error, error) {
	var c redis.UniversalClient
	switch sp.redis {
	case redisCluster:
		c = redis.NewClusterClient(sp.cluster)
	case redisSentinel:
		c = redis.NewFailoverClient(sp.failover)
	default:
		c = redis.NewClient(sp.redisOpt)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("store %s unreachable: %s", sp.desc, libError(err, raw))
	}
	s, err := redisstore.New(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("store %s: %w", sp.desc, err)
	}
	// The Store ends its watches; the client is ours to close.
	return s, func() error { s.Close(); return c.Close() }, nil
}

func (sp *storeSpec) openMemcache(raw string) (store.Store, func() error, error) {
	var sl memcache.ServerList
	if err := sl.SetServers(sp.servers...); err != nil {
		return nil, nil, fmt.Errorf("store %s unreachable: %s", sp.desc, libError(err, raw))
	}
	c := memcache.NewFromSelector(&sl)
	c.MaxIdleConns = memcacheIdleConns
	// Ping is bounded by the client's socket timeout.
	if err := c.Ping(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("store %s unreachable: %s", sp.desc, libError(err, raw))
	}
	s, err := memcachestore.New(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("store %s: %w", sp.desc, err)
	}
	return s, func() error { s.Close(); return c.Close() }, nil
}

func (sp *storeSpec) openPostgres(ctx context.Context, raw string) (store.Store, func() error, error) {
	pool, err := pgxpool.NewWithConfig(ctx, sp.pg)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: %s", sp.desc, libError(err, raw))
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("store %s unreachable: %s", sp.desc, libError(err, raw))
	}
	s, err := pgstore.New(pool, pgstore.WithNotify())
	if err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("store %s: %s", sp.desc, libError(err, raw))
	}
	return s, func() error {
		err := s.Close()
		pool.Close()
		return err
	}, nil
}
