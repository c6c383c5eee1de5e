package silenceper_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/miniprogram"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	"github.com/silenceper/wechat/v2/officialaccount"

	"github.com/wechatconf/wechatconf/adapters/silenceper"
	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	nodes      = 4
	goroutines = 8
	pageURL    = "https://example.com/page?x=1"
)

// cluster is nodes goroutine nodes, each with its own Conf on one shared
// store (as processes on one Redis would be) and its own silenceper
// OfficialAccount on a Handle.
type cluster struct {
	confs   []*conf.Conf
	handles []*silenceper.Handle
	oas     []*officialaccount.OfficialAccount
}

func newCluster(t *testing.T, srv *wechattest.Server, opts ...conf.Option) *cluster {
	t.Helper()
	st := store.NewMemory()
	cl := &cluster{}
	for range nodes {
		c := newConf(t, srv, st, opts...)
		h := silenceper.New(c)
		cl.confs = append(cl.confs, c)
		cl.handles = append(cl.handles, h)
		cl.oas = append(cl.oas, adapted(h))
	}
	return cl
}

// each runs fn on every goroutine of every node at once and returns the
// errors.
func (cl *cluster) each(fn func(oa *officialaccount.OfficialAccount) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for _, oa := range cl.oas {
		for range goroutines {
			wg.Go(func() {
				<-start
				if err := fn(oa); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
	}
	close(start)
	wg.Wait()
	return errs
}

// callAndSign is one caller's work: a real API call and a signed JS config.
func callAndSign(oa *officialaccount.OfficialAccount) error {
	if err := callbackIP(oa); err != nil {
		return err
	}
	cfg, err := oa.GetJs().GetConfig(pageURL)
	if err != nil {
		return err
	}
	if cfg.Signature == "" {
		return fmt.Errorf("empty signature")
	}
	return nil
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	if len(errs) > 0 {
		t.Fatalf("%d of %d calls failed, first: %v", len(errs), nodes*goroutines, errs[0])
	}
}

// TestClusterOneGrantPerCycle: 4 nodes × 8 goroutines, each calling
// GetBasic().GetCallbackIP() and GetJs().GetConfig() through silenceper,
// over 3 token lifetimes: exactly one token and one ticket granted per
// cycle for the whole cluster, and every call works.
func TestClusterOneGrantPerCycle(t *testing.T) {
	const (
		life   = 4 * time.Second
		margin = 2 * time.Second // a copy goes stale 2 s after its grant
		cycles = 3
	)
	srv := wechattest.NewServer(wechattest.WithTokenTTL(life), wechattest.WithTicketTTL(life))
	t.Cleanup(srv.Close)
	cl := newCluster(t, srv, conf.WithMargin(margin), conf.WithRefreshSpread(0))
	useClient(t, silenceper.Transport(newToFake(srv), cl.handles...))

	for cycle := range cycles {
		before := srv.Stats()
		noErrors(t, cl.each(callAndSign))
		after := srv.Stats()
		tokens, tickets := after.TokenGrants-before.TokenGrants, after.JSAPITickets-before.JSAPITickets
		t.Logf("cycle %d: %d token grant(s), %d ticket grant(s) for %d callers", cycle, tokens, tickets, nodes*goroutines)
		if tokens != 1 || tickets != 1 {
			t.Fatalf("cycle %d: %d token and %d ticket grants, want 1 and 1", cycle, tokens, tickets)
		}
		if cycle < cycles-1 {
			time.Sleep(margin + 200*time.Millisecond) // every copy is stale now
		}
	}
	if s := srv.Stats(); s.Rejections != 0 {
		t.Errorf("%d rejections: a node used a dead token", s.Rejections)
	}
}

// TestRevocationTransport: WeChat revokes the token every node holds; the
// next call of every goroutine of every node meets 40001. Transport reports
// it compare-then-refresh: one grant for the whole cluster, and every call
// works.
func TestRevocationTransport(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	cl := newCluster(t, srv)
	useClient(t, silenceper.Transport(newToFake(srv), cl.handles...))
	noErrors(t, cl.each(callbackIP))
	if g := srv.Stats().TokenGrants; g != 1 {
		t.Fatalf("warm-up made %d grants, want 1", g)
	}

	srv.Revoke(appID)
	noErrors(t, cl.each(callbackIP))
	s := srv.Stats()
	t.Logf("after Revoke: %d rejections seen, %d grant(s) in total", s.Rejections, s.TokenGrants-1)
	if s.TokenGrants != 2 {
		t.Fatalf("%d grants after the revocation, want 1", s.TokenGrants-1)
	}
	if s.Rejections == 0 {
		t.Fatal("no call met the revoked token: the test proves nothing")
	}
	for i, c := range cl.confs {
		tok, err := c.AccessToken(bg)
		if err != nil || !srv.Valid(tok) {
			t.Errorf("node %d holds an invalid token (err %v)", i, err)
		}
	}
}

// TestRevocationDo is TestRevocationTransport with the calls wrapped in Do
// and a plain HTTP client.
func TestRevocationDo(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	cl := newCluster(t, srv)
	useClient(t, newToFake(srv))
	handle := make(map[*officialaccount.OfficialAccount]*silenceper.Handle)
	for i, oa := range cl.oas {
		handle[oa] = cl.handles[i]
	}
	call := func(oa *officialaccount.OfficialAccount) error {
		return silenceper.Do(bg, handle[oa], func() error { return callbackIP(oa) })
	}
	noErrors(t, cl.each(call))

	srv.Revoke(appID)
	noErrors(t, cl.each(call))
	if s := srv.Stats(); s.TokenGrants != 2 || s.Rejections == 0 {
		t.Fatalf("%d grants after the revocation (want 1), %d rejections (want some)", s.TokenGrants-1, s.Rejections)
	}
}

// TestRevocationUnreported is the control: a Handle without Transport or
// Do. The rejection reaches the caller and nothing else; the Conf keeps
// the dead token until it expires, as silenceper's own cache does.
func TestRevocationUnreported(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	cl := newCluster(t, srv)
	useClient(t, newToFake(srv))
	noErrors(t, cl.each(callbackIP))
	srv.Revoke(appID)
	errs := cl.each(callbackIP)
	if len(errs) != nodes*goroutines || !silenceper.IsRejected(errs[0]) {
		t.Fatalf("%d of %d calls failed (want all, rejected), first: %v", len(errs), nodes*goroutines, errs)
	}
}

// TestJSConfigVerifies: GetJs().GetConfig through the Handle signs with the
// Conf's ticket, and the signature checks out when computed independently.
func TestJSConfigVerifies(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	c := newConf(t, srv, store.NewMemory())
	h := silenceper.New(c)
	useClient(t, silenceper.Transport(newToFake(srv), h))
	oa := adapted(h)

	cfg, err := oa.GetJs().GetConfig(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	ticket, err := c.JSAPITicket(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !srv.ValidTicket(ticket) {
		t.Fatal("the Conf's ticket is not valid")
	}
	plain := "jsapi_ticket=" + ticket + "&noncestr=" + cfg.NonceStr +
		"&timestamp=" + fmt.Sprint(cfg.Timestamp) + "&url=" + pageURL
	sum := sha1.Sum([]byte(plain))
	if want := hex.EncodeToString(sum[:]); cfg.Signature != want {
		t.Fatalf("signature %s, want %s", cfg.Signature, want)
	}
	if cfg.AppID != appID || len(cfg.NonceStr) != 16 || time.Since(time.Unix(cfg.Timestamp, 0)) > time.Minute {
		t.Fatalf("config %+v", cfg)
	}
	if s := srv.Stats(); s.TokenGrants != 1 || s.JSAPITickets != 1 {
		t.Fatalf("%d token and %d ticket grants, want 1 and 1", s.TokenGrants, s.JSAPITickets)
	}
}

// TestMiniProgram: a Mini Program on a Handle gets the Conf's token.
func TestMiniProgram(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	c := newConf(t, srv, store.NewMemory())
	h := silenceper.New(c)
	for name, set := range map[string]func(*miniprogram.MiniProgram){
		"SetAccessTokenHandle":        func(mp *miniprogram.MiniProgram) { mp.SetAccessTokenHandle(h) },
		"SetAccessTokenContextHandle": func(mp *miniprogram.MiniProgram) { mp.SetAccessTokenContextHandle(h) },
	} {
		mp := miniprogram.NewMiniProgram(&mpconfig.Config{AppID: appID, AppSecret: secret, Cache: newSharedCache()})
		set(mp)
		got, err := mp.GetContext().GetAccessTokenContext(bg)
		want, _ := c.AccessToken(bg)
		if err != nil || got != want || !srv.Valid(got) {
			t.Errorf("%s: token %q, %v; want the Conf's", name, got, err)
		}
	}
	if g := srv.Stats().TokenGrants; g != 1 {
		t.Fatalf("%d grants, want 1", g)
	}
}

// TestHandleHotPath: a fresh token costs no allocation.
func TestHandleHotPath(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	h := silenceper.New(newConf(t, srv, store.NewMemory()))
	if _, err := h.GetAccessTokenContext(bg); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = h.GetAccessTokenContext(bg) }); n != 0 {
		t.Fatalf("%v allocations per call, want 0", n)
	}
}

func BenchmarkHandleAccessToken(b *testing.B) {
	srv := wechattest.NewServer()
	b.Cleanup(srv.Close)
	h := silenceper.New(newConf(b, srv, store.NewMemory()))
	if _, err := h.GetAccessTokenContext(bg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.GetAccessTokenContext(bg); err != nil {
			b.Fatal(err)
		}
	}
	if g := srv.Stats().TokenGrants; g != 1 {
		b.Fatalf("%d grants, want 1", g)
	}
}

// The Handle is what silenceper asks for.
var (
	_ credential.AccessTokenContextHandle = (*silenceper.Handle)(nil)
	_ credential.JsTicketContextHandle    = (*silenceper.Handle)(nil)
	_ http.RoundTripper                   = silenceper.Transport(nil)
)

// TestTokenServerNode: a business node whose Conf gets its credentials from
// a token server (WithRefreshFunc and WithInvalidateFunc, what tokenclient's
// ConfOptions sets; here the "server" is another Conf) works behind a Handle
// too, and a rejection seen through Transport reaches the server: one grant.
func TestTokenServerNode(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	server := newConf(t, srv, store.NewMemory())
	var invalidations int
	var mu sync.Mutex
	node, err := conf.New(
		conf.WithAppID(appID, ""),
		conf.WithRefreshFunc(conf.AccessToken, func(ctx context.Context) (store.Item, error) {
			return server.GetAccessToken(ctx)
		}),
		conf.WithInvalidateFunc(conf.AccessToken, func(ctx context.Context, rejected string) (store.Item, error) {
			mu.Lock()
			invalidations++
			mu.Unlock()
			if _, err := server.Invalidate(ctx, conf.AccessToken, rejected); err != nil {
				return store.Item{}, err
			}
			return server.GetAccessToken(ctx)
		}),
		conf.WithRefreshFunc(conf.JSAPITicket, func(ctx context.Context) (store.Item, error) {
			return server.GetJSAPITicket(ctx)
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	h := silenceper.New(node)
	useClient(t, silenceper.Transport(newToFake(srv), h))
	oa := adapted(h)
	if err := callAndSign(oa); err != nil {
		t.Fatal(err)
	}
	srv.Revoke(appID)
	if err := callbackIP(oa); err != nil {
		t.Fatal(err)
	}
	if s := srv.Stats(); s.TokenGrants != 2 || s.Rejections != 1 || invalidations != 1 {
		t.Fatalf("%d grants (want 2), %d rejections (want 1), %d reports to the server (want 1)", s.TokenGrants, s.Rejections, invalidations)
	}
}
