package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/secret"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	invNodes   = 4
	invCallers = 16
)

// testInvalidation: every caller of every node holds the token (a barrier
// across the processes makes sure none reports it before all hold it);
// WeChat revokes it; each caller's protected call through conf.Do gets
// 40001. Compare-then-refresh must make exactly one grant in all, and each
// caller's fn must run exactly twice: once with the revoked token, once
// with the single new one, which WeChat accepts.
func testInvalidation(t *testing.T, b *bed) {
	srv := newFake(t)
	cl := b.start(t, same(invNodes, baseSpec(srv, b.namespace("inv")))...)

	warm := calls(cl.all(command{Op: opGet, Callers: 1, Timeout: callTimeout}))
	old := srv.CurrentToken(wechattest.DefaultAppID)
	for _, p := range verdict(warm, old, callTimeout) {
		t.Fatalf("warm-up: %s", p)
	}
	if g := srv.Stats().TokenGrants; g != 1 {
		t.Fatalf("warm-up: %d grants, want 1", g)
	}

	id := cl.post(cl.nodes, command{Op: opDo, Callers: invCallers, Timeout: callTimeout})
	cl.collect(cl.nodes, id, opHolding, callTimeout+replySlack)
	before := srv.Stats()
	srv.Revoke(wechattest.DefaultAppID)
	cl.post(cl.nodes, command{Op: opRelease})
	replies := cl.collect(cl.nodes, id, opDo, callTimeout+replySlack)
	after := srv.Stats()

	grants := after.TokenGrants - before.TokenGrants
	rejected := after.Rejections - before.Rejections
	cur := srv.CurrentToken(wechattest.DefaultAppID)
	cs := calls(replies)
	p50, p99, top := waits(cs)
	b.logf(t, "invalidation: %d callers on %d nodes: %d grant(s), %d rejected calls, wait p50=%v p99=%v max=%v",
		len(cs), len(replies), grants, rejected, p50.Round(time.Microsecond), p99.Round(time.Microsecond), top.Round(time.Microsecond))

	if grants != 1 {
		t.Errorf("%d grants after the revocation, want exactly 1 (by node: %s)", grants, grantsByNode(replies))
	}
	if rejected != len(cs) {
		t.Errorf("WeChat rejected %d calls, want %d: one per caller, with the revoked token", rejected, len(cs))
	}
	if cur == old {
		t.Fatal("no new token at WeChat")
	}
	if !srv.Valid(cur) {
		t.Error("WeChat does not accept the new token")
	}
	var bad []string
	for _, r := range replies {
		for i, c := range r.Calls {
			if p := checkRetry(c, old, cur); p != "" && len(bad) < 10 {
				bad = append(bad, fmt.Sprintf("node %s caller %d: %s", r.Node, i, p))
			}
		}
	}
	for _, p := range bad {
		t.Error(p)
	}
}

// checkRetry says what is wrong with one caller of conf.Do, or "" when fn
// ran exactly twice: with the revoked token (40001), then with the new one
// (accepted).
func checkRetry(c call, old, cur string) string {
	if c.Err != "" {
		return "Do failed: " + c.Err
	}
	if len(c.Seen) != 2 {
		return fmt.Sprintf("fn ran %d times, want 2 (errcodes %v)", len(c.Seen), c.Codes)
	}
	if c.Seen[0] != old {
		return "fn's first call did not get the token every node held"
	}
	if c.Seen[1] != cur {
		return fmt.Sprintf("fn's retry got %s, not the one new token %s", secret.Redact(c.Seen[1]), secret.Redact(cur))
	}
	if len(c.Codes) != 2 || c.Codes[0] != wechattest.CodeInvalidCredential || c.Codes[1] != 0 {
		return fmt.Sprintf("errcodes %v, want [%d 0]", c.Codes, wechattest.CodeInvalidCredential)
	}
	return ""
}
