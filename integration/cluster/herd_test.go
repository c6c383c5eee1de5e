package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/wechattest"
)

// The herd: every node's copy goes stale at the same instant and every
// caller of every node asks at once.
const (
	herdNodes   = 8
	herdCallers = 32
	herdCycles  = 5 // forced expiry cycles after the cold start
	// A short-lived token with a margin: a copy goes stale herdTTL -
	// herdMargin after its grant, while WeChat still accepts it.
	herdTTL    = 6 * time.Second
	herdMargin = 3 * time.Second
	// herdLate: how long after the copies went stale a cycle starts, so
	// that every node's stale timer has fired even on a loaded machine.
	// The old token then still has herdMargin - herdLate to live, so a
	// node that served it anyway would be caught by the token comparison,
	// not by WeChat.
	herdLate    = 800 * time.Millisecond
	callTimeout = 20 * time.Second
)

// testHerd: herdNodes nodes × herdCallers goroutines on one store, a cold
// start and herdCycles cycles each started once the token went stale.
// Every cycle must make exactly one grant at WeChat, and every caller must
// get that token, accepted by WeChat, with no error and within its ctx.
func testHerd(t *testing.T, b *bed) {
	srv := newFake(t, wechattest.WithTokenTTL(herdTTL))
	spec := baseSpec(srv, b.namespace("herd"))
	spec.Margin = herdMargin
	spec.LeaseTTL = 5 * time.Second
	spec.NoSpread = true // every copy stale at once: the worst herd
	cl := b.start(t, same(herdNodes, spec)...)

	var staleAt time.Time
	for cycle := 0; cycle <= herdCycles; cycle++ {
		name := "cold start"
		if cycle > 0 {
			name = fmt.Sprintf("cycle %d", cycle)
			time.Sleep(time.Until(staleAt) + herdLate)
		}
		before := srv.Stats()
		replies := cl.all(command{Op: opGet, Callers: herdCallers, Timeout: callTimeout})
		grants := srv.Stats().TokenGrants - before.TokenGrants
		cur := srv.CurrentToken(wechattest.DefaultAppID)
		cs := calls(replies)
		p50, p99, top := waits(cs)
		b.logf(t, "herd %s: %d grant(s), %d callers on %d nodes, wait p50=%v p99=%v max=%v",
			name, grants, len(cs), len(replies), p50.Round(time.Microsecond), p99.Round(time.Microsecond), top.Round(time.Microsecond))

		if grants != 1 {
			t.Errorf("%s: %d grants at WeChat, want exactly 1 (grants by node: %s)", name, grants, grantsByNode(replies))
		}
		for _, p := range verdict(cs, cur, callTimeout) {
			t.Errorf("%s: %s", name, p)
		}
		if !srv.Valid(cur) {
			t.Errorf("%s: WeChat does not accept the token the callers got", name)
		}
		if t.Failed() {
			return // the next cycles would only repeat the failure
		}
		staleAt = latest(cs).Add(-herdMargin)
	}
}

// grantsByNode lists how many grants each node reported so far.
func grantsByNode(replies []reply) string {
	parts := make([]string, len(replies))
	for i, r := range replies {
		parts[i] = fmt.Sprintf("%s=%d", r.Node, len(r.Events.Granted))
	}
	return strings.Join(parts, " ")
}
