package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	rejNodes   = 8
	rejCallers = 2
	rejEvery   = 50 * time.Millisecond
	rejOutage  = 60 * time.Second
	// rejCall bounds each protected call (its refresh and retry included).
	rejCall = 20 * time.Second
)

// testOutageRejections is the grant storm of issue #10: 8 processes call a
// protected WeChat API through conf.Do while the store is down for 60 s, and
// two grants are made behind their back during the outage, each killing the
// token the nodes share at once (no grace). Before, every rejection entered
// the lease-less grant path again and each such grant killed another node's
// token: hundreds of grants, hundreds of failed calls. Now each process
// grants at most once without the lease, and asks for the stable token,
// which all get alike and which no classic grant kills: at most 8 grants in
// all (the aim is 1), no call failing after its retry, and one token
// everywhere within seconds of the store's return.
func testOutageRejections(t *testing.T, b *bed) {
	srv := newFake(t, wechattest.WithGrace(0))
	ns := b.namespace("outage-rejections")
	spec := baseSpec(srv, ns)
	spec.Reread = time.Second
	cl := b.start(t, same(rejNodes, spec)...)
	st := b.d.Open(t, ns)
	key := conf.Key(wechattest.DefaultAppID, conf.AccessToken)
	peek := func() []call { return calls(cl.all(command{Op: opGet, Callers: 1, Timeout: rejCall})) }

	for _, p := range verdict(peek(), srv.CurrentToken(wechattest.DefaultAppID), rejCall) {
		t.Fatalf("before the outage: %s", p)
	}
	cl.all(command{Op: opLoad, Callers: rejCallers, Every: rejEvery, Timeout: rejCall, Protected: true})
	before := srv.Stats()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stopped := time.Now()
	if err := b.d.Server.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(rejOutage / 6)
	srv.GrantElsewhere(wechattest.DefaultAppID)
	time.Sleep(rejOutage / 3)
	srv.GrantElsewhere(wechattest.DefaultAppID)
	time.Sleep(time.Until(stopped.Add(rejOutage)))
	during := srv.Stats()
	if err := b.d.Server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	grants := during.TokenGrants + during.StableTokenGrants - before.TokenGrants - before.StableTokenGrants
	b.logf(t, "outage-rejections: store down %v, 2 grants behind the back: %d grant(s) at WeChat for %d processes (classic %d, stable %d, forced %d), %d rejections",
		started.Sub(stopped).Round(time.Millisecond), grants, rejNodes,
		during.TokenGrants-before.TokenGrants, during.StableTokenGrants-before.StableTokenGrants,
		during.StableTokenForced-before.StableTokenForced, during.Rejections-before.Rejections)
	if grants > rejNodes {
		t.Errorf("%d grants during the outage; want at most one per process (%d)", grants, rejNodes)
	}
	if f := during.StableTokenForced - before.StableTokenForced; f != 0 {
		t.Errorf("%d forced stable refreshes without the lease; want none", f)
	}

	converge(t, b, "outage-rejections", srv, st, key, peek, rejCall, started)

	for _, r := range cl.all(command{Op: opUnload}) {
		l := r.Load
		b.logf(t, "outage-rejections: node %s: %d protected calls, %d failed after their retry, %d grant(s) during the outage, %d invalidations",
			r.Node, l.Calls, l.Errors, grantsBetween(r.Events, stopped, started), r.Events.Invalidated)
		if l.Calls == 0 {
			t.Errorf("node %s: the load made no call", r.Node)
		}
		if l.Errors > 0 {
			t.Errorf("node %s: %d calls failed after their retry: %v", r.Node, l.Errors, l.FirstErrors)
		}
		if own := grantsBetween(r.Events, stopped, started); own > 1 {
			t.Errorf("node %s granted %d times without the lease; want at most 1", r.Node, own)
		}
	}
}
