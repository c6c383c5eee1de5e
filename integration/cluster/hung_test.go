package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	hungNodes   = 2
	hungCallers = 4
	hungEvery   = 10 * time.Millisecond
	hungTTL     = 40 * time.Second
	hungMargin  = 15 * time.Second
	hungPause   = 10 * time.Second
)

// testHung is item 4 of issue #10: the store hangs (its container frozen,
// as SIGSTOP does) across the moment the nodes' token passes its margin,
// while the token stays valid. Before, past the margin a local copy was no
// longer served and requests waited for the store client's retries (up to
// 10 s). Now every store call is bounded and a valid copy is served while
// the refresh waits: no error, no caller waiting anywhere near the store
// bound (conf.DefaultStoreTimeout), and one grant once the store thaws.
func testHung(t *testing.T, b *bed) {
	srv := newFake(t, wechattest.WithTokenTTL(hungTTL))
	ns := b.namespace("hung")
	spec := baseSpec(srv, ns)
	spec.Margin, spec.Reread = hungMargin, time.Second
	cl := b.start(t, same(hungNodes, spec)...)
	held := calls(cl.all(command{Op: opGet, Callers: 1}))
	for _, p := range verdict(held, srv.CurrentToken(wechattest.DefaultAppID), time.Minute) {
		t.Fatalf("before: %s", p)
	}
	stale := latest(held).Add(-hungMargin)
	cl.all(command{Op: opLoad, Callers: hungCallers, Every: hungEvery, Timeout: time.Minute})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	time.Sleep(time.Until(stale.Add(-hungPause / 2)))
	if err := b.d.Server.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	time.Sleep(hungPause)
	if err := b.d.Server.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	b.logf(t, "hung: store frozen %v across the margin (at %v into the pause); the token stays valid %v after",
		time.Since(paused).Round(time.Millisecond), stale.Sub(paused).Round(time.Millisecond), time.Until(latest(held)).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // the refresh after the thaw
	grants := srv.Stats().TokenGrants + srv.Stats().StableTokenGrants
	for _, r := range cl.all(command{Op: opUnload}) {
		l := r.Load
		b.logf(t, "hung: node %s: %d calls, %d errors, %d expired, worst call %v, %d store errors",
			r.Node, l.Calls, l.Errors, l.Expired, l.Worst.Round(time.Microsecond), r.Events.StoreErrors)
		if l.Errors > 0 || l.Expired > 0 {
			t.Errorf("node %s: %d errors, %d expired tokens: %v", r.Node, l.Errors, l.Expired, l.FirstErrors)
		}
		if l.Worst >= conf.DefaultStoreTimeout {
			t.Errorf("node %s: a caller waited %v, as long as a store call may take: callers waited for the hung store", r.Node, l.Worst)
		}
	}
	b.logf(t, "hung: %d grant(s) in all", grants)
	if grants != 2 {
		t.Errorf("%d grants; want 2 (the first, and one refresh after the thaw)", grants)
	}
}
