package wechattest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangGuard bounds waits for something that must happen; reaching it means
// the code hangs, not that it is slow.
const hangGuard = 30 * time.Second

// waitFor polls cond until it holds, failing the test if it never does.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// fetch sends a request over the network and decodes the answer.
func fetch(ctx context.Context, c *http.Client, method, u, body string) (answer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return answer{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return decode(resp.StatusCode, resp.Header.Get("Content-Type"), string(raw)), nil
}

func TestServer(t *testing.T) {
	srv := NewServer()
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL())
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || strings.HasSuffix(srv.URL(), "/") {
		t.Fatalf("URL() = %q: want http://127.0.0.1:port without trailing slash", srv.URL())
	}
	a, err := fetch(context.Background(), srv.Client(), "GET", srv.URL()+tokenURL(DefaultAppID, DefaultAppSecret), "")
	if err != nil || a.AccessToken == "" || a.ExpiresIn != 7200 {
		t.Fatalf("token over HTTP: %v %q", err, a.raw)
	}
	s, err := fetch(context.Background(), srv.Client(), "POST", srv.URL()+PathStableToken, stableBody(DefaultAppID, DefaultAppSecret, false))
	if err != nil || s.AccessToken == "" || s.AccessToken == a.AccessToken {
		t.Fatalf("stable_token over HTTP: %v %q", err, s.raw)
	}
	tk, err := fetch(context.Background(), srv.Client(), "GET", srv.URL()+PathGetTicket+"?type=wx_card&access_token="+url.QueryEscape(s.AccessToken), "")
	if err != nil || tk.Ticket == "" || !srv.ValidTicket(tk.Ticket) {
		t.Fatalf("getticket over HTTP: %v %q", err, tk.raw)
	}
	if got := srv.Stats(); got.TokenGrants != 1 || got.StableTokenGrants != 1 || got.WXCardTickets != 1 || got.Requests != 3 {
		t.Errorf("Stats = %+v", got)
	}
	srv.Close()
	srv.Close() // twice is fine
	if _, err := fetch(context.Background(), http.DefaultClient, "GET", srv.URL()+tokenURL(DefaultAppID, DefaultAppSecret), ""); err == nil {
		t.Error("the listener still answers after Close")
	}
}

func TestConcurrentGrants(t *testing.T) {
	srv := NewServer()
	t.Cleanup(srv.Close)
	const n = 64
	srv.FailNext(9, Busy()) // some fail: grants must still match successes
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		tokens = map[string]int{}
		busy   int
	)
	for range n {
		wg.Go(func() {
			a, err := fetch(context.Background(), srv.Client(), "GET", srv.URL()+tokenURL(DefaultAppID, DefaultAppSecret), "")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("request failed: %v", err)
			case a.Errcode == CodeBusy:
				busy++
			case a.AccessToken != "":
				tokens[a.AccessToken]++
			default:
				t.Errorf("unexpected answer %q", a.raw)
			}
		})
	}
	wg.Wait()
	var successes int
	for tok, c := range tokens {
		successes += c
		if c != 1 {
			t.Errorf("token %.8s… issued %d times", tok, c)
		}
	}
	s := srv.Stats()
	if busy != 9 || successes != n-9 || s.TokenGrants != successes || s.Requests != n {
		t.Errorf("busy %d, successes %d, Stats %+v: want 9 busy, %d grants counted, %d requests", busy, successes, s, n-9, n)
	}
	// Exactly the latest two are valid; all others were replaced at once.
	var valid int
	for tok := range tokens {
		if srv.Valid(tok) {
			valid++
		}
	}
	if valid != 2 {
		t.Errorf("%d tokens valid after %d grants, want 2 (current and previous)", valid, successes)
	}
}

func TestConcurrentMixed(t *testing.T) {
	clk := NewClock(time.Time{})
	f := New(WithClock(clk.Now), WithDailyQuota(-1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var granted int
	for i := range 16 {
		wg.Go(func() {
			for j := range 20 {
				switch (i + j) % 8 {
				case 0:
					if a := getToken(t, f, DefaultAppID, DefaultAppSecret); a.AccessToken != "" {
						mu.Lock()
						granted++
						mu.Unlock()
						getTicket(t, f, a.AccessToken, "jsapi")
						callProtected(t, f, a.AccessToken)
						f.Valid(a.AccessToken)
					}
				case 1:
					getStable(t, f, DefaultAppID, DefaultAppSecret, j%3 == 0)
				case 2:
					f.Revoke(DefaultAppID)
				case 3:
					f.GrantElsewhere(DefaultAppID)
				case 4:
					f.FailNext(1, Malformed())
				case 5:
					_ = f.Stats()
					f.ValidTicket(f.CurrentToken(DefaultAppID))
				case 6:
					clk.Advance(time.Second)
				case 7:
					f.SetLatency(0)
				}
			}
		})
	}
	wg.Wait()
	if s := f.Stats(); s.TokenGrants != granted || s.ExternalGrants != 40 {
		t.Errorf("Stats %+v: want %d grants and 40 external", s, granted)
	}
}

func TestLatencyCancelledContext(t *testing.T) {
	f := New(WithLatency(time.Hour))
	f.FailNext(1, Busy())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, "GET", tokenURL(DefaultAppID, DefaultAppSecret), nil)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { f.ServeHTTP(rec, req); close(done) }()
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("ServeHTTP ignored the cancelled context and waited out the latency")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("cancelled request got a body: %q", rec.Body.String())
	}
	if s := f.Stats(); s.TokenGrants != 0 || s.Requests != 1 {
		t.Errorf("Stats = %+v, want 1 request and no grant", s)
	}
	f.SetLatency(0)
	wantErr(t, "the fault was not used by the cancelled request", getToken(t, f, DefaultAppID, DefaultAppSecret), -1, "")
	// The protected call has no latency.
	f.SetLatency(time.Hour)
	tok := f.GrantElsewhere(DefaultAppID)
	wantAccepted(t, "protected call under latency", f, tok)
}

