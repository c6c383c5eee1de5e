package tokenclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
)

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  tokenclient.Config
		want string
	}{
		{tokenclient.Config{Key: testKey}, "URLs is empty"},
		{tokenclient.Config{URLs: []string{"https://tok"}}, "Key is empty"},
		{tokenclient.Config{URLs: []string{"https://tok"}, Key: "a b"}, "white space"},
		{tokenclient.Config{URLs: []string{"ftp://tok"}, Key: testKey}, "not an http(s) URL"},
		{tokenclient.Config{URLs: []string{"https://"}, Key: testKey}, "not an http(s) URL"},
		{tokenclient.Config{URLs: []string{"https://u:PASSWORD@tok"}, Key: testKey}, "user or password"},
		{tokenclient.Config{URLs: []string{"https://tok/?x=1"}, Key: testKey}, "query"},
		{tokenclient.Config{URLs: []string{"https://tok"}, Key: testKey, Timeout: -1}, "negative"},
	} {
		_, err := tokenclient.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v): %v; want %q", tc.cfg, err, tc.want)
			continue
		}
		noSecret(t, "New's error", err.Error(), "PASSWORD", testKey)
	}
}

// Eight business nodes, each with its own Conf and Client, and two token
// servers: one grant of each credential in all, the same values
// everywhere, and the nodes' hot path serves them without asking again.
func TestOneGrantForManyNodes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		s1, s2 := cl.server(t, "tok1"), cl.server(t, "tok2")
		nodes := make([]*conf.Conf, 8)
		for i := range nodes {
			urls := []string{"http://tok1", "http://tok2"}
			if i%2 == 1 {
				urls[0], urls[1] = urls[1], urls[0]
			}
			nodes[i] = cl.node(t, cl.client(t, urls...))
		}
		toks, tickets := make([]string, 64), make([]string, 64)
		var wg sync.WaitGroup
		for i := range toks {
			wg.Go(func() {
				c := nodes[i%len(nodes)]
				var err error
				if toks[i], err = c.AccessToken(t.Context()); err != nil {
					t.Errorf("AccessToken: %v", err)
				}
				if tickets[i], err = c.JSAPITicket(t.Context()); err != nil {
					t.Errorf("JSAPITicket: %v", err)
				}
			})
		}
		wg.Wait()
		for i := range toks {
			if toks[i] != toks[0] || tickets[i] != tickets[0] {
				t.Fatalf("caller %d got another token or ticket than caller 0", i)
			}
		}
		if !cl.fake.Valid(toks[0]) || !cl.fake.ValidTicket(tickets[0]) {
			t.Error("the token or ticket is not valid at WeChat")
		}
		if s := cl.fake.Stats(); s.TokenGrants != 1 || s.JSAPITickets != 1 {
			t.Errorf("stats %+v: want one token grant and one ticket", s)
		}
		asked := s1.requests.Load() + s2.requests.Load()
		if asked > 16 {
			t.Errorf("%d requests to the servers from 8 nodes; want at most 2 each", asked)
		}
		for _, c := range nodes {
			c.AccessToken(t.Context())
		}
		if again := s1.requests.Load() + s2.requests.Load(); again != asked {
			t.Errorf("the nodes asked the servers again (%d more) instead of using their copies", again-asked)
		}
		// The card ticket comes from the server too.
		if tk, err := nodes[0].WXCardTicket(t.Context()); err != nil || !cl.fake.ValidTicket(tk) {
			t.Errorf("WXCardTicket: %v", err)
		}
	})
}

