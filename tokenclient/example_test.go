package tokenclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

// A business node that never holds the AppSecret: its Conf gets every
// credential from the token servers, tried in order, and reports WeChat's
// rejections to them.
func Example() {
	tok1, tok2, stop := startTokenServers() // `wechatconf serve`, twice
	defer stop()

	tc, err := tokenclient.New(tokenclient.Config{
		URLs: []string{tok1, tok2},
		Key:  "test-server-key-0123456789abcdef", // serve's --key
	})
	if err != nil {
		panic(err)
	}
	c, err := conf.New(append(tc.ConfOptions(), conf.WithAppID(wechattest.DefaultAppID, ""))...)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ctx := context.Background()
	tok, err := c.AccessToken(ctx) // from the servers, then from the local copy
	if err != nil {
		panic(err)
	}
	cfg, err := c.JSConfig(ctx, "https://example.com/page") // wx.config, signed with the ticket from the servers
	if err != nil {
		panic(err)
	}
	fmt.Println(tok != "", cfg.Signature != "")
	// Output: true true
}

// startTokenServers starts two token servers of the protocol over one
// granting Conf and a fake WeChat, and returns their URLs.
func startTokenServers() (string, string, func()) {
	fake := wechattest.NewServer()
	sc, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithBaseURLs(fake.URL()), conf.WithHTTPClient(fake.Client()))
	if err != nil {
		panic(err)
	}
	a := httptest.NewServer(&tokenServer{conf: sc, key: testKey})
	b := httptest.NewServer(&tokenServer{conf: sc, key: testKey})
	return a.URL, b.URL, func() { a.Close(); b.Close(); sc.Close(); fake.Close() }
}

// A server with several apps (`wechatconf serve --config FILE`): Config.App
// names the node's app, and every request goes to /v1/apps/shop/...
func Example_app() {
	tok, stop := startAppsServer()
	defer stop()

	tc, err := tokenclient.New(tokenclient.Config{
		URLs: []string{tok},
		Key:  shopKey, // a key the configuration allows for "shop"
		App:  "shop",  // the app's id in the configuration file
	})
	if err != nil {
		panic(err)
	}
	c, err := conf.New(append(tc.ConfOptions(), conf.WithAppID(wechattest.DefaultAppID, ""))...)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	t, err := c.AccessToken(context.Background())
	fmt.Println(t != "", err)

	// The same key for an app it is not allowed: HTTP 403, final.
	other, _ := tokenclient.New(tokenclient.Config{URLs: []string{tok}, Key: shopKey, App: "hr"})
	_, err = other.Get(context.Background(), "access_token")
	var se *tokenclient.StatusError
	fmt.Println(errors.As(err, &se), se.StatusCode, se.Temporary())
	// Output:
	// true <nil>
	// true 403 false
}

// A WeCom (企业微信) app's node with no secret: WeComOptions feed its
// access token, corp jsapi ticket and agent_config ticket from the servers.
func ExampleClient_WeComOptions() {
	tok, stop := startAppsServer()
	defer stop()

	tc, err := tokenclient.New(tokenclient.Config{URLs: []string{tok}, Key: opsKey, App: "hr"})
	if err != nil {
		panic(err)
	}
	a, err := wecom.New(wechattest.DefaultCorpID, "", // no secret on the node
		append(tc.WeComOptions(), wecom.WithAgentID(wechattest.DefaultAgentID))...)
	if err != nil {
		panic(err)
	}
	defer a.Close()
	cfg, err := a.AgentConfig(context.Background(), "https://example.com/page") // wx.agentConfig
	fmt.Println(err, cfg.Signature != "")
	// Output: <nil> true
}

// startAppsServer starts a multi-app server of the protocol with an
// Official Account "shop" and a WeCom app "hr", over fake platforms, and
// returns its URL.
func startAppsServer() (string, func()) {
	wx, wc := wechattest.NewServer(), wechattest.NewWeComServer()
	shop, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithBaseURLs(wx.URL()), conf.WithHTTPClient(wx.Client()))
	if err != nil {
		panic(err)
	}
	hr, err := wecom.New(wechattest.DefaultCorpID, wechattest.DefaultAgentSecret, wecom.WithAgentID(wechattest.DefaultAgentID),
		wecom.WithBaseURLs(wc.URL()), wecom.WithHTTPClient(wc.Client()))
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(&appsServer{
		apps: map[string]map[string]appCred{"shop": oaCreds(shop), "hr": weComCreds(hr)},
		keys: map[string][]string{shopKey: {"shop"}, opsKey: {"*"}},
	})
	return ts.URL, func() { ts.Close(); shop.Close(); hr.Close(); wx.Close(); wc.Close() }
}
