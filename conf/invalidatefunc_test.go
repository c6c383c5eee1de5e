package conf_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// A node fed by functions (a token server's client) reports WeChat's
// rejection, seen by Do, to its invalidate function with the rejected
// value, and Do retries with the replacement; WeChat is never called.
func TestInvalidateFuncGetsDoRejections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		var (
			mu       sync.Mutex
			cur      = "remote-1"
			n        = 1
			fetches  int
			rejected []string
		)
		item := func() store.Item { return store.Item{Value: cur, ExpiresAt: time.Now().Add(time.Hour)} }
		refresh := func(context.Context) (store.Item, error) {
			mu.Lock()
			defer mu.Unlock()
			fetches++
			return item(), nil
		}
		invalidate := func(_ context.Context, v string) (store.Item, error) {
			mu.Lock()
			defer mu.Unlock()
			rejected = append(rejected, v)
			if v == cur {
				n++
				cur = fmt.Sprintf("remote-%d", n)
			}
			return item(), nil
		}
		c := node(t, fake, store.NewMemory(), conf.WithRefreshOnly(),
			conf.WithRefreshFunc(conf.AccessToken, refresh), conf.WithInvalidateFunc(conf.AccessToken, invalidate))
		var used []string
		err := c.Do(t.Context(), func(tok string) error {
			used = append(used, tok)
			if tok == "remote-1" {
				return &conf.APIError{Endpoint: "/cgi-bin/menu/get", Code: 40001, Msg: "invalid credential"}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		if strings.Join(used, ",") != "remote-1,remote-2" {
			t.Errorf("Do used %q; want remote-1 then remote-2", used)
		}
		if fetches != 1 || len(rejected) != 1 || rejected[0] != "remote-1" {
			t.Errorf("%d fetches, rejections reported %q; want 1 and [remote-1]", fetches, rejected)
		}
		if s := fake.Stats(); s.Requests != 0 {
			t.Errorf("WeChat was called %d times", s.Requests)
		}
	})
}

func TestWithInvalidateFuncNeedsRefreshFunc(t *testing.T) {
	inv := func(context.Context, string) (store.Item, error) { return store.Item{}, nil }
	_, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, ""), conf.WithInvalidateFunc(conf.JSAPITicket, inv))
	if err == nil || !strings.Contains(err.Error(), "Invalidate needs") {
		t.Errorf("New: %v; want an error: the invalidate function needs a refresh function", err)
	}
	if _, err := conf.New(conf.WithInvalidateFunc(conf.Kind(42), inv)); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := conf.New(conf.WithInvalidateFunc(conf.AccessToken, nil)); err == nil {
		t.Error("nil function accepted")
	}
}
