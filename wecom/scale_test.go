package wecom_test

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

// A ticket's Keeper is made on its first use (issue #14). Callers racing
// that first use and Close get a valid ticket or ErrClosed, and nothing is
// left running.
func TestTicketKeeperMadeOnFirstUseRacesClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		a := newApp(t, fake, store.NewMemory(), corp, secret, wecom.WithAgentID(agent))
		ctx := t.Context()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 16 {
			wg.Go(func() {
				<-start
				src := a.Source(wecom.JSAPITicket)
				if i%2 == 1 {
					src = a.Source(wecom.AgentTicket)
				}
				for range 4 {
					item, err := src.Get(ctx)
					switch {
					case errors.Is(err, wecom.ErrClosed):
						return
					case err != nil:
						t.Errorf("ticket: %v", err)
						return
					case !fake.ValidTicket(item.Value):
						t.Errorf("ticket %q is not valid at the fake", item.Value)
					}
				}
			})
		}
		close(start)
		if tk, err := a.AgentTicket(ctx); err != nil || !fake.ValidTicket(tk) {
			t.Fatalf("agent ticket: %q, %v", tk, err)
		}
		a.Close()
		wg.Wait()
		if _, err := a.JSAPITicket(ctx); !errors.Is(err, wecom.ErrClosed) {
			t.Fatalf("after Close: %v; want ErrClosed", err)
		}
	})
}

// Heap held per app (issue #14: at most 2 KB per credential): 4 000 Apps
// sharing a store and an http.Client, each with its access token loaded
// from the store. Memory, not time: the live heap after a full collection.
func TestHeapPerAppWithALoadedToken(t *testing.T) {
	const n = 4000
	st := store.NewMemory()
	hc := &http.Client{Transport: wechattest.InProcess(fakeWeCom())}
	ctx := t.Context()
	open := func(i int) *wecom.App {
		a, err := wecom.New(fmt.Sprintf("ww%016d", i), "secret", wecom.WithStore(st), wecom.WithHTTPClient(hc), wecom.WithBaseURLs("http://qyapi.test"))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for i := range n {
		// Another node granted every token already.
		a := open(i)
		if err := st.Set(ctx, a.Key(wecom.AccessToken), store.Item{Value: fmt.Sprintf("token-%d", i), ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		a.Close()
	}
	apps := make([]*wecom.App, n)
	before := liveHeap()
	for i := range apps {
		apps[i] = open(i)
		if _, err := apps[i].AccessToken(ctx); err != nil {
			t.Fatal(err)
		}
	}
	after := liveHeap()
	per := float64(int64(after)-int64(before)) / n
	for _, a := range apps {
		a.Close()
	}
	t.Logf("%.0f B of heap per App with its access token loaded", per)
	if per > 2048 {
		t.Errorf("%.0f B per App; want at most 2 KB", per)
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
