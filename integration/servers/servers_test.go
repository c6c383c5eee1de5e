package servers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/integration/servers"
)

// These tests prove the helpers with plain clients, no wechatconf code: each
// server answers at its address, Stop is an outage the client notices, and
// Start brings the server back at the same address, where the same client
// reconnects by itself.

func TestRedis(t *testing.T) {
	t.Parallel()
	srv := servers.Redis(t)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })

	if got, err := rdb.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v; want PONG", got, err)
	}
	if err := rdb.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v1" {
		t.Fatalf("GET = %q, %v; want v1", got, err)
	}

	addr := srv.Addr
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded while Redis was stopped")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if srv.Addr != addr {
		t.Fatalf("address changed across Stop/Start: %s, then %s", addr, srv.Addr)
	}
	if got, err := rdb.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING after Start = %q, %v; want PONG from the same client", got, err)
	}
	// No persistence by default: the outage lost the data.
	if err := rdb.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after restart: %v; want redis.Nil (no persistence)", err)
	}

	// Pause: the server hangs; a bounded call fails with its deadline.
	if err := srv.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err == nil {
		t.Fatal("PING succeeded while Redis was paused")
	}
	if err := srv.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	// The client may have dropped the connection that timed out; a fresh
	// call must work.
	if got, err := rdb.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING after Unpause = %q, %v; want PONG", got, err)
	}
}

func TestRedisArgsPersist(t *testing.T) {
	t.Parallel()
	srv := servers.Redis(t, servers.Args("--appendonly", "yes", "--appendfsync", "always"))
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })

	if err := rdb.Set(ctx, "k", "kept", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "kept" {
		t.Fatalf("GET after restart with appendonly = %q, %v; want kept", got, err)
	}
}

func TestMemcached(t *testing.T) {
	t.Parallel()
	srv := servers.Memcached(t)
	mc := memcache.New(srv.Addr)
	mc.Timeout = 5 * time.Second
	t.Cleanup(func() { mc.Close() })

	if err := mc.Set(&memcache.Item{Key: "k", Value: []byte("v1")}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	it, err := mc.Get("k")
	if err != nil || string(it.Value) != "v1" {
		t.Fatalf("Get = %v, %v; want v1", it, err)
	}

	ctx := context.Background()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = mc.Get("k")
	if err == nil || errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Get while stopped = %v; want an outage error, not a miss", err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.Get("k"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("Get after restart = %v; want a miss (memcached keeps nothing)", err)
	}
	if err := mc.Set(&memcache.Item{Key: "k", Value: []byte("v2")}); err != nil {
		t.Fatalf("Set after restart: %v", err)
	}
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	srv := servers.Postgres(t)
	if srv.DSN == "" {
		t.Fatal("Postgres returned no DSN")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, srv.DSN)
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	t.Cleanup(pool.Close)

	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatalf("create: %v", err)
	}

	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(ctx); err == nil {
		t.Fatal("ping succeeded while PostgreSQL was stopped")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The pool drops the broken connections and dials the same address.
	var v string
	if err := pool.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("after restart: %q, %v; want the row written before the outage", v, err)
	}
}
