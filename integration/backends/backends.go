// Package backends gives the integration suites every store backend over a
// live server, behind one small API, so that a suite is written once and run
// for each backend:
//
//	for _, k := range backends.All() {
//		t.Run(string(k), func(t *testing.T) {
//			d := backends.Start(t, k)
//			s := d.Open(t, "ns1:") // a node's store
//			...
//		})
//	}
//
// A Deployment is one running backend: Redis, Memcached or PostgreSQL in a
// container (package servers), or a bbolt file in the test's temporary
// directory. Open gives a store with a client of its own, the way another
// node would have one; stores opened under the same namespace share data and
// leases, and different namespaces are kept apart. Suites that run nodes as
// separate processes pass Kind, Target and the namespace to the child
// (Deployment.Env, FromEnv) and call OpenTarget there.
package backends

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/integration/servers"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/boltstore"
	"github.com/wechatconf/wechatconf/store/memcachestore"
	"github.com/wechatconf/wechatconf/store/pgstore"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

// Kind names a backend.
type Kind string

// The backends.
const (
	Redis     Kind = "redis"
	Memcached Kind = "memcached"
	Postgres  Kind = "postgres"
	Bolt      Kind = "bolt"
)

// All lists every backend, in the order the suites run them.
func All() []Kind { return []Kind{Redis, Memcached, Postgres, Bolt} }

// Networked lists the backends that separate processes can share: all but
// Bolt, whose file one process at a time may open.
func Networked() []Kind { return []Kind{Redis, Memcached, Postgres} }

// Granularity is the coarsest expiry step the backend honours: memcached
// counts expiry in whole seconds; the others are finer than 100ms.
func (k Kind) Granularity() time.Duration {
	if k == Memcached {
		return time.Second
	}
	return 100 * time.Millisecond
}

func (k Kind) valid() bool { return slices.Contains(All(), k) }

// pgTable is the table every PostgreSQL store of a deployment uses; the
// namespace becomes the key prefix.
const pgTable = "wechatconf_it"

// Deployment is one running backend for the length of a test.
type Deployment struct {
	// Kind is the backend.
	Kind Kind
	// Server is the server's container, for outage tests (Stop, Start,
	// Pause); nil for Bolt.
	Server *servers.Server
	// Target tells any process how to reach the backend: host:port for Redis
	// and Memcached, a connection string for PostgreSQL, the file path for
	// Bolt. Pass it to OpenTarget.
	Target string

	bolt *boltstore.Store // Bolt: the open file that Open's stores share
}

