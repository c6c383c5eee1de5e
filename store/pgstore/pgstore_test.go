package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
)

// wantOpErr checks that err is a *store.OpError from this package for op
// and key, matching target.
func wantOpErr(t *testing.T, err error, op, key string, target error) {
	t.Helper()
	var oe *store.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("%s %q: error %v (%T) is not a *store.OpError", op, key, err, err)
	}
	if oe.Backend != "pgstore" || oe.Op != op || oe.Key != key {
		t.Fatalf("OpError = {%q %q %q}, want {pgstore %q %q}", oe.Backend, oe.Op, oe.Key, op, key)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("%s %q: error %v does not match %v", op, key, err, target)
	}
	if !strings.HasPrefix(err.Error(), "pgstore: "+op+" ") {
		t.Fatalf("error text %q does not start with the package and operation", err)
	}
}

// recvWithin waits for a notification on ch, failing the test if none comes
// within a generous bound (a hang detector, not a timing check).
func recvWithin(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed instead of notified", what)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no notification", what)
	}
}

func TestGetSetRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newPool(t), WithTable(freshTable()))
	_, err := s.Get(ctx, "{wx1}:access_token")
	wantOpErr(t, err, "get", "{wx1}:access_token", store.ErrNotFound)

	exp := time.Now().Add(2 * time.Hour).Truncate(time.Microsecond)
	if err := s.Set(ctx, "{wx1}:access_token", store.Item{Value: "tok-1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "{wx1}:access_token")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != "tok-1" || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("Get = %q %v, want tok-1 %v", got.Value, got.ExpiresAt, exp)
	}
	if _, err := s.Get(ctx, "{wx1}:jsapi_ticket"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other key: %v, want ErrNotFound", err)
	}
}

func TestExpiredRowIsNotFound(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newPool(t), WithTable(freshTable()))
	if err := s.Set(ctx, "k", store.Item{Value: "old", ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "k")
	wantOpErr(t, err, "get", "k", store.ErrNotFound)
	// The row is there: it is the expiry that hides it.
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{s.table}.Sanitize()).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows = %d, %v; want the expired row stored", n, err)
	}
}

func TestPrefixesShareATableApart(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	table := freshTable()
	prod := newStore(t, pool, WithTable(table), WithPrefix("prod:"))
	staging := newStore(t, pool, WithTable(table), WithPrefix("staging:"))
	if err := prod.Set(ctx, "k", store.Item{Value: "p", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := staging.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("staging sees prod's item: %v", err)
	}
	if _, err := prod.Lock(ctx, "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := staging.Lock(ctx, "k", time.Minute); err != nil {
		t.Fatalf("staging's lease blocked by prod's: %v", err)
	}
	var key string
	if err := pool.QueryRow(ctx, "SELECT key FROM "+pgx.Identifier{table}.Sanitize()).Scan(&key); err != nil || key != "prod:k" {
		t.Fatalf("stored key = %q, %v; want prod:k", key, err)
	}
}

func TestNewerWins(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newPool(t), WithTable(freshTable()))
	now := time.Now()
	if err := s.Set(ctx, "k", store.Item{Value: "later", ExpiresAt: now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "k", store.Item{Value: "sooner", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatalf("a losing Set is not an error: %v", err)
	}
	if err := s.Set(ctx, "k", store.Item{Value: "same", ExpiresAt: now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "k")
	if err != nil || got.Value != "later" {
		t.Fatalf("Get = %v, %v; want the later item", got, err)
	}
}

func TestLeaseLifecycleAndFence(t *testing.T) {
	ctx := context.Background()
	table := freshTable()
	a := newStore(t, newPool(t), WithTable(table))
	b := newStore(t, newPool(t), WithTable(table))
	const ttl = 200 * time.Millisecond

	first, err := a.Lock(ctx, "k", ttl)
	if err != nil {
		t.Fatal(err)
	}
	f1 := first.(*lease).fence
	if f1 < 1 {
		t.Fatalf("first fence = %d", f1)
	}
	// Wait on the database clock, which is the one the lease follows.
	waitDB(t, a, ttl)
	second, err := b.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("Lock after ttl: %v", err)
	}
	f2 := second.(*lease).fence
	if f2 <= f1 {
		t.Fatalf("fence after takeover = %d, want > %d", f2, f1)
	}
	// The stale holder's Unlock and Extend do not touch the new lease.
	if err := first.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = a.Lock(ctx, "k", time.Minute)
	wantOpErr(t, err, "lock", "k", store.ErrLocked)
	err = first.(store.Extender).Extend(ctx, time.Minute)
	wantOpErr(t, err, "extend", "k", store.ErrLeaseLost)

	// The holder extends, unlocks (twice), and the fence keeps counting.
	if err := second.(store.Extender).Extend(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := second.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := second.(store.Extender).Extend(ctx, time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Extend after Unlock: %v, want ErrLeaseLost", err)
	}
	third, err := a.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	if f3 := third.(*lease).fence; f3 <= f2 {
		t.Fatalf("fence after Unlock and Lock = %d, want > %d", f3, f2)
	}
	if s := fmt.Sprint(third); strings.Contains(s, fmt.Sprintf("%x", third.(*lease).owner)) {
		t.Fatalf("lease printed its owner: %s", s)
	}
}

// waitDB sleeps until d has passed on the database clock.
func waitDB(t *testing.T, s *Store, d time.Duration) {
	t.Helper()
	var start time.Time
	if err := s.pool.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&start); err != nil {
		t.Fatal(err)
	}
	for {
		time.Sleep(d / 4)
		var now time.Time
		if err := s.pool.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now); err != nil {
			t.Fatal(err)
		}
		if now.Sub(start) > d {
			return
		}
	}
}

func TestCancelledContext(t *testing.T) {
	s := newStore(t, newPool(t), WithTable(freshTable()), WithNotify())
	l, err := s.Lock(context.Background(), "held", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{}
	_, checks["get"] = s.Get(ctx, "k")
	checks["set"] = s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)})
	_, checks["lock"] = s.Lock(ctx, "k", time.Minute)
	checks["unlock"] = l.Unlock(ctx)
	checks["extend"] = l.(store.Extender).Extend(ctx, time.Minute)
	_, checks["watch"] = s.Watch(ctx, "k")
	checks["migrate"] = s.Migrate(ctx)
	for op, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled ctx: %v, want context.Canceled", op, err)
		}
	}
	if _, err := s.Lock(context.Background(), "held", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Unlock with a cancelled ctx released the lease: %v", err)
	}
}