// WeChat revokes the token. Every node sees 40001 through its Transport
// (or Do), reports it to /v1/invalidate, and gets the replacement; the
// whole cluster makes one new grant.
func TestRevocationCostsOneGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		srv := cl.server(t, "tok1")
		nodes := make([]*conf.Conf, 6)
		for i := range nodes {
			nodes[i] = cl.node(t, cl.client(t, "http://tok1"))
		}
		for _, c := range nodes {
			if err := c.Do(t.Context(), func(tok string) error { return callWeChat(t.Context(), wechattest.InProcess(cl.fake), tok) }); err != nil {
				t.Fatal(err)
			}
		}
		old := cl.fake.CurrentToken(wechattest.DefaultAppID)
		cl.fake.Revoke(wechattest.DefaultAppID)
		cl.fake.ResetStats()

		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() {
				c := nodes[i%len(nodes)]
				var err error
				if i%2 == 0 {
					err = c.Do(t.Context(), func(tok string) error { return callWeChat(t.Context(), wechattest.InProcess(cl.fake), tok) })
				} else {
					err = callWeChat(t.Context(), c.Transport(wechattest.InProcess(cl.fake)), "")
				}
				if err != nil {
					t.Errorf("call %d after the revocation: %v", i, err)
				}
			})
		}
		wg.Wait()
		if s := cl.fake.Stats(); s.TokenGrants != 1 {
			t.Errorf("%d grants after the revocation; want 1", s.TokenGrants)
		}
		if n := srv.invalidates.Load(); n < 1 || n > int64(len(nodes)) {
			t.Errorf("%d reports reached /v1/invalidate; want 1 to %d (one per node at most)", n, len(nodes))
		}
		now := cl.fake.CurrentToken(wechattest.DefaultAppID)
		for _, c := range nodes {
			if tok, _ := c.AccessToken(t.Context()); tok != now || tok == old {
				t.Error("a node does not hold the replacement")
			}
		}
	})
}

// The first server is down (refused, then 5xx): the next one answers.
// A 4xx is final: no other server is asked.
func TestFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		cl.server(t, "tok2")
		tc := cl.client(t, "http://tok1", "http://tok2")
		if _, err := tc.Get(t.Context(), "access_token"); err != nil {
			t.Fatalf("with tok1 refusing: %v", err)
		}
		cl.net.set("tok1", status(http.StatusBadGateway))
		tc = cl.client(t, "http://tok1", "http://tok2")
		if _, err := tc.Get(t.Context(), "jsapi_ticket"); err != nil {
			t.Fatalf("with tok1 answering 502: %v", err)
		}
		cl.net.set("tok1", status(http.StatusUnauthorized))
		tc = cl.client(t, "http://tok1", "http://tok2")
		_, err := tc.Get(t.Context(), "access_token")
		var se *tokenclient.StatusError
		if !errors.As(err, &se) || se.StatusCode != 401 || se.Server != "http://tok1" {
			t.Fatalf("with tok1 answering 401: %v; want its StatusError, no failover", err)
		}
		noSecret(t, "the 401 error", err.Error(), testKey)

		// Both down: one error naming both, each matchable.
		cl.net.set("tok1", nil)
		cl.net.set("tok2", status(http.StatusServiceUnavailable))
		_, err = cl.client(t, "http://tok1", "http://tok2").Get(t.Context(), "access_token")
		if !errors.Is(err, errRefused) || !errors.As(err, &se) || se.StatusCode != 503 ||
			!strings.Contains(err.Error(), "tok1") || !strings.Contains(err.Error(), "tok2") {
			t.Errorf("both down: %v", err)
		}
	})
}

// Once a server answered, the next call starts from it: a dead first URL
// does not cost every call a failed attempt.
func TestStartsFromTheServerThatAnswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		var dead atomic.Int64
		cl.net.set("tok1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dead.Add(1)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "down"})
		}))
		cl.server(t, "tok2")
		tc := cl.client(t, "http://tok1", "http://tok2")
		for range 3 {
			if _, err := tc.Get(t.Context(), "access_token"); err != nil {
				t.Fatal(err)
			}
		}
		if n := dead.Load(); n != 1 {
			t.Errorf("the dead server was asked %d times; want once", n)
		}
	})
}

