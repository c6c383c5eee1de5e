package cluster

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	outageNodes   = 4
	outageCallers = 4
	outageEvery   = 25 * time.Millisecond
	// outageTTL is the token lifetime. During an outage a node serves its
	// copy until 10 s before it expires (conf's safety bound), then grants
	// once without the lease; the TTL is well above twice that so that
	// "at most one grant per cycle per process" is what the engine owes.
	outageTTL    = 24 * time.Second
	outageMargin = 2 * time.Second
	outageReread = time.Second
	outageLease  = 3 * time.Second
	// outageCall bounds each call; it is above the store clients' own
	// timeouts, so that a caller served from the local copy never fails
	// because the store hangs rather than refuses.
	outageCall = 15 * time.Second
	// convergeBound bounds how long after the restart the nodes may take
	// to agree on one token again: a few re-read intervals plus the slack
	// of a loaded machine. A deadline, not a speed requirement.
	convergeBound = 5*outageReread + 15*time.Second
)

// testOutage: nodes call AccessToken continuously while the backend's
// container is stopped, stays down past the expiry of the token they held,
// and is started again. No caller may see an error or an expired token;
// the grants made during the outage are at most one per cycle per process
// (counted at WeChat); after the restart every node converges on one token
// that the store holds and WeChat accepts.
func testOutage(t *testing.T, b *bed) {
	srv := newFake(t, wechattest.WithTokenTTL(outageTTL))
	ns := b.namespace("outage")
	spec := baseSpec(srv, ns)
	spec.Margin, spec.Reread, spec.LeaseTTL = outageMargin, outageReread, outageLease
	cl := b.start(t, same(outageNodes, spec)...)
	st := b.d.Open(t, ns)
	key := conf.Key(wechattest.DefaultAppID, conf.AccessToken)
	peek := func() []call { return calls(cl.all(command{Op: opGet, Callers: 1, Timeout: outageCall})) }

	cl.all(command{Op: opLoad, Callers: outageCallers, Every: outageEvery, Timeout: outageCall})

	held := peek()
	tok0 := srv.CurrentToken(wechattest.DefaultAppID)
	for _, p := range verdict(held, tok0, outageCall) {
		t.Fatalf("before the outage: %s", p)
	}
	if g := srv.Stats().TokenGrants; g != 1 {
		t.Fatalf("before the outage: %d grants, want 1", g)
	}
	exp0 := latest(held)

	// The outage: down until the token every node held has expired.
	before := srv.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stopped := time.Now()
	if err := b.d.Server.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b.logf(t, "outage: container stopped; down until the token every node held has expired (%v)", time.Until(exp0).Round(time.Second))
	time.Sleep(time.Until(exp0) + time.Second)
	if err := b.d.Server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	during := srv.Stats()
	outage := started.Sub(stopped)
	cycles := int(math.Ceil(float64(outage) / float64(outageTTL)))
	// Grants without the lease ask for the stable token: count both kinds.
	grants := during.TokenGrants + during.StableTokenGrants - before.TokenGrants - before.StableTokenGrants
	b.logf(t, "outage: %v down (%d cycle(s) of %v): %d grant(s) at WeChat for %d processes",
		outage.Round(time.Millisecond), cycles, outageTTL, grants, outageNodes)
	if grants > outageNodes*cycles {
		t.Errorf("%d grants during the outage, more than one per cycle per process (%d processes × %d cycle(s))",
			grants, outageNodes, cycles)
	}

	// After the restart: one token everywhere, the store's, accepted.
	converge(t, b, "outage", srv, st, key, peek, outageCall, started)
	after := srv.Stats()
	b.logf(t, "outage: %d grant(s) since the restart", after.TokenGrants-during.TokenGrants)
	if g := after.TokenGrants - during.TokenGrants; g > 1 {
		t.Errorf("%d grants while converging after the restart, want at most 1", g)
	}

	// What the callers saw, node by node.
	for _, r := range cl.all(command{Op: opUnload}) {
		l := r.Load
		own := grantsBetween(r.Events, stopped, started)
		b.logf(t, "outage: node %s: %d calls, %d errors, %d expired, %d grant(s) during the outage, %d store errors, %d loads",
			r.Node, l.Calls, l.Errors, l.Expired, own, r.Events.StoreErrors, r.Events.Loaded)
		if l.Calls == 0 {
			t.Errorf("node %s: the load made no call", r.Node)
		}
		if l.Errors > 0 {
			t.Errorf("node %s: %d callers saw an error: %v", r.Node, l.Errors, l.FirstErrors)
		}
		if l.Expired > 0 {
			t.Errorf("node %s: %d calls returned an expired token", r.Node, l.Expired)
		}
		if own > cycles {
			t.Errorf("node %s granted %d times during the outage, more than once per cycle (%d)", r.Node, own, cycles)
		}
		if own == 0 {
			t.Errorf("node %s never granted during the outage, though the token it held expired then", r.Node)
		}
	}
}

// converge waits until every node serves the token the store holds and
// WeChat accepts it, failing the test past convergeBound after started.
func converge(t *testing.T, b *bed, suite string, srv *wechattest.Server, st store.Store, key string, peek func() []call, callBound time.Duration, started time.Time) {
	t.Helper()
	var last []call
	ctx, cancel := context.WithTimeout(context.Background(), convergeBound)
	defer cancel()
	converged := eventually(ctx, 250*time.Millisecond, func() bool {
		last = peek()
		item, err := st.Get(ctx, key)
		return err == nil && len(verdict(last, item.Value, callBound)) == 0 && srv.Valid(item.Value)
	})
	if !converged {
		item, err := st.Get(context.Background(), key)
		t.Errorf("nodes did not converge on the store's token within %v of the restart (store: %v, %v): %v",
			convergeBound, item, err, verdict(last, item.Value, callBound))
		return
	}
	b.logf(t, "%s: nodes converged on one token %v after the restart", suite, time.Since(started).Round(time.Millisecond))
}
