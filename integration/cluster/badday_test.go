package cluster

// Bad days of issue #10 that need no fault in the store's server: a grant
// slower than the lease, a flood of forced refreshes, poisoned records.

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	slowNodes = 4
	// Memcached counts expirations in whole seconds: a 1 s lease may
	// lapse at once there, so the lease is 2 s and the grant 5 s.
	slowLease   = 2 * time.Second
	slowLatency = 5 * time.Second

	floodNodes   = 4
	floodCallers = 4
	floodFor     = 10 * time.Second
)

// testSlowGrant: every node asks at once, the lease lasts 2 s and WeChat
// takes 5 s to grant. The holder extends its lease while it waits, so no
// other node takes it over: one grant, shared by all. Before, the lease
// lapsed mid-grant and a second node granted too.
func testSlowGrant(t *testing.T, b *bed) {
	srv := newFake(t, wechattest.WithLatency(slowLatency))
	spec := baseSpec(srv, b.namespace("slow"))
	spec.LeaseTTL = slowLease
	cl := b.start(t, same(slowNodes, spec)...)
	cs := calls(cl.all(command{Op: opGet, Callers: 4, Timeout: callTimeout}))
	cur := srv.CurrentToken(wechattest.DefaultAppID)
	for _, p := range verdict(cs, cur, callTimeout) {
		t.Error(p)
	}
	_, p99, top := waits(cs)
	g := srv.Stats().TokenGrants
	b.logf(t, "slow-grant: lease %v, grant %v, %d callers on %d nodes: %d grant(s), wait p99=%v max=%v",
		slowLease, slowLatency, len(cs), slowNodes, g, p99.Round(time.Millisecond), top.Round(time.Millisecond))
	if g != 1 {
		t.Errorf("%d grants; want 1", g)
	}
}

// testFlood: every node reports the token it serves as rejected, as fast
// as it can, for 10 s. The forced-refresh limit is kept in the store for
// the whole cluster: one forced grant in that time, every other report
// refused with ErrRefreshLimited. Before, each report granted anew.
func testFlood(t *testing.T, b *bed) {
	srv := newFake(t)
	cl := b.start(t, same(floodNodes, baseSpec(srv, b.namespace("flood")))...)
	for _, p := range verdict(calls(cl.all(command{Op: opGet, Callers: 1})), srv.CurrentToken(wechattest.DefaultAppID), callTimeout) {
		t.Fatalf("warm-up: %s", p)
	}
	before := srv.Stats().TokenGrants
	total, limited := 0, 0
	for _, r := range cl.run(cl.nodes, command{Op: opFlood, Callers: floodCallers, Timeout: floodFor}) {
		l := r.Load
		total += l.Calls
		limited += l.Limited
		if l.Errors > 0 {
			t.Errorf("node %s: %d invalidations failed otherwise than by the limit: %v", r.Node, l.Errors, l.FirstErrors)
		}
	}
	grants := srv.Stats().TokenGrants - before
	b.logf(t, "flood: %d invalidations from %d nodes in %v: %d grant(s), %d refused by the limit (%v)",
		total, floodNodes, floodFor, grants, limited, conf.DefaultForcedRefreshInterval)
	if grants != 1 {
		t.Errorf("%d forced grants in %v; want 1 (one per %v across the cluster)", grants, floodFor, conf.DefaultForcedRefreshInterval)
	}
}

// testPoison: before the nodes start, the store holds a record no WeChat
// grant can make — a far-future expiry (the year 2100) with any value, as a
// node whose clock runs far ahead or a stray script would leave. It is
// never served, and the first grant replaces it, whatever newer-wins would
// say; the nodes share that grant.
func testPoison(t *testing.T, b *bed) {
	srv := newFake(t)
	ns := b.namespace("poison")
	st := b.d.Open(t, ns)
	key := conf.Key(wechattest.DefaultAppID, conf.AccessToken)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	poison := store.Item{Value: "POISON", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := st.Set(ctx, key, poison); err != nil {
		t.Fatal(err)
	}
	cl := b.start(t, same(4, baseSpec(srv, ns))...)
	cs := calls(cl.all(command{Op: opGet, Callers: 4, Timeout: callTimeout}))
	cur := srv.CurrentToken(wechattest.DefaultAppID)
	for _, p := range verdict(cs, cur, callTimeout) {
		t.Error(p)
	}
	item, err := st.Get(ctx, key)
	g := srv.Stats().TokenGrants
	b.logf(t, "poison: %d callers got the granted token, %d grant(s); the store holds the grant: %v", len(cs), g, err == nil && item.Value == cur)
	if err != nil || item.Value != cur {
		t.Errorf("store holds %v, %v; want the granted token in place of the poison", item, err)
	}
	if g != 1 {
		t.Errorf("%d grants; want 1", g)
	}
}
