package tokenclient_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
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
