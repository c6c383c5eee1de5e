package wecom_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wecom"
)

// A business node fed by functions (a token server's client): WeCom is
// never asked; a rejection seen by Do goes to the invalidate function with
// the rejected value and Do retries with the replacement.
func TestRefreshAndInvalidateFuncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		var (
			mu       sync.Mutex
			cur      = "remote-1"
			n        = 1
			rejected []string
		)
		item := func() store.Item { return store.Item{Value: cur, ExpiresAt: time.Now().Add(time.Hour)} }
		refresh := func(context.Context) (store.Item, error) {
			mu.Lock()
			defer mu.Unlock()
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
		app := newApp(t, fake, store.NewMemory(), corp, "", wecom.WithRefreshOnly(), wecom.WithAgentID(agent),
			wecom.WithRefreshFunc(wecom.AccessToken, refresh), wecom.WithInvalidateFunc(wecom.AccessToken, invalidate))
		var used []string
		err := app.Do(t.Context(), func(tok string) error {
			used = append(used, tok)
			if tok == "remote-1" {
				return fmt.Errorf("injected 42001: %w", wecom.ErrTokenInvalid)
			}
			return nil
		})
		if err != nil || strings.Join(used, ",") != "remote-1,remote-2" {
			t.Fatalf("Do: %v, used %q; want remote-1 then remote-2", err, used)
		}
		if len(rejected) != 1 || rejected[0] != "remote-1" {
			t.Errorf("rejections reported %q; want [remote-1]", rejected)
		}
		if s := fake.Stats(); s.Requests != 0 {
			t.Errorf("WeCom was called %d times", s.Requests)
		}
	})
}

func TestWithInvalidateFuncNeedsRefreshFunc(t *testing.T) {
	inv := func(context.Context, string) (store.Item, error) { return store.Item{}, nil }
	_, err := wecom.New(corp, secret, wecom.WithAgentID(agent), wecom.WithInvalidateFunc(wecom.AccessToken, inv))
	if err == nil || !strings.Contains(err.Error(), "Invalidate needs") {
		t.Errorf("New: %v; want an error", err)
	}
	for _, o := range []wecom.Option{
		wecom.WithInvalidateFunc(wecom.Kind(42), inv),
		wecom.WithInvalidateFunc(wecom.AccessToken, nil),
		wecom.WithRefreshFunc(wecom.Kind(42), func(context.Context) (store.Item, error) { return store.Item{}, nil }),
		wecom.WithRefreshFunc(wecom.AccessToken, nil),
	} {
		if _, err := wecom.New(corp, secret, o); err == nil {
			t.Error("a bad option was accepted")
		}
	}
}
