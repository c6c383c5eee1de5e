package conf_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestAccessTokenGrantsOnceThenServesLocalCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st)
		ctx := t.Context()

		tok, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !fake.Valid(tok) {
			t.Fatal("the fake does not accept the granted token")
		}
		for range 100 {
			again, err := c.AccessToken(ctx)
			if err != nil || again != tok {
				t.Fatalf("second call: %q, %v; want the same token", again, err)
			}
		}
		if g := fake.Stats().TokenGrants; g != 1 {
			t.Fatalf("grants = %d, want 1", g)
		}
		got, err := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken))
		if err != nil || got.Value != tok {
			t.Fatalf("store holds %v, %v; want the granted token", got, err)
		}
		item, err := c.GetAccessToken(ctx)
		if err != nil || item.Value != tok || !item.ExpiresAt.Equal(got.ExpiresAt) {
			t.Fatalf("GetAccessToken = %v, %v; want %v", item, err, got)
		}
		if want := time.Now().Add(wechattest.DefaultTokenTTL); item.ExpiresAt.After(want) || item.ExpiresAt.Before(want.Add(-time.Second)) {
			t.Fatalf("ExpiresAt %v, want about %v", item.ExpiresAt, want)
		}
	})
}

func TestTokenIsRefreshedWithinMarginAndReadFromPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		a := node(t, fake, st)
		b := node(t, fake, st)
		ctx := t.Context()
		ta, err := a.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := b.AccessToken(ctx)
		if err != nil || tb != ta {
			t.Fatalf("peer got %q, %v; want the shared token", tb, err)
		}
		// Up to the margin: still the same token, no grant.
		time.Sleep(wechattest.DefaultTokenTTL - conf.DefaultMargin - time.Second)
		if tok, _ := b.AccessToken(ctx); tok != ta {
			t.Fatal("token changed before the margin")
		}
		// Past the margin and its spread (each token's refresh point lies
		// in the first third of the margin, picked from its value) the
		// old token is still valid: it is served at once while the
		// refresh runs in the background.
		time.Sleep(conf.DefaultMargin/3 + 2*time.Second)
		if tok, err := b.AccessToken(ctx); err != nil || tok != ta {
			t.Fatalf("right after the margin got %q, %v; want the old, still valid token without waiting", tok, err)
		}
		synctest.Wait()
		nb, err := b.AccessToken(ctx)
		if err != nil || nb == ta {
			t.Fatalf("after the margin got %q, %v; want a new token", nb, err)
		}
		a.AccessToken(ctx) // a's copy is past its margin too: a background read
		synctest.Wait()
		na, err := a.AccessToken(ctx)
		if err != nil || na != nb {
			t.Fatalf("node a got %q, %v; want b's new token from the store", na, err)
		}
		if g := fake.Stats().TokenGrants; g != 2 {
			t.Fatalf("grants = %d, want 2", g)
		}
	})
}

func TestRereadNoticesGrantMadeElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st)
		ctx := t.Context()
		old, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// An operator grants by hand and puts the token in the store.
		newer := fake.GrantElsewhere(wechattest.DefaultAppID)
		key := conf.Key(wechattest.DefaultAppID, conf.AccessToken)
		if err := st.Set(ctx, key, store.Item{Value: newer, ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if tok, _ := c.AccessToken(ctx); tok != old {
			t.Fatal("local copy should serve until the re-read interval")
		}
		time.Sleep(conf.DefaultReread + time.Second)
		if tok, _ := c.AccessToken(ctx); tok != old {
			t.Fatal("the re-read should run in the background while the local copy is valid")
		}
		synctest.Wait()
		tok, err := c.AccessToken(ctx)
		if err != nil || tok != newer {
			t.Fatalf("after the re-read interval got %q, %v; want the new token", tok, err)
		}
		if conf.DefaultReread >= wechattest.DefaultGrace {
			t.Fatalf("re-read interval %v must be well under the grace %v", conf.DefaultReread, wechattest.DefaultGrace)
		}
		if !fake.Valid(old) {
			t.Fatal("the old token should still be inside its grace window here")
		}
	})
}

