package conf_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// A Conf keeps the access token valid; every node that shares the store
// shares the token, and only one of them grants it.
func Example() {
	wechat := wechattest.NewServer() // stands in for api.weixin.qq.com
	defer wechat.Close()
	shared := store.NewMemory() // in production: redisstore.New(client), pgstore.New(pool), ...

	newNode := func() *conf.Conf {
		c, err := conf.New(
			conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
			conf.WithStore(shared),
			conf.WithBaseURLs(wechat.URL()),
		)
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	a, b := newNode(), newNode()
	defer a.Close()
	defer b.Close()

	ctx := context.Background()
	ta, _ := a.AccessToken(ctx)
	tb, _ := b.AccessToken(ctx)
	fmt.Println("same token:", ta == tb)
	fmt.Println("grants:", wechat.Stats().TokenGrants)
	// Output:
	// same token: true
	// grants: 1
}

// Do retries a call once with a new token when WeChat says the token is
// invalid (40001, 40014, 42001), replacing it only if no other node already
// did.
func ExampleConf_Do() {
	wechat := wechattest.NewServer()
	defer wechat.Close()
	c, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret), conf.WithBaseURLs(wechat.URL()))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	_, _ = c.AccessToken(ctx)
	wechat.Revoke(wechattest.DefaultAppID) // someone else's grant killed our token

	attempts := 0
	err = c.Do(ctx, func(token string) error {
		attempts++
		if !wechat.Valid(token) {
			return &conf.APIError{Endpoint: "/cgi-bin/user/info", Code: 40001, Msg: "invalid credential"}
		}
		return nil
	})
	fmt.Println(err, attempts)
	// Output: <nil> 2
}

// Transport puts the token on every request to WeChat's APIs and handles
// 40001 by itself.
func ExampleConf_Transport() {
	wechat := wechattest.NewServer()
	defer wechat.Close()
	c, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret), conf.WithBaseURLs(wechat.URL()))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	api := &http.Client{Transport: c.Transport(nil)}
	resp, err := api.Get(wechat.URL() + "/cgi-bin/getcallbackip")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, wechat.Stats().Rejections)
	// Output: 200 0
}

// Without an AppSecret nothing can be granted: the error matches
// ErrNeedParam, as the Python seed raises NeedParamError.
func ExampleErrNeedParam() {
	c, _ := conf.New(conf.WithAppID("wxa81b377716e65e59", ""))
	defer c.Close()
	_, err := c.AccessToken(context.Background())
	fmt.Println(errors.Is(err, conf.ErrNeedParam))
	// Output: true
}

// A business node that never calls WeChat: it reads what a token server
// (or another node) keeps in the shared store.
func ExampleWithRefreshOnly() {
	wechat := wechattest.NewServer()
	defer wechat.Close()
	shared := store.NewMemory()
	server, _ := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret), conf.WithStore(shared), conf.WithBaseURLs(wechat.URL()))
	defer server.Close()
	business, _ := conf.New(conf.WithAppID(wechattest.DefaultAppID, ""), conf.WithStore(shared), conf.WithRefreshOnly())
	defer business.Close()

	ctx := context.Background()
	want, _ := server.AccessToken(ctx)
	got, err := business.AccessToken(ctx)
	fmt.Println(got == want, err)
	// Output: true <nil>
}
