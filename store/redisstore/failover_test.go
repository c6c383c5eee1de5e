package redisstore_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

// appKey is the key the failover tests watch; its hash tag decides its slot.
const appKey = "{wxapp}:access_token"

// recoveryBound is how soon after a promotion the Store must work again:
// generous for a loaded 2-core machine, yet far below the 60 s after which
// go-redis reloads a cluster's slot map on its own.
const recoveryBound = 15 * time.Second

// neverReload is a ClusterStateReloadInterval long enough that go-redis's
// periodic reload cannot happen during a test: only a reload that a failure
// asks for can rescue a client.
const neverReload = time.Hour

var probeSeq atomic.Int64

// exercise runs Set, Get and Lock/Unlock on the app's slot through s, each
// call bounded by its own short context, as the refresh engine does.
func exercise(s *redisstore.Store) error {
	call := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return f(ctx)
	}
	n := probeSeq.Add(1)
	want := store.Item{Value: fmt.Sprintf("v%d", n), ExpiresAt: time.Now().Add(time.Hour + time.Duration(n)*time.Second)}
	if err := call(func(ctx context.Context) error { return s.Set(ctx, appKey, want) }); err != nil {
		return fmt.Errorf("Set: %w", err)
	}
	if err := call(func(ctx context.Context) error {
		got, err := s.Get(ctx, appKey)
		if err == nil && got.Value != want.Value {
			err = fmt.Errorf("got %q, want %q", got.Value, want.Value)
		}
		return err
	}); err != nil {
		return fmt.Errorf("Get: %w", err)
	}
	// A lease of its own each time, in the app's slot: a lease whose
	// Unlock failed must not make the next probe fail.
	lk := fmt.Sprintf("{wxapp}:probe%d", n)
	return call(func(ctx context.Context) error {
		l, err := s.Lock(ctx, lk, time.Minute)
		if err != nil {
			return fmt.Errorf("Lock: %w", err)
		}
		if err := l.Unlock(ctx); err != nil {
			return fmt.Errorf("Unlock: %w", err)
		}
		return nil
	})
}