// The herd: 32 nodes sharing one store, 64 goroutines each. Cold start and
// five expiry cycles each make exactly one grant, and no caller ever holds
// a token the fake rejects.
func TestHerdOneGrantPerCycle(t *testing.T) {
	const nodes, goroutines, cycles = 32, 64, 5
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithLatency(50 * time.Millisecond))
		st := store.NewMemory()
		confs := make([]*conf.Conf, nodes)
		for i := range confs {
			confs[i] = node(t, fake, st)
		}
		for cycle := 0; cycle <= cycles; cycle++ {
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[string]int{}
			var errs []error
			for _, c := range confs {
				for range goroutines {
					wg.Go(func() {
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						tok, err := c.AccessToken(ctx)
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							errs = append(errs, err)
							return
						}
						if !fake.Valid(tok) {
							errs = append(errs, fmt.Errorf("token rejected by the fake"))
						}
						seen[tok]++
					})
				}
			}
			wg.Wait()
			if len(errs) > 0 {
				t.Fatalf("cycle %d: %d errors, first: %v", cycle, len(errs), errs[0])
			}
			if g := fake.Stats().TokenGrants; g != cycle+1 {
				t.Fatalf("cycle %d: %d grants in all, want %d", cycle, g, cycle+1)
			}
			if len(seen) != 1 {
				t.Fatalf("cycle %d: callers saw %d distinct tokens, want 1", cycle, len(seen))
			}
			// Expire: move past the token's life.
			time.Sleep(wechattest.DefaultTokenTTL)
		}
	})
}

func TestInvalidateIsCompareThenRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		var ev events
		nodes := []*conf.Conf{node(t, fake, st, conf.WithObserver(ev.observe)), node(t, fake, st), node(t, fake, st)}
		ctx := t.Context()
		old, err := nodes[0].AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range nodes[1:] {
			if tok, _ := c.AccessToken(ctx); tok != old {
				t.Fatal("nodes disagree before the revocation")
			}
		}
		fake.Revoke(wechattest.DefaultAppID)
		fake.ResetStats()

		// Every caller on every node holds the old token, hits 40001 and
		// goes through Do. The barrier makes sure all of them got the
		// old token before anyone reports it.
		const perNode = 16
		callers := len(nodes) * perNode
		arrived := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var calls, failures, n int
		for _, c := range nodes {
			for range perNode {
				wg.Go(func() {
					first := true
					err := c.Do(ctx, func(tok string) error {
						mu.Lock()
						calls++
						if first {
							if n++; n == callers {
								close(arrived)
							}
						}
						mu.Unlock()
						if first {
							first = false
							if tok != old {
								t.Errorf("first call got a token other than the revoked one")
							}
							<-arrived
						}
						return protected(ctx, fake, tok)
					})
					if err != nil {
						mu.Lock()
						failures++
						mu.Unlock()
						t.Errorf("Do: %v", err)
					}
				})
			}
		}
		wg.Wait()
		if failures > 0 {
			t.Fatalf("%d callers failed", failures)
		}
		if g := fake.Stats().TokenGrants; g != 1 {
			t.Fatalf("grants after revocation = %d, want exactly 1", g)
		}
		if calls != 2*callers {
			t.Fatalf("fn called %d times, want %d (one retry per caller)", calls, 2*callers)
		}
		if ev.count(conf.EventInvalidated) == 0 {
			t.Fatal("no invalidated event observed")
		}
		// A late report of the old token changes nothing.
		cur, _ := nodes[2].AccessToken(ctx)
		again, err := nodes[1].Invalidate(ctx, conf.AccessToken, old)
		if err != nil || again != cur {
			t.Fatalf("late Invalidate = %q, %v; want the current token", again, err)
		}
		if g := fake.Stats().TokenGrants; g != 1 {
			t.Fatalf("late report caused a grant (%d)", g)
		}
	})
}

func TestDoReturnsOtherErrorsWithoutRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		c := node(t, fake, store.NewMemory())
		boom := errors.New("boom")
		n := 0
		err := c.Do(t.Context(), func(string) error { n++; return boom })
		if !errors.Is(err, boom) || n != 1 {
			t.Fatalf("Do = %v after %d calls; want boom after 1", err, n)
		}
	})
}

