package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	bizNodes   = 3
	bizCallers = 8
	// bizReread is the business nodes' re-read interval: how soon they
	// must see a grant made elsewhere.
	bizReread = time.Second
	// bizEmptyWait bounds the calls made while the store is still empty;
	// they must fail, not grant.
	bizEmptyWait = 1500 * time.Millisecond
	// bizSlack bounds, beyond the re-read interval, how long the parent
	// polls for the new token: a deadline, not a speed requirement.
	bizSlack = 10 * time.Second
)

// testRefreshOnly: one server node that grants and bizNodes business nodes
// (WithRefreshOnly) that must never grant, not even when the store is
// empty; they take the server node's token from the store, and see a grant
// forced on the server node within their re-read interval.
func testRefreshOnly(t *testing.T, b *bed) {
	srv := newFake(t)
	server := baseSpec(srv, b.namespace("ro"))
	server.Name = "server"
	biz := server
	biz.Name, biz.RefreshOnly, biz.Reread = "", true, bizReread
	cl := b.start(t, append([]nodeSpec{server}, same(bizNodes, biz)...)...)
	sn, bn := cl.nodes[:1], cl.nodes[1:]

	// 1. Nothing in the store: business callers give up at their ctx and
	// WeChat sees no grant.
	empty := calls(cl.run(bn, command{Op: opGet, Callers: bizCallers, Timeout: bizEmptyWait}))
	for _, c := range empty {
		if c.Err == "" {
			t.Fatalf("a business node's caller got a token while the store was empty and no server node had granted")
		}
	}
	if g := srv.Stats().TokenGrants; g != 0 {
		t.Fatalf("%d grants while only business nodes asked, want 0", g)
	}

	// 2. The server node grants; the business nodes load its token.
	first := calls(cl.run(sn, command{Op: opGet, Callers: 1, Timeout: callTimeout}))
	tok1 := srv.CurrentToken(wechattest.DefaultAppID)
	loaded := calls(cl.run(bn, command{Op: opGet, Callers: bizCallers, Timeout: callTimeout}))
	for _, p := range verdict(append(first, loaded...), tok1, callTimeout) {
		t.Fatalf("after the server node's grant: %s", p)
	}

	// 3. A forced grant on the server node; the business nodes must see
	// it by their next re-read.
	forced := cl.run(sn, command{Op: opGrant, Timeout: callTimeout})
	tok2 := forced[0].Calls[0].Token
	granted := time.Now()
	if tok2 == tok1 || tok2 != srv.CurrentToken(wechattest.DefaultAppID) {
		t.Fatal("the forced grant did not return WeChat's new token")
	}
	bound := bizReread + bizSlack
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var lastSeen []call
	seen := eventually(ctx, 50*time.Millisecond, func() bool {
		lastSeen = calls(cl.run(bn, command{Op: opGet, Callers: 1, Timeout: callTimeout}))
		return len(verdict(lastSeen, tok2, 0)) == 0
	})
	after := time.Since(granted)
	if !seen {
		t.Fatalf("business nodes still serve another token %v after the forced grant (re-read interval %v): %v",
			after, bizReread, verdict(lastSeen, tok2, 0))
	}
	b.logf(t, "refresh-only: business nodes saw the forced grant %v after it (re-read interval %v)", after.Round(time.Millisecond), bizReread)
	final := cl.run(bn, command{Op: opGet, Callers: bizCallers, Timeout: callTimeout})
	for _, p := range verdict(calls(final), tok2, callTimeout) {
		t.Error(p)
	}
	if !srv.Valid(tok2) {
		t.Error("WeChat does not accept the forced token")
	}

	// Only the server node ever granted.
	if g := srv.Stats().TokenGrants; g != 2 {
		t.Errorf("%d grants at WeChat, want 2, both the server node's", g)
	}
	for _, r := range final {
		if n := len(r.Events.Granted); n != 0 {
			t.Errorf("business node %s granted %d times", r.Node, n)
		}
	}
	b.logf(t, "refresh-only: grants by node: %s", grantsByNode(append(forced, final...)))
}