// A server that hangs is given up on after RequestTimeout, and the next one
// answers within the call's bound; a call never outlasts Timeout.
func TestEveryCallIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		hang := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		cl.net.set("tok1", hang)
		cl.server(t, "tok2")
		tc, err := tokenclient.New(tokenclient.Config{URLs: []string{"http://tok1", "http://tok2"}, Key: testKey,
			HTTPClient: &http.Client{Transport: cl.net}, RequestTimeout: 2 * time.Second, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := tc.Get(t.Context(), "access_token"); err != nil {
			t.Fatalf("Get: %v", err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("took %v; want the 2 s request bound, then the next server", d)
		}
		cl.net.set("tok2", hang)
		start = time.Now()
		_, err = tc.Get(t.Context(), "access_token")
		if err == nil || !strings.Contains(err.Error(), "RequestTimeout") {
			t.Errorf("both hanging: %v; want a request timeout", err)
		}
		if d := time.Since(start); d != 4*time.Second {
			t.Errorf("both hanging took %v; want 2 × 2 s", d)
		}
		tc3, _ := tokenclient.New(tokenclient.Config{URLs: []string{"http://tok1", "http://tok2", "http://tok1"}, Key: testKey,
			HTTPClient: &http.Client{Transport: cl.net}, RequestTimeout: 2 * time.Second, Timeout: 5 * time.Second})
		start = time.Now()
		_, err = tc3.Get(t.Context(), "access_token")
		if d := time.Since(start); err == nil || d != 5*time.Second {
			t.Errorf("three hanging: %v after %v; want the 5 s total bound", err, d)
		}
	})
}

// The servers go away under load and come back (a restart, a deploy):
// while the nodes' tokens are valid no caller sees an error, even past
// their refresh point; afterwards they hold a fresh token.
func TestServerRestartUnderLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		cl.server(t, "tok1")
		nodes := make([]*conf.Conf, 4)
		for i := range nodes {
			nodes[i] = cl.node(t, cl.client(t, "http://tok1"))
			if _, err := nodes[i].AccessToken(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		first, _ := nodes[0].GetAccessToken(t.Context())

		cl.net.set("tok1", nil) // down
		var errs atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for i := range 16 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := nodes[i%len(nodes)].AccessToken(t.Context()); err != nil {
						errs.Add(1)
					}
					time.Sleep(time.Second)
				}
			})
		}
		// Past every refresh point (expiry less the margin and its
		// spread), short of the expiry.
		time.Sleep(time.Until(first.ExpiresAt.Add(-90 * time.Second)))
		cl.server(t, "tok1") // back, a new process on the same store
		time.Sleep(10 * time.Second)
		close(stop)
		wg.Wait()
		if n := errs.Load(); n != 0 {
			t.Errorf("%d caller errors while the token was valid", n)
		}
		for _, c := range nodes {
			item, err := c.GetAccessToken(t.Context())
			if err != nil || item.Value == first.Value || !cl.fake.Valid(item.Value) {
				t.Errorf("after the restart: %v, %v; want a new valid token", item.ExpiresAt, err)
			}
		}
		if s := cl.fake.Stats(); s.TokenGrants != 2 {
			t.Errorf("%d grants; want 2 (one per cycle)", s.TokenGrants)
		}
	})
}