func TestTicketsAreCachedAndRecoverFromRevokedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		c := node(t, fake, store.NewMemory())
		ctx := t.Context()
		js, err := c.JSAPITicket(ctx)
		if err != nil || !fake.ValidTicket(js) {
			t.Fatalf("JSAPITicket = %q, %v", js, err)
		}
		card, err := c.WXCardTicket(ctx)
		if err != nil || !fake.ValidTicket(card) || card == js {
			t.Fatalf("WXCardTicket = %q, %v", card, err)
		}
		if again, _ := c.JSAPITicket(ctx); again != js {
			t.Fatal("jsapi ticket not cached")
		}
		s := fake.Stats()
		if s.JSAPITickets != 1 || s.WXCardTickets != 1 || s.TokenGrants != 1 {
			t.Fatalf("stats %+v: want one of each", s)
		}
		// The token dies; the next ticket grant must replace it and retry.
		fake.Revoke(wechattest.DefaultAppID)
		time.Sleep(wechattest.DefaultTicketTTL)
		js2, err := c.JSAPITicket(ctx)
		if err != nil || !fake.ValidTicket(js2) {
			t.Fatalf("JSAPITicket after revocation = %q, %v", js2, err)
		}
		if s := fake.Stats(); s.TokenGrants != 2 || s.JSAPITickets != 2 {
			t.Fatalf("stats %+v: want 2 token grants and 2 jsapi tickets", s)
		}
	})
}

func TestGrantForcesAndKeeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st)
		ctx := t.Context()
		first, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.GrantAccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.AccessToken == first || r.ExpiresIn != 7200 {
			t.Fatalf("GrantAccessToken = %v; want a new token for 7200 s", r)
		}
		if tok, _ := c.AccessToken(ctx); tok != r.AccessToken {
			t.Fatal("the forced grant is not kept locally")
		}
		if item, _ := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken)); item.Value != r.AccessToken {
			t.Fatal("the forced grant is not stored")
		}
		tr, err := c.GrantJSAPITicket(ctx)
		if err != nil || tr.Ticket == "" || tr.ErrMsg != "ok" || tr.ExpiresIn != 7200 {
			t.Fatalf("GrantJSAPITicket = %v, %v", tr, err)
		}
		if item, _ := c.GetJSAPITicket(ctx); item.Value != tr.Ticket {
			t.Fatal("the forced ticket is not kept")
		}
		if _, err := c.GrantWXCardTicket(ctx); err != nil {
			t.Fatal(err)
		}
		if s := fake.Stats(); s.TokenGrants != 2 || s.JSAPITickets != 1 || s.WXCardTickets != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestNeedParam(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		ctx := t.Context()
		// Only an AppID, as in the seed's example.
		c, err := conf.New(conf.WithAppID("wxa81b377716e65e59", ""), conf.WithHTTPClient(&httpClientNoNet))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for name, call := range map[string]func() error{
			"AccessToken":      func() error { _, err := c.AccessToken(ctx); return err },
			"JSAPITicket":      func() error { _, err := c.JSAPITicket(ctx); return err },
			"GetAccessToken":   func() error { _, err := c.GetAccessToken(ctx); return err },
			"GrantAccessToken": func() error { _, err := c.GrantAccessToken(ctx); return err },
		} {
			if err := call(); !errors.Is(err, conf.ErrNeedParam) {
				t.Errorf("%s: %v; want ErrNeedParam", name, err)
			}
		}
		// Nothing at all.
		empty, err := conf.New()
		if err != nil {
			t.Fatal(err)
		}
		defer empty.Close()
		if _, err := empty.AccessToken(ctx); !errors.Is(err, conf.ErrNeedParam) {
			t.Errorf("no AppID: %v; want ErrNeedParam", err)
		}
		_ = fake
	})
}

func TestRefreshOnlyNeverGrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		biz := node(t, fake, st, conf.WithRefreshOnly(), conf.WithMaxWait(10*time.Second))
		ctx := t.Context()
		start := time.Now()
		if _, err := biz.AccessToken(ctx); !errors.Is(err, conf.ErrUnavailable) {
			t.Fatalf("empty store: %v; want ErrUnavailable", err)
		}
		if waited := time.Since(start); waited != 10*time.Second {
			t.Fatalf("waited %v, want the max wait of 10s", waited)
		}
		if _, err := biz.GrantAccessToken(ctx); err == nil {
			t.Fatal("GrantAccessToken on a refresh-only node succeeded")
		}
		// A token server grants; the business node picks it up while
		// waiting.
		server := node(t, fake, st)
		var got string
		var wg sync.WaitGroup
		wg.Go(func() {
			var err error
			got, err = biz.AccessToken(ctx)
			if err != nil {
				t.Errorf("business node: %v", err)
			}
		})
		time.Sleep(time.Second)
		want, err := server.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if got != want {
			t.Fatalf("business node got %q, want the server's %q", got, want)
		}
		if g := fake.Stats().TokenGrants; g != 1 {
			t.Fatalf("grants = %d, want 1 (by the server only)", g)
		}
		// The server grants again (forced); the business node sees it
		// within the re-read interval.
		r, err := server.GrantAccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(conf.DefaultReread + time.Second)
		biz.AccessToken(ctx) // starts the re-read; serves the valid copy meanwhile
		synctest.Wait()
		if tok, _ := biz.AccessToken(ctx); tok != r.AccessToken {
			t.Fatal("business node did not pick up the new token within the re-read interval")
		}
	})
}

