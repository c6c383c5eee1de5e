package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	// crashLease is the nodes' lease TTL: how long a dead holder blocks.
	crashLease = 5 * time.Second
	// pollInterval is the longest pause of conf's poll while another node
	// holds the lease (pollMax in conf/engine.go); a waiter notices an
	// expired lease at most this late.
	pollInterval = 500 * time.Millisecond
	// crashSlack is the generous allowance of a loaded machine, on top of
	// what the engine needs; it bounds the wait, it does not time it.
	crashSlack = 10 * time.Second
	// crashLatency keeps the holder's grant in flight until it is killed.
	crashLatency = time.Minute
	// crashCallers: callers on each surviving node.
	crashCallers = 8
)

// testCrash: node A takes the lease and asks WeChat, which stalls; A is
// killed with SIGKILL while its grant is in flight. The surviving nodes
// must get a valid token within the lease TTL plus a poll interval (plus
// slack), with exactly one grant between them, and leave nothing locked.
func testCrash(t *testing.T, b *bed) {
	srv := newFake(t, wechattest.WithLatency(crashLatency))
	ns := b.namespace("crash")
	spec := baseSpec(srv, ns)
	spec.LeaseTTL = crashLease
	cl := b.start(t, same(3, spec)...)
	a, rest := cl.nodes[0], cl.nodes[1:]
	st := b.d.Open(t, ns) // the parent's view of the store
	key := conf.Key(wechattest.DefaultAppID, conf.AccessToken)

	// A: miss, lease, second miss, grant: the request reaches the fake
	// and stalls there.
	cl.post([]*peer{a}, command{Op: opGet, Callers: 1, Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !eventually(ctx, 2*time.Millisecond, func() bool { return srv.Stats().Requests >= 1 }) {
		t.Fatalf("node %s's grant never reached WeChat", a.name)
	}
	a.kill(t)
	killed := time.Now()

	// The dead node's lease must still be live, or there is nothing to
	// prove. Reaching this line takes milliseconds; the lease lasts
	// crashLease. A failure here is reported, never skipped: a skip would
	// let CI pass without the crash path ever being exercised.
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	l, err := st.Lock(lctx, key, time.Second)
	lcancel()
	switch {
	case err == nil:
		_ = l.Unlock(context.Background())
		t.Fatalf("the killed node's lease had already expired %v after the kill (lease %v): the crash path was not exercised", time.Since(killed).Round(time.Millisecond), crashLease)
	case !errors.Is(err, store.ErrLocked):
		t.Fatalf("checking the dead node's lease: Lock = %v, want store.ErrLocked", err)
	}
	if g := srv.Stats().TokenGrants; g != 0 {
		t.Fatalf("WeChat issued %d tokens before the kill, want 0 (the grant was to be in flight)", g)
	}

	srv.SetLatency(0)
	bound := crashLease + pollInterval + crashSlack
	replies := cl.run(rest, command{Op: opGet, Callers: crashCallers, Timeout: bound})
	cs := calls(replies)
	_, _, top := waits(cs)
	b.logf(t, "crash: after the kill: %d callers on %d nodes got a token; the longest wait %v (bound %v), %v after the kill",
		len(cs), len(rest), top.Round(time.Millisecond), bound, time.Since(killed).Round(time.Millisecond))

	cur := srv.CurrentToken(wechattest.DefaultAppID)
	for _, p := range verdict(cs, cur, bound) {
		t.Error(p)
	}
	if !srv.Valid(cur) {
		t.Error("WeChat does not accept the token the survivors got")
	}
	if g := srv.Stats().TokenGrants; g != 1 {
		t.Errorf("%d grants at WeChat, want 1: the dead node's never completed, one survivor's did (by node: %s)", g, grantsByNode(replies))
	}
	for _, r := range replies {
		if r.Events.LeaseWaited == 0 {
			t.Errorf("node %s never waited for the lease: it did not meet the dead node's lease", r.Node)
		}
	}

	// Nothing is left locked: the lease is free for anyone now.
	lctx, lcancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	l, err = st.Lock(lctx, key, time.Second)
	if err != nil {
		t.Fatalf("after recovery the lease is not free: Lock = %v", err)
	}
	if err := l.Unlock(lctx); err != nil {
		t.Errorf("Unlock: %v", err)
	}
}