// The cluster's forced-refresh limit answers 429: the node's error is a
// RefreshLimitedError with the server's Retry-After, the same report is
// not sent again before it, and after it the repair goes through.
func TestRefreshLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		srv := cl.server(t, "tok1")
		a := cl.node(t, cl.client(t, "http://tok1"))
		b := cl.node(t, cl.client(t, "http://tok1"))
		wechat := func(c *conf.Conf) error {
			return c.Do(t.Context(), func(tok string) error { return callWeChat(t.Context(), wechattest.InProcess(cl.fake), tok) })
		}
		if err := wechat(a); err != nil {
			t.Fatal(err)
		}
		if err := wechat(b); err != nil {
			t.Fatal(err)
		}
		cl.fake.Revoke(wechattest.DefaultAppID)
		if err := wechat(a); err != nil { // the first forced refresh
			t.Fatalf("first repair: %v", err)
		}
		cl.fake.Revoke(wechattest.DefaultAppID) // again, at once
		start := time.Now()
		err := wechat(a)
		var le *conf.RefreshLimitedError
		if !errors.Is(err, conf.ErrRefreshLimited) || !errors.As(err, &le) || !errors.Is(err, conf.ErrTokenInvalid) {
			t.Fatalf("second repair: %v; want ErrTokenInvalid and the RefreshLimitedError", err)
		}
		if d := le.Next.Sub(start); d < 29*time.Second || d > 31*time.Second {
			t.Errorf("Next is %v away; want the server's 30 s Retry-After", d)
		}
		reports := srv.invalidates.Load()
		if err := wechat(a); !errors.Is(err, conf.ErrRefreshLimited) {
			t.Errorf("repeat: %v; want ErrRefreshLimited", err)
		}
		if n := srv.invalidates.Load(); n != reports {
			t.Errorf("the same report was sent again before Retry-After (%d more)", n-reports)
		}
		// Node b still held the first revoked token: the server does not
		// hand it the current one, which a reported rejected a moment ago
		// (the engine never serves a value reported rejected lately); b's
		// report is refused like a's, by the same limit.
		for i := range 2 {
			if err := wechat(b); !errors.Is(err, conf.ErrTokenInvalid) || !errors.Is(err, conf.ErrRefreshLimited) {
				t.Errorf("node b, call %d: %v; want its 40001 and the server's limit", i, err)
			}
		}
		time.Sleep(time.Until(le.Next) + time.Second)
		if err := wechat(a); err != nil {
			t.Errorf("after Retry-After: %v", err)
		}
		if err := wechat(b); err != nil {
			t.Errorf("node b after Retry-After: %v", err)
		}
	})
}

// Retry-After as an HTTP date, absent, or absurd.
func TestRetryAfterForms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct {
			header string
			want   time.Duration
		}{
			{"7", 7 * time.Second},
			{time.Now().Add(42 * time.Second).UTC().Format(http.TimeFormat), 42 * time.Second},
			{"", tokenclient.DefaultRetryAfter},
			{"soon", tokenclient.DefaultRetryAfter},
			{"0", time.Second},
			{"999999", 10 * time.Minute},
		} {
			cl := newCluster(t)
			if tc.header == "" {
				cl.net.set("tok1", status(http.StatusTooManyRequests))
			} else {
				cl.net.set("tok1", status(http.StatusTooManyRequests, "Retry-After", tc.header))
			}
			_, err := cl.client(t, "http://tok1", "http://tok2").Invalidate(t.Context(), "access_token", "OLD-TOKEN")
			var le *credential.RefreshLimitedError
			if !errors.As(err, &le) || le.Name != "access_token" {
				t.Errorf("Retry-After %q: %v", tc.header, err)
				continue
			}
			if d := time.Until(le.Next); d != tc.want {
				t.Errorf("Retry-After %q: Next in %v, want %v", tc.header, d, tc.want)
			}
			noSecret(t, "the 429 error", err.Error(), "OLD-TOKEN", testKey)
		}
	})
}