func TestRefreshFuncReplacesWeChat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		calls := 0
		fn := func(ctx context.Context) (store.Item, error) {
			calls++
			return store.Item{Value: fmt.Sprintf("from-func-%d", calls), ExpiresAt: time.Now().Add(time.Hour)}, nil
		}
		c := node(t, fake, st, conf.WithRefreshFunc(conf.AccessToken, fn))
		ctx := t.Context()
		tok, err := c.AccessToken(ctx)
		if err != nil || tok != "from-func-1" {
			t.Fatalf("AccessToken = %q, %v", tok, err)
		}
		if again, _ := c.AccessToken(ctx); again != tok || calls != 1 {
			t.Fatalf("not cached: %q after %d calls", again, calls)
		}
		if item, _ := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken)); item.Value != tok {
			t.Fatal("the function's token was not shared through the store")
		}
		if s := fake.Stats(); s.Requests != 0 {
			t.Fatalf("WeChat was called %d times", s.Requests)
		}
		if _, err := conf.New(conf.WithRefreshFunc(conf.Kind(42), fn)); err == nil {
			t.Fatal("unknown kind accepted")
		}
	})
}

func TestSeedsAreStoredNewerWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		ctx := t.Context()
		exp := time.Now().Add(time.Hour)
		c := node(t, fake, st, conf.WithAccessToken("seeded-token", exp), conf.WithJSAPITicket("seeded-ticket", exp))
		if tok, err := c.AccessToken(ctx); err != nil || tok != "seeded-token" {
			t.Fatalf("AccessToken = %q, %v; want the seed", tok, err)
		}
		if tk, err := c.JSAPITicket(ctx); err != nil || tk != "seeded-ticket" {
			t.Fatalf("JSAPITicket = %q, %v; want the seed", tk, err)
		}
		// An older seed on another node does not replace it.
		_ = node(t, fake, st, conf.WithAccessToken("older", exp.Add(-time.Minute)))
		if item, _ := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken)); item.Value != "seeded-token" {
			t.Fatalf("older seed replaced the newer one: %v", item)
		}
		if fake.Stats().Requests != 0 {
			t.Fatal("seeded credentials still called WeChat")
		}
		if _, err := conf.New(conf.WithAccessToken("", exp)); err == nil {
			t.Fatal("empty seed accepted")
		}
	})
}

func TestFuncsAdapterAsStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		var mu sync.Mutex
		saved := map[string]store.Item{}
		get := func(ctx context.Context, key string) (store.Item, error) {
			mu.Lock()
			defer mu.Unlock()
			it, ok := saved[key]
			if !ok {
				return store.Item{}, store.ErrNotFound
			}
			return it, nil
		}
		set := func(ctx context.Context, key string, item store.Item) error {
			mu.Lock()
			defer mu.Unlock()
			saved[key] = item
			return nil
		}
		c := node(t, fake, store.FromFuncs(get, set))
		tok, err := c.AccessToken(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := saved[conf.Key(wechattest.DefaultAppID, conf.AccessToken)]
		mu.Unlock()
		if got.Value != tok {
			t.Fatalf("setfunc got %v, want the token", got)
		}
	})
}

func TestSwitchingAppNeverServesOldToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const app2, secret2 = "wx00000000000000b2", "0123456789abcdef0123456789abcdef"
		fake := wechattest.New(wechattest.WithApp(wechattest.DefaultAppID, wechattest.DefaultAppSecret), wechattest.WithApp(app2, secret2))
		st := store.NewMemory()
		c := node(t, fake, st)
		ctx := t.Context()
		tok1, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.AccessToken(ctx); err != nil {
						t.Errorf("concurrent AccessToken: %v", err)
						return
					}
				}
			})
		}
		if err := c.SetAppIDAppSecret(app2, secret2); err != nil {
			t.Fatal(err)
		}
		tok2, err := c.AccessToken(ctx)
		close(stop)
		wg.Wait()
		if err != nil || tok2 == tok1 || !fake.Valid(tok2) {
			t.Fatalf("after switch got %q, %v", tok2, err)
		}
		if c.AppID() != app2 || c.AppSecret() != secret2 {
			t.Fatal("getters do not follow the switch")
		}
		if item, _ := st.Get(ctx, conf.Key(app2, conf.AccessToken)); item.Value != tok2 {
			t.Fatal("app2's token not under app2's key")
		}
		if item, _ := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken)); item.Value != tok1 {
			t.Fatal("app1's token was disturbed")
		}
	})
}

func TestStoreOutageServesLocalCopyAndGrantsAtMostOncePerCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := &flakyStore{Store: store.NewMemory()}
		var ev events
		c := node(t, fake, st, conf.WithObserver(ev.observe))
		ctx := t.Context()
		tok, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.down.Store(true)
		// Through the rest of the token's life, well past the margin:
		// no error, no grant.
		for range int((wechattest.DefaultTokenTTL - time.Minute) / (10 * time.Second)) {
			time.Sleep(10 * time.Second)
			got, err := c.AccessToken(ctx)
			if err != nil || got != tok {
				t.Fatalf("during outage: %q, %v; want the local token", got, err)
			}
		}
		if g := fake.Stats().TokenGrants; g != 1 {
			t.Fatalf("grants during outage = %d, want none beyond the first", g)
		}
		if ev.count(conf.EventStoreError) == 0 {
			t.Fatal("store errors were not reported")
		}
		// The token dies during the outage: one grant per cycle, of the
		// stable token without force_refresh (it invalidates nobody's).
		for cycle := 1; cycle <= 3; cycle++ {
			time.Sleep(time.Minute)
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					got, err := c.AccessToken(ctx)
					if err != nil || !fake.Valid(got) {
						t.Errorf("cycle %d: %q, %v", cycle, got, err)
					}
				})
			}
			wg.Wait()
			if st := fake.Stats(); st.TokenGrants != 1 || st.StableTokenGrants != cycle || st.StableTokenForced != 0 {
				t.Fatalf("cycle %d: classic grants = %d (want 1), stable grants = %d (want %d), forced %d (want 0)",
					cycle, st.TokenGrants, st.StableTokenGrants, cycle, st.StableTokenForced)
			}
			time.Sleep(wechattest.DefaultTokenTTL - time.Minute)
		}
		// The store comes back: the local (newer) token is put back.
		st.down.Store(false)
		time.Sleep(time.Minute + time.Second)
		c.AccessToken(ctx) // starts the re-read
		synctest.Wait()
		cur, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if item, _ := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken)); item.Value != cur {
			t.Fatalf("after the outage the store holds %v, want the node's token", item)
		}
	})
}

func TestCloseEndsWaitsAndLaterCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c, err := conf.New(
			conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
			conf.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(fake)}),
			conf.WithBaseURLs("http://wechat.test"),
			conf.WithStore(st),
			conf.WithMaxWait(time.Hour),
		)
		if err != nil {
			t.Fatal(err)
		}
		// Someone else holds the lease: the call waits.
		lease, err := st.Lock(t.Context(), conf.Key(wechattest.DefaultAppID, conf.AccessToken), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Unlock(context.Background())
		done := make(chan error, 1)
		go func() { _, err := c.AccessToken(context.Background()); done <- err }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("returned before Close: %v", err)
		default:
		}
		c.Close()
		if err := <-done; !errors.Is(err, conf.ErrClosed) {
			t.Fatalf("waiting call after Close: %v; want ErrClosed", err)
		}
		if _, err := c.AccessToken(t.Context()); !errors.Is(err, conf.ErrClosed) {
			t.Fatalf("call after Close: %v", err)
		}
		if _, err := c.Crypto(); !errors.Is(err, conf.ErrClosed) {
			t.Fatalf("Crypto after Close: %v", err)
		}
		c.Close() // idempotent
		// synctest.Test fails if any goroutine is left behind.
	})
}

func TestCallerContextBoundsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st)
		lease, err := st.Lock(t.Context(), conf.Key(wechattest.DefaultAppID, conf.AccessToken), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Unlock(context.Background())
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err = c.AccessToken(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v; want the caller's deadline", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("returned after %v, want exactly the 3s deadline (fake time)", d)
		}
		if fake.Stats().Requests != 0 {
			t.Fatal("granted although another node held the lease")
		}
	})
}

func TestCrashedHolderBlocksNoLongerThanLeaseTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st)
		// A holder takes the lease and dies without releasing it.
		if _, err := st.Lock(t.Context(), conf.Key(wechattest.DefaultAppID, conf.AccessToken), conf.DefaultLeaseTTL); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		tok, err := c.AccessToken(t.Context())
		if err != nil || !fake.Valid(tok) {
			t.Fatalf("AccessToken = %q, %v", tok, err)
		}
		if d := time.Since(start); d < conf.DefaultLeaseTTL || d > conf.DefaultLeaseTTL+time.Second {
			t.Fatalf("got the token after %v; want just past the lease TTL %v", d, conf.DefaultLeaseTTL)
		}
	})
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	c := node(t, wechattest.New(), store.NewMemory())
	ctx := context.Background()
	if _, err := c.AccessToken(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = c.AccessToken(ctx) }); n != 0 {
		t.Fatalf("AccessToken with a fresh local copy allocates %v times per call", n)
	}
}

// watchCounter counts Watch calls on a memory store.
type watchCounter struct {
	*store.Memory
	mu      sync.Mutex
	watches int
}

func (w *watchCounter) Watch(ctx context.Context, key string) (<-chan struct{}, error) {
	w.mu.Lock()
	w.watches++
	w.mu.Unlock()
	return w.Memory.Watch(ctx, key)
}

func TestWatchOnlyWhenTheLeaseIsHeldElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithLatency(time.Second))
		st := &watchCounter{Memory: store.NewMemory()}
		a, b := node(t, fake, st), node(t, fake, st)
		if _, err := a.AccessToken(t.Context()); err != nil {
			t.Fatal(err)
		}
		if st.watches != 0 {
			t.Fatalf("%d watches for an uncontended refresh, want 0", st.watches)
		}
		// b waits for a's forced grant: it watches once, and wakes with
		// the new token.
		var wg sync.WaitGroup
		var forced *conf.TokenResponse
		wg.Go(func() {
			var err error
			if forced, err = a.GrantAccessToken(t.Context()); err != nil {
				t.Error(err)
			}
		})
		synctest.Wait() // a holds the lease, its grant in flight
		if _, err := b.Invalidate(t.Context(), conf.AccessToken, mustToken(t, a)); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if st.watches != 1 {
			t.Fatalf("%d watches while the lease was held elsewhere, want 1", st.watches)
		}
		if tok, _ := b.AccessToken(t.Context()); tok != forced.AccessToken {
			t.Fatal("b did not take a's grant")
		}
		if g := fake.Stats().TokenGrants; g != 2 {
			t.Fatalf("%d grants, want 2", g)
		}
	})
}

func mustToken(t *testing.T, c *conf.Conf) string {
	t.Helper()
	tok, err := c.AccessToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// WeChat granted, but the answer was lost on the way (a gateway's 502): the
// caller gets an error, nothing is stored, and the next call grants again —
// the unseen token dies by the grace rule and no caller ever holds it.
func TestLostGrantAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st)
		ctx := t.Context()
		fake.FailNext(1, wechattest.LostAnswer())
		var he *conf.HTTPError
		if _, err := c.AccessToken(ctx); !errors.As(err, &he) || he.Status != 502 {
			t.Fatalf("first call: %v; want the 502", err)
		}
		if _, err := st.Get(ctx, conf.Key(wechattest.DefaultAppID, conf.AccessToken)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("something was stored after a lost answer: %v", err)
		}
		tok, err := c.AccessToken(ctx)
		if err != nil || !fake.Valid(tok) {
			t.Fatalf("second call: %q, %v", tok, err)
		}
		if g := fake.Stats().TokenGrants; g != 2 {
			t.Fatalf("%d grants, want 2 (the lost one and the retry)", g)
		}
		time.Sleep(wechattest.DefaultGrace + time.Second)
		if !fake.Valid(tok) {
			t.Fatal("the token the node holds died")
		}
	})
}
