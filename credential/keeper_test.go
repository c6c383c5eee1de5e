package credential_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

// granter is a GrantFunc that counts its calls and returns a new value each
// time, valid for ttl.
type granter struct {
	n   atomic.Int64
	ttl time.Duration
	err error
}

func (g *granter) grant(context.Context, credential.Request) (credential.Grant, error) {
	n := g.n.Add(1)
	if g.err != nil {
		return credential.Grant{}, g.err
	}
	return credential.Grant{Item: store.Item{Value: fmt.Sprintf("T%d", n), ExpiresAt: time.Now().Add(g.ttl)}}, nil
}

func keeper(t testing.TB, st store.Store, g *granter, mod ...func(*credential.Config)) *credential.Keeper {
	t.Helper()
	cfg := credential.Config{Name: "access_token", Key: "{app}:access_token", Store: st, Grant: g.grant}
	for _, m := range mod {
		m(&cfg)
	}
	k, err := credential.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	st := store.NewMemory()
	for _, tc := range []struct {
		cfg  credential.Config
		want string
	}{
		{credential.Config{Key: "k", Store: st}, "Name"},
		{credential.Config{Name: "n", Store: st}, "Key"},
		{credential.Config{Name: "n", Key: "k"}, "Store"},
		{credential.Config{Name: "n", Key: "k", Store: st, Policy: credential.Policy{LeaseTTL: time.Millisecond}}, "LeaseTTL"},
		{credential.Config{Name: "n", Key: "k", Store: st, Policy: credential.Policy{Spread: 2}}, "Spread"},
	} {
		if _, err := credential.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestKeeperGrantsOnceAndServesLocalCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &granter{ttl: 2 * time.Hour}
		st := store.NewMemory()
		a, b := keeper(t, st, g), keeper(t, st, g)
		var wg sync.WaitGroup
		got := make([]string, 64)
		for i := range got {
			k := a
			if i%2 == 1 {
				k = b
			}
			wg.Go(func() {
				it, err := k.Get(t.Context())
				if err != nil {
					t.Error(err)
				}
				got[i] = it.Value
			})
		}
		wg.Wait()
		if n := g.n.Load(); n != 1 {
			t.Fatalf("%d grants for 64 callers on 2 keepers; want 1", n)
		}
		for _, v := range got {
			if v != "T1" {
				t.Fatalf("callers got %q; want T1 everywhere", got)
			}
		}
		allocs := testing.AllocsPerRun(100, func() { a.Get(context.Background()) })
		if allocs != 0 {
			t.Fatalf("hot path allocates %v times; want 0", allocs)
		}
	})
}

// Issue #12: 10 000 credentials granted within the same second were all
// due again within the same second of the next cycle. With the spread their
// refresh points cover a third of the margin, and every node computes the
// same point for a credential.
func TestRefreshSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 10000
		st := store.NewMemory()
		var mu sync.Mutex
		var regrants []time.Duration
		start := time.Now()
		keepers := make([]*credential.Keeper, n)
		for i := range keepers {
			g := &granter{ttl: 2 * time.Hour}
			keepers[i] = keeper(t, st, g, func(c *credential.Config) {
				c.Key = fmt.Sprintf("{app%d}:access_token", i)
				c.Grant = func(ctx context.Context, r credential.Request) (credential.Grant, error) {
					if g.n.Load() > 0 {
						mu.Lock()
						regrants = append(regrants, time.Since(start))
						mu.Unlock()
					}
					gr, err := g.grant(ctx, r)
					gr.Item.Value = fmt.Sprintf("app%d-%s", i, gr.Item.Value)
					return gr, err
				}
			})
			if _, err := keepers[i].Get(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		// Through the next cycle, every credential is asked for each
		// second, as a busy server would.
		for range int((2*time.Hour - credential.DefaultMargin/2) / time.Second) {
			time.Sleep(time.Second)
			if time.Since(start) < 2*time.Hour-credential.DefaultMargin-time.Second {
				continue // nothing is due before the margin
			}
			for _, k := range keepers {
				k.Get(t.Context())
			}
			synctest.Wait()
		}
		if len(regrants) != n {
			t.Fatalf("%d re-grants; want %d", len(regrants), n)
		}
		slices.Sort(regrants)
		first, last := regrants[0], regrants[n-1]
		perSecond := map[time.Duration]int{}
		busiest := 0
		for _, d := range regrants {
			s := d.Truncate(time.Second)
			perSecond[s]++
			busiest = max(busiest, perSecond[s])
		}
		t.Logf("%d credentials granted in the same instant: re-granted over %v (from %v before expiry), in %d distinct seconds, at most %d in one second",
			n, last-first, 2*time.Hour-first, len(perSecond), busiest)
		window := time.Duration(float64(credential.DefaultMargin) * credential.DefaultSpread)
		if first < 2*time.Hour-credential.DefaultMargin || last > 2*time.Hour-credential.DefaultMargin+window+2*time.Second {
			t.Fatalf("re-grants from %v to %v; want within the first third of the margin", first, last)
		}
		if busiest > n/20 {
			t.Fatalf("%d re-grants in one second; want at most %d (a twentieth)", busiest, n/20)
		}
	})
}