// Start brings up a backend of kind k, stopped and removed by t.Cleanup. It
// skips or fails the test as servers.RequireDocker says when Docker is
// missing (Bolt needs no Docker). opts go to the server (servers.Args).
func Start(t testing.TB, k Kind, opts ...servers.Option) *Deployment {
	t.Helper()
	d := &Deployment{Kind: k}
	switch k {
	case Redis:
		d.Server = servers.Redis(t, opts...)
		d.Target = d.Server.Addr
	case Memcached:
		d.Server = servers.Memcached(t, opts...)
		d.Target = d.Server.Addr
	case Postgres:
		// Every Open is a pool of its own, as another node's would be;
		// suites open many at once.
		opts = append([]servers.Option{servers.Args("-c", "max_connections=400")}, opts...)
		d.Server = servers.Postgres(t, opts...)
		d.Target = d.Server.DSN
		// Create the tables once, before stores race to do it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, closeFn, err := OpenTarget(ctx, k, d.Target, "setup:")
		if err != nil {
			t.Fatalf("backends: %v", err)
		}
		err = s.(*pgstore.Store).Migrate(ctx)
		closeFn()
		if err != nil {
			t.Fatalf("backends: postgres migrate: %v", err)
		}
	case Bolt:
		d.Target = filepath.Join(t.TempDir(), "wechatconf.db")
		s, err := boltstore.Open(d.Target)
		if err != nil {
			t.Fatalf("backends: bolt: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		d.bolt = s
	default:
		t.Fatalf("backends: unknown kind %q (want one of %v)", k, All())
	}
	return d
}

// Open returns a store over the deployment under namespace, with a client
// (connection pool) of its own; t.Cleanup closes it. Stores opened with the
// same namespace see the same items and leases. For Bolt, the stores of one
// deployment share its open file, each namespace in a bucket of its own.
func (d *Deployment) Open(t testing.TB, namespace string) store.Store {
	t.Helper()
	if d.Kind == Bolt {
		s, err := boltstore.New(d.bolt.DB(), boltstore.WithBucket(boltBucket(namespace)))
		if err != nil {
			t.Fatalf("backends: bolt namespace %q: %v", namespace, err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, closeFn, err := OpenTarget(ctx, d.Kind, d.Target, namespace)
	if err != nil {
		t.Fatalf("backends: %v", err)
	}
	t.Cleanup(func() { closeFn() })
	return s
}

// Broken returns a store of the deployment's kind whose backend is gone: for
// the servers, a client of the same kind aimed at a loopback port where
// nothing listens (connections are refused, as after a crash); for Bolt, a
// store that was closed. Its operations must fail with errors that are not
// misses.
func (d *Deployment) Broken(t testing.TB) store.Store {
	t.Helper()
	if d.Kind == Bolt {
		s, err := boltstore.Open(filepath.Join(t.TempDir(), "broken.db"))
		if err != nil {
			t.Fatalf("backends: bolt: %v", err)
		}
		s.Close()
		return s
	}
	addr := deadAddr(t)
	target := addr
	if d.Kind == Postgres {
		target = fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, closeFn, err := OpenTarget(ctx, d.Kind, target, "broken:")
	if err != nil {
		t.Fatalf("backends: %v", err)
	}
	t.Cleanup(func() { closeFn() })
	return s
}

// deadAddr returns a loopback address where nothing listens: a port the
// kernel just handed out and that was closed again.
func deadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("backends: free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// boltBucket makes a namespace into a bucket name (bbolt takes any non-empty
// byte string).
func boltBucket(namespace string) string { return "wechatconf:" + namespace }

// OpenTarget opens a store of kind k at target under namespace, in any
// process: a child node gets kind, target and namespace from its parent
// (see Env and FromEnv). The returned func closes the store and its client.
// A Bolt target is a file path, which only one process may hold open.
func OpenTarget(ctx context.Context, k Kind, target, namespace string) (store.Store, func() error, error) {
	if !k.valid() {
		return nil, nil, fmt.Errorf("backends: unknown kind %q (want one of %v)", k, All())
	}
	if target == "" {
		return nil, nil, fmt.Errorf("backends: open %s: empty target", k)
	}
	switch k {
	case Redis:
		c := redis.NewClient(&redis.Options{Addr: target})
		s, err := redisstore.New(c, redisstore.WithPrefix(namespace))
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("backends: %w", err)
		}
		return s, func() error { s.Close(); return c.Close() }, nil
	case Memcached:
		c := memcache.New(target)
		// gomemcache's default of 500ms is short for a loaded CI machine
		// running -race; an outage still fails within this bound.
		c.Timeout = 3 * time.Second
		s, err := memcachestore.New(c, memcachestore.WithPrefix(namespace))
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("backends: %w", err)
		}
		return s, func() error { s.Close(); return c.Close() }, nil
	case Postgres:
		cfg, err := pgxpool.ParseConfig(target)
		if err != nil {
			return nil, nil, fmt.Errorf("backends: postgres target: %w", err)
		}
		cfg.MaxConns = 4
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("backends: postgres pool: %w", err)
		}
		s, err := pgstore.New(pool, pgstore.WithTable(pgTable), pgstore.WithPrefix(namespace),
			pgstore.WithNotify(), pgstore.WithoutAutoMigrate())
		if err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("backends: pgstore: %w", err)
		}
		return s, func() error {
			err := s.Close()
			pool.Close()
			return err
		}, nil
	default: // Bolt
		s, err := boltstore.Open(target, boltstore.WithBucket(boltBucket(namespace)))
		if err != nil {
			return nil, nil, fmt.Errorf("backends: bolt: %w", err)
		}
		return s, s.Close, nil
	}
}

// Environment variables that carry a deployment to a child process.
const (
	KindEnv   = "WECHATCONF_IT_BACKEND"
	TargetEnv = "WECHATCONF_IT_TARGET"
)

// Env returns the environment entries (KEY=value) that tell a child process
// how to reach this deployment; the child reads them with FromEnv.
func (d *Deployment) Env() []string {
	return []string{KindEnv + "=" + string(d.Kind), TargetEnv + "=" + d.Target}
}

// ErrNoEnv is returned by FromEnv in a process that was not given a
// deployment.
var ErrNoEnv = errors.New("backends: no deployment in the environment (" + KindEnv + ", " + TargetEnv + ")")

// FromEnv reads the kind and target that a parent passed with Env.
func FromEnv() (Kind, string, error) {
	k, target := Kind(strings.TrimSpace(os.Getenv(KindEnv))), os.Getenv(TargetEnv)
	if k == "" && target == "" {
		return "", "", ErrNoEnv
	}
	if !k.valid() {
		return "", "", fmt.Errorf("backends: %s=%q is not one of %v", KindEnv, k, All())
	}
	if target == "" {
		return "", "", fmt.Errorf("backends: %s is empty", TargetEnv)
	}
	return k, target, nil
}
