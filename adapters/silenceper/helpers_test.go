package silenceper_test

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/officialaccount"
	offconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/adapters/silenceper"
	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	appID  = wechattest.DefaultAppID
	secret = wechattest.DefaultAppSecret
)

// toFake sends requests for WeChat's API hosts to srv instead. silenceper
// hard-codes https://api.weixin.qq.com in its URLs; this sits under
// silenceper.Transport, as the network would, so the Transport sees the
// real host.
type toFake struct {
	base *url.URL
}

func newToFake(srv *wechattest.Server) toFake {
	u, err := url.Parse(srv.URL())
	if err != nil {
		panic(err)
	}
	return toFake{base: u}
}

func (f toFake) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme = f.base.Scheme
	r.URL.Host = f.base.Host
	r.Host = f.base.Host
	return http.DefaultTransport.RoundTrip(r)
}

// useClient points silenceper's util.DefaultHTTPClient at rt for the test.
// The variable is global: tests that call it do not run in parallel.
func useClient(t testing.TB, rt http.RoundTripper) {
	t.Helper()
	t.Cleanup(swapClient(rt))
}

// swapClient points util.DefaultHTTPClient at rt and returns what undoes it.
func swapClient(rt http.RoundTripper) func() {
	old := util.DefaultHTTPClient
	util.DefaultHTTPClient = &http.Client{Transport: rt, Timeout: 10 * time.Second}
	return func() { util.DefaultHTTPClient = old }
}

// newConf returns a Conf for the fake's default app on st.
func newConf(t testing.TB, srv *wechattest.Server, st store.Store, opts ...conf.Option) *conf.Conf {
	t.Helper()
	all := append([]conf.Option{
		conf.WithAppID(appID, secret),
		conf.WithStore(st),
		conf.WithBaseURLs(srv.URL()),
	}, opts...)
	c, err := conf.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newOA returns silenceper's OfficialAccount for the fake's app, on its own
// cache (which, with a Handle, it never uses for tokens).
func newOA(c cache.Cache) *officialaccount.OfficialAccount {
	if c == nil {
		c = newSharedCache()
	}
	return officialaccount.NewOfficialAccount(&offconfig.Config{AppID: appID, AppSecret: secret, Cache: c})
}

// adapted returns an OfficialAccount whose token and ticket come from h:
// the three lines of the README.
func adapted(h *silenceper.Handle) *officialaccount.OfficialAccount {
	oa := newOA(nil)
	oa.SetAccessTokenHandle(h)
	oa.GetJs().SetJsTicketHandle(h)
	// silenceper's getters build their value on first use without a lock
	// (a data race under -race): build the ones the tests share first.
	oa.GetBasic()
	return oa
}

// sharedCache is a cache.Cache safe for concurrent use, the stand-in for the
// Redis that old nodes share. (silenceper's cache.Memory reads its map
// without its lock, which -race reports.)
type sharedCache struct {
	mu sync.Mutex
	m  map[string]entry
}

type entry struct {
	v   any
	end time.Time
}

func newSharedCache() *sharedCache { return &sharedCache{m: map[string]entry{}} }

func (c *sharedCache) Get(key string) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || !time.Now().Before(e.end) {
		return nil
	}
	return e.v
}

func (c *sharedCache) Set(key string, val any, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[key] = entry{val, time.Now().Add(ttl)}
	return nil
}

func (c *sharedCache) IsExist(key string) bool { return c.Get(key) != nil }

func (c *sharedCache) Delete(key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
	return nil
}

// ttl returns how long key has left, or 0.
func (c *sharedCache) ttl(key string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		return time.Until(e.end)
	}
	return 0
}

// callbackIP makes the real API call silenceper users make.
func callbackIP(oa *officialaccount.OfficialAccount) error {
	ips, err := oa.GetBasic().GetCallbackIP()
	if err == nil && len(ips) == 0 {
		return errNoIPs
	}
	return err
}

type constErr string

func (e constErr) Error() string { return string(e) }

const errNoIPs = constErr("GetCallbackIP: empty ip_list")

var bg = context.Background()