// A grant error only a person can mend (a wrong secret) is logged once at
// error level and not asked again for FatalBackoff.
func TestFatalGrantErrorIsReportedOnceAndNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errSecret := errors.New("errcode 40001: invalid credential (wrong secret)")
		g := &granter{ttl: 2 * time.Hour, err: errSecret}
		var logs bytes.Buffer
		k := keeper(t, store.NewMemory(), g, func(c *credential.Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))
			c.Policy.Fatal = func(err error) bool { return errors.Is(err, errSecret) }
		})
		for range 10 {
			if _, err := k.Get(t.Context()); !errors.Is(err, errSecret) {
				t.Fatalf("Get: %v; want the secret error", err)
			}
		}
		if n := g.n.Load(); n != 1 {
			t.Fatalf("%d grants; want 1 within the backoff", n)
		}
		if c := strings.Count(logs.String(), "level=ERROR"); c != 1 || !strings.Contains(logs.String(), "secret") {
			t.Fatalf("%d error records (%s); want one that says what to check", c, logs.String())
		}
		time.Sleep(credential.FatalBackoff)
		k.Get(t.Context())
		if n := g.n.Load(); n != 2 {
			t.Fatalf("%d grants after the backoff; want 2", n)
		}
	})
}

// fixed is a Source and Invalidator with a value it hands out and a record
// of what it was told.
type fixed struct {
	value       string
	next        string
	invalidated []string
	getErr      error
}

func (f *fixed) Get(context.Context) (store.Item, error) {
	return store.Item{Value: f.value, ExpiresAt: time.Now().Add(time.Hour)}, f.getErr
}

func (f *fixed) Invalidate(_ context.Context, v string) (store.Item, error) {
	f.invalidated = append(f.invalidated, v)
	f.value = f.next
	return store.Item{Value: f.next, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

// api answers 40001 to any token but "good", and records what it saw.
func api(seen *[]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.URL.Query().Get("access_token")
		*seen = append(*seen, r.Host+" "+tok)
		w.Header().Set("Content-Type", "application/json")
		if tok == "good" {
			io.WriteString(w, `{"errcode":0}`)
			return
		}
		io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential"}`)
	})
}

