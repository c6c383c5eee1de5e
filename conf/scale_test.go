package conf_test

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// A ticket's Keeper is made on its first use (issue #14: most of a
// process's thousands of apps never ask for tickets). Callers racing that
// first use, an app switch and Close all get the current app's ticket or
// ErrClosed, and nothing is left running (synctest fails on a goroutine
// still blocked at the end).
func TestTicketKeeperMadeOnFirstUseRacesSwitchAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const app2, secret2 = "wx2000000000000002", "secret-two"
		fake := wechattest.New(wechattest.WithApp(wechattest.DefaultAppID, wechattest.DefaultAppSecret), wechattest.WithApp(app2, secret2))
		c := node(t, fake, store.NewMemory())
		ctx := t.Context()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 16 {
			wg.Go(func() {
				<-start
				kind := conf.JSAPITicket
				if i%2 == 1 {
					kind = conf.WXCardTicket
				}
				for range 4 {
					item, err := c.Credential(ctx, kind)
					switch {
					case errors.Is(err, conf.ErrClosed):
						return
					case err != nil:
						t.Errorf("%v: %v", kind, err)
						return
					case !fake.ValidTicket(item.Value):
						t.Errorf("%v: %q is not valid at the fake", kind, item.Value)
					}
				}
			})
		}
		close(start)
		if err := c.SetAppIDAppSecret(app2, secret2); err != nil {
			t.Fatal(err)
		}
		tk, err := c.JSAPITicket(ctx)
		if err != nil || !fake.ValidTicket(tk) {
			t.Fatalf("app2's ticket: %q, %v", tk, err)
		}
		c.Close()
		wg.Wait()
		if _, err := c.WXCardTicket(ctx); !errors.Is(err, conf.ErrClosed) {
			t.Fatalf("after Close: %v; want ErrClosed", err)
		}
	})
}

// Heap held per app (issue #14: at most 2 KB per credential): 4 000 Confs
// sharing a store and an http.Client, each with its access token loaded
// from the store. Memory, not time: the live heap after a full collection.
func TestHeapPerConfWithALoadedToken(t *testing.T) {
	const n = 4000
	st := store.NewMemory()
	fake := wechattest.New()
	hc := &http.Client{Transport: wechattest.InProcess(fake)}
	ctx := t.Context()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("wx%016d", i)
		// Another node granted every token already.
		if err := st.Set(ctx, conf.Key(ids[i], conf.AccessToken), store.Item{Value: "token-of-" + ids[i], ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	confs := make([]*conf.Conf, n)
	before := liveHeap()
	for i, id := range ids {
		c, err := conf.New(conf.WithAppID(id, "secret"), conf.WithStore(st), conf.WithHTTPClient(hc), conf.WithBaseURLs("http://wechat.test"))
		if err != nil {
			t.Fatal(err)
		}
		confs[i] = c
		if _, err := c.AccessToken(ctx); err != nil {
			t.Fatal(err)
		}
	}
	after := liveHeap()
	per := float64(int64(after)-int64(before)) / n
	for _, c := range confs {
		c.Close()
	}
	t.Logf("%.0f B of heap per Conf with its access token loaded", per)
	if per > 2048 {
		t.Errorf("%.0f B per Conf; want at most 2 KB", per)
	}
	if s := fake.Stats(); s.Requests != 0 {
		t.Errorf("%d requests to WeChat; every token was in the store", s.Requests)
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