// Answers that are not the server's: bad JSON, no value, the wrong ticket
// type, an expired credential, a redirect (never followed: the key would
// travel on).
func TestRefusesOddAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tc := range []struct {
			name, kind string
			h          http.HandlerFunc
			want       string
		}{
			{"not json", "access_token", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>TOKEN-X")) }, "not the token server's JSON"},
			{"no value", "access_token", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"expires_in": 7000}) }, "holds no access_token"},
			{"wrong type", "jsapi_ticket", func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 200, map[string]any{"ticket": "TOKEN-X", "type": "wx_card", "expires_in": 7000})
			}, "got type"},
			{"expired", "access_token", func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 200, map[string]any{"access_token": "TOKEN-X", "expires_in": 0})
			}, "expired"},
			{"redirect", "access_token", func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://elsewhere/steal", http.StatusFound)
			}, "HTTP 302"},
			{"echoes the key", "access_token", func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 400, map[string]string{"error": "bad " + r.Header.Get("Authorization")})
			}, "HTTP 400"},
		} {
			cl := newCluster(t)
			cl.net.set("tok1", tc.h)
			_, err := cl.client(t, "http://tok1").Get(t.Context(), tc.kind)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
				continue
			}
			noSecret(t, tc.name, err.Error(), "TOKEN-X", testKey)
		}
		cl := newCluster(t)
		cl.net.set("tok1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			writeJSON(w, 400, map[string]string{"error": "bad body " + string(body)})
		}))
		_, err := cl.client(t, "http://tok1").Invalidate(t.Context(), "access_token", "TOKEN-X")
		var se *tokenclient.StatusError
		if !errors.As(err, &se) || se.StatusCode != 400 {
			t.Errorf("echoed report: %v; want a 400 StatusError", err)
		} else {
			noSecret(t, "an echoed report", err.Error(), "TOKEN-X", testKey)
		}
		tc := cl.client(t, "http://tok1")
		if _, err := tc.Get(t.Context(), "../admin"); err == nil {
			t.Error("a name that is not a credential's was sent")
		}
		if _, err := tc.Invalidate(t.Context(), "access_token", ""); err == nil {
			t.Error("an empty report was sent")
		}
	})
}

// Neither the key nor a credential shows in the Client's and Config's
// printed forms, nor in the errors of a node whose servers fail.
func TestSecretsNeverShow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t)
		cl.server(t, "tok1")
		cfg := tokenclient.Config{URLs: []string{"http://tok1"}, Key: testKey, HTTPClient: &http.Client{Transport: cl.net}}
		tc, err := tokenclient.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v %#v", cfg, cfg), fmt.Sprint(tc), fmt.Sprintf("%+v %#v", tc, tc)} {
			noSecret(t, "a printed form", s, testKey)
		}
		c := cl.node(t, tc)
		tok, err := c.AccessToken(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		cl.fake.Revoke(wechattest.DefaultAppID)
		cl.net.set("tok1", status(http.StatusServiceUnavailable))
		err = c.Do(t.Context(), func(tok string) error { return callWeChat(t.Context(), wechattest.InProcess(cl.fake), tok) })
		if err == nil {
			t.Fatal("Do succeeded with the servers down and the token revoked")
		}
		noSecret(t, "Do's error", err.Error(), testKey, tok, wechattest.DefaultAppSecret)
		_, err = tc.Invalidate(t.Context(), "access_token", tok)
		noSecret(t, "Invalidate's error", err.Error(), testKey, tok)
	})
}

// Over real sockets: the first URL is a closed port, the second a real
// HTTP server of the protocol.
func TestFailoverOverTheNetwork(t *testing.T) {
	fake := wechattest.NewServer()
	defer fake.Close()
	sc, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithBaseURLs(fake.URL()), conf.WithHTTPClient(fake.Client()))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ts := httptest.NewServer(&tokenServer{conf: sc, key: testKey})
	defer ts.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	tc, err := tokenclient.New(tokenclient.Config{URLs: []string{closed, ts.URL}, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	c, err := conf.New(append(tc.ConfOptions(), conf.WithAppID(wechattest.DefaultAppID, ""))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := c.AccessToken(ctx)
	if err != nil || !fake.Valid(tok) {
		t.Fatalf("AccessToken over the network: %v", err)
	}
	if s := fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("%d grants, want 1", s.TokenGrants)
	}
}