func transport(t *testing.T, src credential.Source, hosts ...string) http.RoundTripper {
	t.Helper()
	tr, err := credential.NewTransport(credential.TransportConfig{
		Source: src, Param: "access_token", Hosts: hosts,
		Invalid: func(code int) bool { return code == 40001 },
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// Issue #12: the Transport set the token on every request to any host
// (a redirect or a non-WeChat URL leaked it), overwrote a caller's own
// access_token, and invalidated the app's token on any 40001.
func TestTransportScopesTheCredential(t *testing.T) {
	var seen []string
	wx := httptest.NewServer(api(&seen))
	defer wx.Close()
	other := httptest.NewServer(api(&seen))
	defer other.Close()
	wxHost := strings.TrimPrefix(wx.URL, "http://")
	src := &fixed{value: "stale", next: "good"}
	hc := &http.Client{Transport: transport(t, src, wxHost)}

	get := func(u string) {
		t.Helper()
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// To WeChat: the token is added; a 40001 invalidates exactly it and
	// the request is sent once more.
	get(wx.URL + "/cgi-bin/x")
	if !slices.Equal(src.invalidated, []string{"stale"}) || !slices.Equal(seen, []string{wxHost + " stale", wxHost + " good"}) {
		t.Fatalf("to WeChat: invalidated %q, WeChat saw %q", src.invalidated, seen)
	}
	// To another host: nothing added, nothing invalidated.
	seen = nil
	get(other.URL + "/cgi-bin/x")
	if len(seen) != 1 || strings.Contains(seen[0], "good") || len(src.invalidated) != 1 {
		t.Fatalf("another host saw %q (invalidated %q); want no token and no invalidation", seen, src.invalidated)
	}
	// The caller's own token (an OAuth user token): sent as it is, its
	// 40001 is the caller's business.
	seen = nil
	get(wx.URL + "/sns/userinfo?access_token=USER")
	if !slices.Equal(seen, []string{wxHost + " USER"}) || len(src.invalidated) != 1 {
		t.Fatalf("user token: WeChat saw %q (invalidated %q); want USER once, no invalidation", seen, src.invalidated)
	}
	// A redirect from WeChat to elsewhere: the token stays behind.
	seen = nil
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+"/landing", http.StatusFound))
	defer redirect.Close()
	rh := strings.TrimPrefix(redirect.URL, "http://")
	hc2 := &http.Client{Transport: transport(t, src, rh)}
	resp, err := hc2.Get(redirect.URL + "/cgi-bin/jump")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, s := range seen {
		if strings.Contains(s, "good") {
			t.Fatalf("the redirect target saw the token: %q", seen)
		}
	}
}

type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

// The RoundTripper contract: the request body is closed even when the
// credential cannot be had.
func TestTransportClosesTheBodyOnEarlyReturn(t *testing.T) {
	src := &fixed{getErr: credential.ErrUnavailable}
	tr := transport(t, src, "api.example.com")
	body := &trackedBody{Reader: strings.NewReader("{}")}
	req, _ := http.NewRequest(http.MethodPost, "https://api.example.com/cgi-bin/x", body)
	if _, err := tr.RoundTrip(req); !errors.Is(err, credential.ErrUnavailable) {
		t.Fatalf("RoundTrip: %v; want the Source's error", err)
	}
	if !body.closed {
		t.Fatal("the request body was not closed")
	}
}

func BenchmarkKeeperGetHot(b *testing.B) {
	k := keeper(b, store.NewMemory(), &granter{ttl: 2 * time.Hour})
	ctx := context.Background()
	if _, err := k.Get(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// Seen when the token server's client landed: expiries come from whole
// seconds of lifetime, so a replacement (7199 s left) looked older than the
// token it replaced (7200 s left), newer-wins kept the dead one in the
// store, and the next re-read served it again. A value WeChat rejected is
// never served again.
func TestRejectedValueIsNeverServedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		st := store.NewMemory()
		k, err := credential.New(credential.Config{
			Name: "access_token", Key: "{app}:access_token", Store: st,
			Fetch: func(context.Context) (store.Item, error) {
				return store.Item{Value: "T1", ExpiresAt: start.Add(7200 * time.Second)}, nil
			},
			Invalidate: func(context.Context, string) (store.Item, error) {
				return store.Item{Value: "T2", ExpiresAt: time.Now().Add(7199 * time.Second)}, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if it, _ := k.Get(t.Context()); it.Value != "T1" {
			t.Fatalf("got %q; want T1", it.Value)
		}
		time.Sleep(10 * time.Millisecond)
		if it, err := k.Invalidate(t.Context(), "T1"); err != nil || it.Value != "T2" {
			t.Fatalf("Invalidate: %q, %v; want T2", it.Value, err)
		}
		for range 3 {
			time.Sleep(credential.DefaultReread + time.Second)
			k.Get(t.Context())
			synctest.Wait()
			if it, _ := k.Get(t.Context()); it.Value != "T2" {
				t.Fatalf("after a re-read got %q; want T2, never the rejected T1", it.Value)
			}
		}
	})
}
