package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	wcNodesPerApp = 4
	wcCallers     = 16
	wcCycles      = 3
	// WeCom's gettoken returns the same token while it is valid, so a
	// new one can only be had once the old has expired: each cycle
	// starts wcLate after the expiry.
	wcTTL    = 12 * time.Second
	wcMargin = 4 * time.Second
	wcLate   = 500 * time.Millisecond
	wcAgentA = int64(1000002)
	wcAgentB = int64(1000003)
	wcSecA   = "wEc0mClusterAppAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	wcSecB   = "wEc0mClusterAppBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
)

// testWeCom: two WeCom apps of one corp, wcNodesPerApp processes each, on
// one store. Every cycle makes exactly one new token per app at WeCom (the
// peers' SDKs keyed the token by CorpID alone: two apps overwrote each
// other's), every caller gets its own app's token, which WeCom accepts for
// that app (no 301002); then one app's token is revoked early and every
// caller of that app retries through wecom.Do: one grant for that app,
// none for the other.
func testWeCom(t *testing.T, b *bed) {
	srv := wechattest.NewWeComServer(
		wechattest.WithCorpApp(wechattest.DefaultCorpID, wcAgentA, wcSecA),
		wechattest.WithCorpApp(wechattest.DefaultCorpID, wcAgentB, wcSecB),
		wechattest.WithWeComTokenTTL(wcTTL),
	)
	t.Cleanup(srv.Close)
	ns := b.namespace("wecom")
	spec := func(agent int64, secret string) nodeSpec {
		return nodeSpec{Namespace: ns, APIBase: srv.URL(), CorpID: wechattest.DefaultCorpID, AgentID: agent, Secret: secret,
			Margin: wcMargin, LeaseTTL: 5 * time.Second, NoSpread: true}
	}
	specs := append(same(wcNodesPerApp, spec(wcAgentA, wcSecA)), same(wcNodesPerApp, spec(wcAgentB, wcSecB))...)
	for i := range specs {
		specs[i].Name = fmt.Sprintf("n%d", i)
	}
	cl := b.start(t, specs...)
	appA, appB := cl.nodes[:wcNodesPerApp], cl.nodes[wcNodesPerApp:]

	var expiry time.Time
	for cycle := 0; cycle <= wcCycles; cycle++ {
		name := "cold start"
		if cycle > 0 {
			name = fmt.Sprintf("cycle %d", cycle)
			time.Sleep(time.Until(expiry) + wcLate)
		}
		before := srv.Stats()
		ra := calls(cl.run(appA, command{Op: opGet, Callers: wcCallers, Timeout: callTimeout}))
		rb := calls(cl.run(appB, command{Op: opGet, Callers: wcCallers, Timeout: callTimeout}))
		after := srv.Stats()
		curA, curB := srv.CurrentToken(wechattest.DefaultCorpID, wcSecA), srv.CurrentToken(wechattest.DefaultCorpID, wcSecB)
		grants := after.TokenGrants - before.TokenGrants
		b.logf(t, "wecom %s: %d new token(s) for 2 apps, %d repeat gettoken answer(s), %d callers on %d nodes",
			name, grants, after.TokenRepeats-before.TokenRepeats, len(ra)+len(rb), len(cl.nodes))
		if grants != 2 {
			t.Errorf("%s: %d new tokens at WeCom; want exactly 1 per app (2)", name, grants)
		}
		for _, p := range verdict(ra, curA, callTimeout) {
			t.Errorf("%s: app A: %s", name, p)
		}
		for _, p := range verdict(rb, curB, callTimeout) {
			t.Errorf("%s: app B: %s", name, p)
		}
		if curA == curB || !srv.Valid(curA) || !srv.Valid(curB) {
			t.Errorf("%s: the apps' tokens are not two valid distinct ones", name)
		}
		if t.Failed() {
			return
		}
		expiry = latest(append(ra, rb...))
	}

	// An early revocation of app A's token.
	srv.RevokeAgent(wechattest.DefaultCorpID, wcAgentA)
	before := srv.Stats()
	id := cl.post(appA, command{Op: opDo, Callers: 4, Timeout: callTimeout})
	cl.collect(appA, id, opHolding, callTimeout+replySlack)
	cl.post(appA, command{Op: opRelease})
	replies := cl.collect(appA, id, opDo, callTimeout+replySlack)
	after := srv.Stats()
	cur := srv.CurrentToken(wechattest.DefaultCorpID, wcSecA)
	b.logf(t, "wecom revocation: %d new token(s), %d rejected calls", after.TokenGrants-before.TokenGrants, after.Rejections-before.Rejections)
	if g := after.TokenGrants - before.TokenGrants; g != 1 {
		t.Errorf("%d new tokens after app A's revocation; want 1", g)
	}
	for _, r := range replies {
		for i, c := range r.Calls {
			if len(c.Codes) == 0 || c.Codes[len(c.Codes)-1] != 0 || c.Seen[len(c.Seen)-1] != cur {
				t.Errorf("node %s caller %d: codes %v; want the last call accepted with the new token", r.Node, i, c.Codes)
			}
		}
	}
}
