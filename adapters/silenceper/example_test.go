package silenceper_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/silenceper/wechat/v2/officialaccount"
	offconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/adapters/silenceper"
	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// A silenceper OfficialAccount on a wechatconf Conf: the three lines, then
// silenceper's API as before. In production the Conf has a shared store
// (redisstore, pgstore...) and no WithBaseURLs, and the Transport's base is
// nil; here a fake WeChat stands in.
func Example() {
	srv := wechattest.NewServer()
	defer srv.Close()
	c, err := conf.New(
		conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithStore(store.NewMemory()),
		conf.WithBaseURLs(srv.URL()),
	)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	oa := officialaccount.NewOfficialAccount(&offconfig.Config{
		AppID: wechattest.DefaultAppID, AppSecret: wechattest.DefaultAppSecret,
		Cache: newSharedCache(), // silenceper wants one; the Handle does not use it
	})

	h := silenceper.New(c)
	oa.SetAccessTokenHandle(h)
	oa.GetJs().SetJsTicketHandle(h)
	// Report WeChat's rejections of the token (40001, 40014, 42001).
	defer func(old *http.Client) { util.DefaultHTTPClient = old }(util.DefaultHTTPClient)
	util.DefaultHTTPClient = &http.Client{Transport: silenceper.Transport(newToFake(srv), h)}

	ips, err := oa.GetBasic().GetCallbackIP()
	fmt.Println(ips, err)

	srv.Revoke(wechattest.DefaultAppID) // WeChat drops the token early
	ips, err = oa.GetBasic().GetCallbackIP()
	fmt.Println(ips, err)

	cfg, err := oa.GetJs().GetConfig("https://example.com/")
	fmt.Println(len(cfg.Signature), err)
	fmt.Println("grants:", srv.Stats().TokenGrants)
	// Output:
	// [127.0.0.1] <nil>
	// [127.0.0.1] <nil>
	// 40 <nil>
	// grants: 2
}

// Do reports a rejection without touching util.DefaultHTTPClient.
func ExampleDo() {
	srv := wechattest.NewServer()
	defer srv.Close()
	c, err := conf.New(
		conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithBaseURLs(srv.URL()),
	)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	h := silenceper.New(c)
	oa := officialaccount.NewOfficialAccount(&offconfig.Config{Cache: newSharedCache()})
	oa.SetAccessTokenHandle(h)
	defer func(old *http.Client) { util.DefaultHTTPClient = old }(util.DefaultHTTPClient)
	util.DefaultHTTPClient = &http.Client{Transport: newToFake(srv)} // the fake, in place of WeChat

	if _, err := c.AccessToken(context.Background()); err != nil {
		panic(err)
	}
	srv.Revoke(wechattest.DefaultAppID)
	err = silenceper.Do(context.Background(), h, func() error {
		_, err := oa.GetBasic().GetCallbackIP()
		return err
	})
	fmt.Println(err, srv.Stats().TokenGrants)
	// Output: <nil> 2
}

// A node switched during a rolling migration starts on the token the old
// nodes cached and writes the Conf's next tokens back for them.
func ExampleLegacy() {
	oldCache := newSharedCache() // the Redis the old nodes share, in production
	oldCache.Set("gowechat_officialaccount__access_token_wx1", "TOKEN-OF-THE-OLD-NODES", time.Hour)

	l := silenceper.Legacy{Cache: oldCache, AppID: "wx1"}
	opts := append([]conf.Option{conf.WithAppID("wx1", "secret")}, l.SeedOptions()...)
	c, err := conf.New(opts...)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	h := silenceper.New(c, silenceper.WithMirror(l))
	fmt.Println(h.GetAccessToken())
	// Output: TOKEN-OF-THE-OLD-NODES <nil>
}