func TestLatencyCancelOverHTTP(t *testing.T) {
	srv := NewServer(WithLatency(time.Hour))
	t.Cleanup(srv.Close)
	for _, c := range []struct{ method, path, body string }{
		{"GET", tokenURL(DefaultAppID, DefaultAppSecret), ""},
		{"POST", PathStableToken, stableBody(DefaultAppID, DefaultAppSecret, false)},
		{"GET", PathGetTicket + "?type=jsapi&access_token=x", ""},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := fetch(ctx, srv.Client(), c.method, srv.URL()+c.path, c.body)
			errc <- err
		}()
		waitFor(t, "the request to reach the handler", func() bool { return srv.inside.Load() == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("%s: client error %v, want context.Canceled", c.path, err)
		}
		waitFor(t, "the handler to return after cancellation", func() bool { return srv.inside.Load() == 0 })
	}
	if s := srv.Stats(); s.TokenGrants != 0 || s.StableTokenGrants != 0 || s.Rejections != 0 || s.Requests != 3 {
		t.Errorf("Stats = %+v, want 3 requests and nothing done", s)
	}

	srv.SetLatency(0)
	if a, err := fetch(context.Background(), srv.Client(), "GET", srv.URL()+tokenURL(DefaultAppID, DefaultAppSecret), ""); err != nil || a.AccessToken == "" {
		t.Errorf("after SetLatency(0): %v %q", err, a.raw)
	}
}

func TestSetLatencyApplies(t *testing.T) {
	srv := NewServer()
	t.Cleanup(srv.Close)
	srv.SetLatency(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := fetch(ctx, srv.Client(), "GET", srv.URL()+tokenURL(DefaultAppID, DefaultAppSecret), "")
		errc <- err
	}()
	waitFor(t, "the request to reach the handler", func() bool { return srv.inside.Load() == 1 })
	// Held by the latency: the grant has not happened.
	if s := srv.Stats(); s.TokenGrants != 0 {
		t.Errorf("granted despite an hour of latency: %+v", s)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v, want context.Canceled", err)
	}
}

func TestCloseEndsLatency(t *testing.T) {
	srv := NewServer(WithLatency(time.Hour))
	tok := srv.GrantElsewhere(DefaultAppID)
	reqs := []struct{ method, path, body string }{
		{"GET", tokenURL(DefaultAppID, DefaultAppSecret), ""},
		{"POST", PathStableToken, stableBody(DefaultAppID, DefaultAppSecret, true)},
		{"GET", PathGetTicket + "?type=jsapi&access_token=" + url.QueryEscape(tok), ""},
	}
	type result struct {
		a   answer
		err error
	}
	results := make(chan result, len(reqs))
	for _, r := range reqs {
		go func() {
			a, err := fetch(context.Background(), srv.Client(), r.method, srv.URL()+r.path, r.body)
			results <- result{a, err}
		}()
	}
	waitFor(t, "all requests to reach the handler", func() bool { return srv.inside.Load() == int64(len(reqs)) })

	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(hangGuard):
		t.Fatal("Close did not end the latency waits")
	}
	for range reqs {
		r := <-results
		if r.err == nil && r.a.status != http.StatusServiceUnavailable {
			t.Errorf("request during Close: status %d body %q, want 503 or an error", r.a.status, r.a.raw)
		}
	}
	if s := srv.Stats(); s.TokenGrants != 0 || s.StableTokenGrants != 0 || s.JSAPITickets != 0 {
		t.Errorf("granted during Close: %+v", s)
	}
	if srv.inside.Load() != 0 {
		t.Error("handlers still running after Close returned")
	}
}

func TestServedJSONShapes(t *testing.T) {
	// Field names and types exactly as WeChat sends them, checked on raw JSON.
	f := New()
	tok := mustToken(t, f)
	cases := map[string]struct {
		a    answer
		keys []string
	}{
		"token":  {getToken(t, f, DefaultAppID, DefaultAppSecret), []string{"access_token", "expires_in"}},
		"stable": {getStable(t, f, DefaultAppID, DefaultAppSecret, false), []string{"access_token", "expires_in"}},
		"ticket": {getTicket(t, f, tok, "jsapi"), []string{"errcode", "errmsg", "ticket", "expires_in"}},
		"ip":     {callProtected(t, f, f.CurrentToken(DefaultAppID)), []string{"ip_list"}},
		"error":  {callProtected(t, f, "nope"), []string{"errcode", "errmsg"}},
	}
	for name, c := range cases {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(c.a.raw), &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m) != len(c.keys) {
			t.Errorf("%s: keys %v, want %v", name, m, c.keys)
		}
		for _, k := range c.keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q in %s", name, k, c.a.raw)
			}
		}
		if c.a.ctype != contentTypeJSON {
			t.Errorf("%s: Content-Type %q", name, c.a.ctype)
		}
	}
}