// A ctx that ends while the statement runs stops it.
func TestContextDeadlineDuringStatement(t *testing.T) {
	pool := newPool(t)
	table := freshTable()
	s := newStore(t, pool, WithTable(table))
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Hold the lease row's lock in an open transaction: Lock blocks on it
	// until its ctx ends.
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), "INSERT INTO "+pgx.Identifier{table + "_leases"}.Sanitize()+
		" (key, owner, fence, expires_at) VALUES ('k', '\\x00', 1, '-infinity')"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = s.Lock(ctx, "k", time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock blocked past its deadline returned %v, want context.DeadlineExceeded", err)
	}
}

func TestTableNameValidation(t *testing.T) {
	pool := newPool(t)
	for _, bad := range []string{
		"x; drop table y", "", "Wechat", "1abc", `we"chat`, "a.b", "wechat conf",
		strings.Repeat("a", 57), "tbl--", "ünicode",
	} {
		s, err := New(pool, WithTable(bad))
		if err == nil {
			s.Close()
			t.Errorf("WithTable(%q) accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), "WithTable") {
			t.Errorf("WithTable(%q): error %q does not name the option", bad, err)
		}
	}
	for _, good := range []string{"wechatconf", "_x", "a1_b2", strings.Repeat("a", 56)} {
		s, err := New(pool, WithTable(good))
		if err != nil {
			t.Errorf("WithTable(%q): %v", good, err)
			continue
		}
		s.Close()
	}
	if _, err := New(nil); err == nil || !strings.Contains(err.Error(), "pool is nil") {
		t.Errorf("New(nil): %v", err)
	}
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	ctx := context.Background()
	table := freshTable()
	pool := newPool(t)
	s := newStore(t, pool, WithTable(table), WithoutAutoMigrate())
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	// Many nodes migrating a fresh table at once.
	table2 := freshTable()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			s2, err := New(pool, WithTable(table2))
			if err != nil {
				t.Error(err)
				return
			}
			defer s2.Close()
			if err := s2.Migrate(ctx); err != nil {
				t.Errorf("concurrent Migrate: %v", err)
			}
		})
	}
	wg.Wait()
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = ANY($1)`,
		[]string{table, table + "_leases", table2, table2 + "_leases"}).Scan(&n)
	if err != nil || n != 4 {
		t.Fatalf("tables created = %d, %v; want 4", n, err)
	}
}

func TestWithoutAutoMigrateFailsClearly(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newPool(t), WithTable(freshTable()), WithoutAutoMigrate())
	_, err := s.Get(ctx, "k")
	wantOpErr(t, err, "get", "k", ErrNotMigrated)
	if errors.Is(err, store.ErrNotFound) {
		t.Fatal("a missing table was reported as a miss")
	}
	if !strings.Contains(err.Error(), "Migrate") || !strings.Contains(err.Error(), s.table) {
		t.Fatalf("error %q does not say what to do or which table", err)
	}
	wantOpErr(t, s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}), "set", "k", ErrNotMigrated)
	_, err = s.Lock(ctx, "k", time.Minute)
	wantOpErr(t, err, "lock", "k", ErrNotMigrated)
	if errors.Is(err, store.ErrLocked) {
		t.Fatal("a missing table was reported as a held lease")
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("after Migrate: %v", err)
	}
}

// A failed auto-migration is not remembered: once the cause is fixed, the
// next operation migrates and works.
func TestAutoMigrateRetriesAfterFailure(t *testing.T) {
	ctx := context.Background()
	admin := newPool(t)
	role := fmt.Sprintf("app_%d", tableSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(serverDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = role
	// PostgreSQL 15 gives PUBLIC no CREATE on schema public: this role
	// cannot create the tables yet.
	pool := poolFor(t, cfg.ConnString()+"&user="+role)
	s := newStore(t, pool, WithTable(freshTable()))
	err = s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "auto-migrate table") || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Set without CREATE privilege: %v", err)
	}
	wantOpErr(t, err, "set", "k", nil)
	if _, err := admin.Exec(ctx, "GRANT CREATE ON SCHEMA public TO "+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Set after the grant: %v (was the failed migration cached?)", err)
	}
	if got, err := s.Get(ctx, "k"); err != nil || got.Value != "v" {
		t.Fatalf("Get = %v, %v", got, err)
	}
}

// A table dropped behind an auto-migrating store's back is recreated.
func TestAutoMigrateAfterTableDropped(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	s := newStore(t, pool, WithTable(freshTable()))
	if err := s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "DROP TABLE "+pgx.Identifier{s.table}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "k")
	wantOpErr(t, err, "get", "k", ErrNotMigrated)
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after the table was recreated: %v, want ErrNotFound", err)
	}
}

func TestWatchAcrossPools(t *testing.T) {
	ctx := context.Background()
	table := freshTable()
	waitListeners(t, 0, "before the test (an earlier test leaked a listener?)")
	setter := newStore(t, newPool(t), WithTable(table), WithNotify())
	waiter := newStore(t, newPool(t), WithTable(table), WithNotify())
	other := newStore(t, newPool(t), WithTable(table), WithNotify(), WithPrefix("other:"))

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := waiter.Watch(wctx, "{wx1}:access_token")
	if err != nil {
		t.Fatal(err)
	}
	marker, err := waiter.Watch(wctx, "marker")
	if err != nil {
		t.Fatal(err)
	}
	waitListeners(t, 1, "one watching store")
	// A second Watch on the same store reuses the listener.
	if _, err := waiter.Watch(wctx, "{wx1}:jsapi_ticket"); err != nil {
		t.Fatal(err)
	}
	waitListeners(t, 1, "after a second Watch on the same store")

	exp := time.Now().Add(2 * time.Hour)
	if err := setter.Set(ctx, "{wx1}:access_token", store.Item{Value: "t1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, ch, "Set on another pool")

	// Notifications arrive in commit order on one connection and are
	// dispatched in order, so once the marker's arrives, anything sent
	// before it has been delivered: a Set that lost, a Set under another
	// prefix and a Set on another key sent nothing to ch.
	if err := setter.Set(ctx, "{wx1}:access_token", store.Item{Value: "older", ExpiresAt: exp.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := other.Set(ctx, "{wx1}:access_token", store.Item{Value: "o", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := setter.Set(ctx, "{wx2}:access_token", store.Item{Value: "x", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := setter.Set(ctx, "marker", store.Item{Value: "m", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, marker, "marker")
	select {
	case <-ch:
		t.Fatal("woken by a losing Set, another prefix or another key")
	default:
	}

	// The setter's own watchers hear its Sets too.
	own, err := setter.Watch(wctx, "{wx1}:access_token")
	if err != nil {
		t.Fatal(err)
	}
	if err := setter.Set(ctx, "{wx1}:access_token", store.Item{Value: "t2", ExpiresAt: exp.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, own, "own Set")
	recvWithin(t, ch, "second Set")

	// Ending ctx closes the channels; Close stops the listeners.
	cancel()
	for range ch {
	}
	for range own {
	}
	ch3, err := waiter.Watch(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{setter, waiter, other} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := <-ch3; ok {
		t.Fatal("watch channel open after Close")
	}
	waitListeners(t, 0, "after Close")
	_, err = waiter.Watch(ctx, "k")
	wantOpErr(t, err, "watch", "k", store.ErrClosed)
}

func TestWatchNeedsNotify(t *testing.T) {
	s := newStore(t, newPool(t), WithTable(freshTable()))
	_, err := s.Watch(context.Background(), "k")
	wantOpErr(t, err, "watch", "k", ErrNotifyOff)
	if !strings.Contains(err.Error(), "WithNotify") {
		t.Fatalf("error %q does not say how to turn watching on", err)
	}
}

func TestClosedStore(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newPool(t), WithTable(freshTable()))
	l, err := s.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = s.Get(ctx, "k")
	wantOpErr(t, err, "get", "k", store.ErrClosed)
	wantOpErr(t, s.Set(ctx, "k", store.Item{Value: "SECRET", ExpiresAt: time.Now().Add(time.Hour)}), "set", "k", store.ErrClosed)
	_, err = s.Lock(ctx, "k", time.Minute)
	wantOpErr(t, err, "lock", "k", store.ErrClosed)
	wantOpErr(t, l.Unlock(ctx), "unlock", "k", store.ErrClosed)
	if err := s.Migrate(ctx); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Migrate after Close: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newPool(t), WithTable(freshTable()))
	if _, err := s.Get(ctx, ""); err == nil || !strings.Contains(err.Error(), "key is empty") {
		t.Errorf("Get(\"\"): %v", err)
	}
	if _, err := s.Lock(ctx, "k", 0); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Errorf("Lock with ttl 0: %v", err)
	}
	l, err := s.Lock(ctx, "k", time.Nanosecond) // rounds up to a microsecond, not to zero
	if err != nil {
		t.Fatalf("Lock with a 1ns ttl: %v", err)
	}
	if err := l.(store.Extender).Extend(ctx, -1); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Errorf("Extend with a negative ttl: %v", err)
	}
	var nilCtx context.Context
	if _, err := s.Get(nilCtx, "k"); err == nil {
		t.Error("Get with a nil ctx succeeded")
	}
	// A value PostgreSQL's text type refuses is an error naming the cause,
	// and not the value.
	err = s.Set(ctx, "k", store.Item{Value: "SECRET\x00", ExpiresAt: time.Now().Add(time.Hour)})
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Set of a NUL value: %v", err)
	}
}

// The server goes away mid-test: every operation is an error, never a miss
// or a held lease, and the store recovers, watches included, when the server
// comes back.
func TestServerOutageAndRecovery(t *testing.T) {
	srv, dsn := testserver.Postgres(t)
	if err := waitReady(dsn); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	table := freshTable()
	s := newStore(t, poolFor(t, dsn), WithTable(table), WithNotify())
	peer := newStore(t, poolFor(t, dsn), WithTable(table), WithNotify())
	exp := time.Now().Add(time.Hour)
	if err := s.Set(ctx, "k", store.Item{Value: "SECRET-TOKEN", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := peer.Watch(wctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "held", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	opCtx, opCancel := context.WithTimeout(ctx, time.Minute) // hang detector
	defer opCancel()
	_, err = s.Get(opCtx, "k")
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get with the server down: %v, want an outage error", err)
	}
	wantOpErr(t, err, "get", "k", nil)
	err = s.Set(opCtx, "k", store.Item{Value: "SECRET-TOKEN", ExpiresAt: exp.Add(time.Hour)})
	if err == nil || strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Fatalf("Set with the server down: %v", err)
	}
	_, err = s.Lock(opCtx, "k", time.Minute)
	if err == nil || errors.Is(err, store.ErrLocked) {
		t.Fatalf("Lock with the server down: %v, want an outage error", err)
	}
	if err := l.Unlock(opCtx); err == nil {
		t.Fatal("Unlock with the server down reported success")
	}
	if err := l.(store.Extender).Extend(opCtx, time.Minute); err == nil || errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Extend with the server down: %v, want an outage error", err)
	}
	// The dropped LISTEN connection wakes the watcher: it may have missed a
	// NOTIFY and must read again.
	recvWithin(t, ch, "watcher after the listening connection dropped")

	srv.Start()
	if err := waitReady(dsn); err != nil {
		t.Fatal(err)
	}
	// Pools notice dead connections on use: retry until the store works.
	deadline := time.Now().Add(time.Minute)
	for {
		err := s.Set(ctx, "k", store.Item{Value: "after", ExpiresAt: exp.Add(2 * time.Hour)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover after the server came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got, err := s.Get(ctx, "k")
	if err != nil || got.Value != "after" {
		t.Fatalf("Get after recovery = %v, %v", got, err)
	}
	// The listener reconnects on its own; Sets keep waking the watcher.
	// (It may already hold a wake-up from the reconnection: drain, then
	// check that a Set after recovery is heard.)
	for {
		drain(ch)
		if err := s.Set(ctx, "k", store.Item{Value: "later", ExpiresAt: time.Now().Add(3*time.Hour + time.Duration(rand.IntN(1e6)))}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(time.Second):
			if time.Now().After(deadline) {
				t.Fatal("watcher not woken by Sets after recovery")
			}
			continue
		}
		break
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