// recoverBy exercises s every 100 ms until it succeeds or deadline passes,
// and returns when it first succeeded, or the last error.
func recoverBy(s *redisstore.Store, deadline time.Time) (time.Time, error) {
	for {
		err := exercise(s)
		if err == nil {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func clusterClient(t *testing.T, cl *testserver.Cluster) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                      cl.Addrs(),
		ClusterStateReloadInterval: neverReload,
		DialTimeout:                time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClusterFailover kills the master that serves the app's slot in a real
// three-master, three-replica cluster and checks that a Store on a
// ClusterClient works again soon after the replica's promotion, while the
// same client without the reload (WithFailoverReload(-1)) still fails when
// that bound has passed: without the fix, go-redis keeps dialing the dead
// master until its next periodic reload.
func TestClusterFailover(t *testing.T) {
	cl := testserver.RedisCluster(t)
	slt := int(slot(appKey))
	before := runtime.NumGoroutine()

	fixedC, controlC := clusterClient(t, cl), clusterClient(t, cl)
	fixed := redisstore.MustNew(t, fixedC)
	control := redisstore.MustNew(t, controlC, redisstore.WithFailoverReload(-1))
	if _, ok := redisstore.Reloads(control); ok {
		t.Fatal("WithFailoverReload(-1) still wraps the client")
	}
	for name, s := range map[string]*redisstore.Store{"fixed": fixed, "control": control} {
		if err := exercise(s); err != nil {
			t.Fatalf("%s store before the failover: %v", name, err)
		}
	}
	if n, _ := redisstore.Reloads(fixed); n != 0 {
		t.Fatalf("%d reloads while all was well", n)
	}
	ctx := context.Background()
	if got, err := fixedC.ClusterKeySlot(ctx, redisstore.DefaultPrefix+appKey).Result(); err != nil || got != int64(slt) {
		t.Fatalf("CLUSTER KEYSLOT = %d, %v; computed %d", got, err, slt)
	}

	old := cl.Master(slt, nil)
	killed := time.Now()
	old.Stop()
	// From the kill on, both stores are called over and over, as the
	// refresh engine would call them through the outage; each records
	// when it first succeeded again.
	var fixedOK, controlOK atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	for _, p := range []struct {
		s  *redisstore.Store
		ok *atomic.Int64
	}{{fixed, &fixedOK}, {control, &controlOK}} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if exercise(p.s) == nil {
					p.ok.CompareAndSwap(0, time.Now().UnixNano())
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	defer halt()

	promoted := cl.WaitPromotion(slt, old, 60*time.Second)
	tp := time.Now()
	t.Logf("killed %s; %s promoted after %v", old.Addr, promoted.Addr, tp.Sub(killed).Round(time.Millisecond))

	for fixedOK.Load() == 0 && time.Since(tp) < recoveryBound {
		time.Sleep(20 * time.Millisecond)
	}
	if fixedOK.Load() == 0 {
		t.Fatalf("Store with the reload did not recover within %v of the promotion: %v", recoveryBound, exercise(fixed))
	}
	t.Logf("with the reload: first success %v after the promotion", time.Unix(0, fixedOK.Load()).Sub(tp).Round(time.Millisecond))
	n, _ := redisstore.Reloads(fixed)
	if n < 1 {
		t.Fatal("recovered, but no reload was asked for")
	}
	// Rate limit: at most one reload per DefaultReloadGap (and one more
	// for the first).
	if limit := int64(time.Since(killed)/redisstore.DefaultReloadGap) + 2; n > limit {
		t.Fatalf("%d reloads in %v, more than one per %v", n, time.Since(killed), redisstore.DefaultReloadGap)
	}
	t.Logf("reloads asked for: %d", n)

	// The control: without the reload the same kind of client is still
	// stuck on the dead master when the bound has passed. If it is not,
	// this test cannot tell the fix from go-redis's own behaviour.
	time.Sleep(time.Until(tp.Add(recoveryBound)))
	if ok := controlOK.Load(); ok != 0 {
		t.Fatalf("Store without the reload recovered %v after the promotion: the control shows nothing", time.Unix(0, ok).Sub(tp))
	}
	t.Logf("without the reload: still failing %v after the promotion: %v", time.Since(tp).Round(time.Millisecond), exercise(control))
	halt()
	// And once it is told to reload, it recovers too.
	controlC.ReloadState(ctx)
	if _, err := recoverBy(control, time.Now().Add(recoveryBound)); err != nil {
		t.Fatalf("control after ReloadState: %v", err)
	}

	fixedC.Close()
	controlC.Close()
	settle(t, before)
}

// TestSentinelFailover kills the master of a real Sentinel setup (one
// replica, three sentinels) and checks that Stores on both kinds of
// Sentinel client work again soon after the promotion. go-redis's
// FailoverClient asks a sentinel for the master at every dial and drops its
// connections on +switch-master, and its FailoverClusterClient reloads on
// +switch-master; the Store adds its reload on failure to the latter, in
// case that message is missed.
func TestSentinelFailover(t *testing.T) {
	sn := testserver.RedisSentinel(t)
	before := runtime.NumGoroutine()
	fo := &redis.FailoverOptions{MasterName: sn.MasterName, SentinelAddrs: sn.SentinelAddrs(), DialTimeout: time.Second}
	single := redis.NewFailoverClient(fo)
	t.Cleanup(func() { single.Close() })
	fo2 := *fo
	fo2.SentinelAddrs = sn.SentinelAddrs()
	multi := redis.NewFailoverClusterClient(&fo2)
	t.Cleanup(func() { multi.Close() })
	stores := []struct {
		name string
		s    *redisstore.Store
	}{
		{"FailoverClient", redisstore.MustNew(t, single)},
		{"FailoverClusterClient", redisstore.MustNew(t, multi)},
	}
	if _, ok := redisstore.Reloads(stores[1].s); !ok {
		t.Fatal("the FailoverClusterClient is not wrapped")
	}
	for _, x := range stores {
		if err := exercise(x.s); err != nil {
			t.Fatalf("%s before the failover: %v", x.name, err)
		}
	}

	killed := time.Now()
	sn.Master.Stop()
	sn.WaitPromotion(60 * time.Second)
	tp := time.Now()
	t.Logf("killed %s; %s promoted after %v", sn.Master.Addr, sn.Replica.Addr, tp.Sub(killed).Round(time.Millisecond))
	for _, x := range stores {
		ok, err := recoverBy(x.s, tp.Add(recoveryBound))
		if err != nil {
			t.Fatalf("%s: no recovery within %v of the promotion: %v", x.name, recoveryBound, err)
		}
		t.Logf("%s: first success %v after the promotion", x.name, ok.Sub(tp).Round(time.Millisecond))
	}
	n, _ := redisstore.Reloads(stores[1].s)
	t.Logf("FailoverClusterClient: reloads asked for: %d", n)

	single.Close()
	multi.Close()
	// go-redis v9.23 does not close the sentinel subscription of a
	// FailoverClusterClient on Close (its listener and the pub/sub's two
	// goroutines stay); nothing else may be left.
	const goRedisLeak = 3
	settle(t, before+goRedisLeak)
}

// TestClusterRedirectIsNotAnOutage moves the app's slot to another master
// behind a ClusterClient's back, first halfway (ASK: the slot is migrating
// and its keys have moved) and then fully (MOVED: another node owns it).
// go-redis follows both redirects; the Store must answer with no error and
// must not take them for a failure (no reload asked for).
func TestClusterRedirectIsNotAnOutage(t *testing.T) {
	cl := testserver.RedisCluster(t)
	slt := int(slot(appKey))
	c := clusterClient(t, cl)
	s := redisstore.MustNew(t, c)
	if err := exercise(s); err != nil {
		t.Fatalf("before the move: %v", err)
	}
	ctx := context.Background()
	src := cl.Master(slt, nil)
	var dst *testserver.Server
	for _, sl := range []int{0, 8000, 16383} {
		if m := cl.Master(sl, nil); m != src {
			dst = m
			break
		}
	}
	if dst == nil {
		t.Fatal("no other master")
	}
	node := func(srv *testserver.Server) *redis.Client {
		rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rc.Close() })
		return rc
	}
	sc, dc := node(src), node(dst)
	srcID, err := sc.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dc.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	do := func(rc *redis.Client, args ...any) {
		t.Helper()
		if err := rc.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v on %s: %v", args, rc.Options().Addr, err)
		}
	}
	do(dc, "CLUSTER", "SETSLOT", slt, "IMPORTING", srcID)
	do(sc, "CLUSTER", "SETSLOT", slt, "MIGRATING", dstID)
	keys, err := sc.ClusterGetKeysInSlot(ctx, slt, 1000).Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("CLUSTER GETKEYSINSLOT = %q, %v", keys, err)
	}
	host, port, _ := net.SplitHostPort(dst.Addr)
	margs := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
	for _, k := range keys {
		margs = append(margs, k)
	}
	do(sc, margs...)

	// stale fails the test unless c's slot map still sends the app's slot
	// to src, so that the next calls meet a redirect.
	stale := func(phase string) {
		t.Helper()
		m, err := c.MasterForKey(ctx, redisstore.DefaultPrefix+appKey)
		if err != nil || m.Options().Addr != src.Addr {
			t.Fatalf("%s: the client's map sends the slot to %v (%v), not to %s: no redirect to test", phase, m.Options().Addr, err, src.Addr)
		}
	}
	// Halfway: the keys are on dst, the slot still src's: ASK.
	stale("ASK")
	if err := exercise(s); err != nil {
		t.Fatalf("while the slot migrates (ASK): %v", err)
	}
	// Done: dst owns the slot; the client's map still says src: MOVED.
	do(dc, "CLUSTER", "SETSLOT", slt, "NODE", dstID)
	do(sc, "CLUSTER", "SETSLOT", slt, "NODE", dstID)
	for _, n := range cl.Nodes {
		if n == src || n == dst || isReplica(ctx, t, n) {
			continue
		}
		do(node(n), "CLUSTER", "SETSLOT", slt, "NODE", dstID)
	}
	stale("MOVED")
	if err := exercise(s); err != nil {
		t.Fatalf("after the move (MOVED): %v", err)
	}
	if n, _ := redisstore.Reloads(s); n != 0 {
		t.Fatalf("redirects taken for a failure: %d reloads asked for", n)
	}
}

func isReplica(ctx context.Context, t *testing.T, srv *testserver.Server) bool {
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	info, err := rc.Info(ctx, "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(info, "role:slave")
}

// TestFailoverWrapOnlyClusters checks that only ClusterClients are wrapped:
// a plain client is used as it is.
func TestFailoverWrapOnlyClusters(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, ok := redisstore.Reloads(redisstore.MustNew(t, c)); ok {
		t.Fatal("a *redis.Client was wrapped")
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	if _, ok := redisstore.Reloads(redisstore.MustNew(t, cc)); !ok {
		t.Fatal("a *redis.ClusterClient was not wrapped")
	}
}
