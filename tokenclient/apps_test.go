package tokenclient_test

// The multi-app routes (issue #14's contract, `serve --config`):
// /v1/apps/{id}/..., keys allowed per app, 403 for a key not allowed, 404
// for an unknown app only to a key for every app; Official Account apps and
// a WeCom app, whose node is fed through WeComOptions without its secret.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

const (
	shopKey = "shop-key-0123456789abcdef0123456789" // allowed for "shop" only
	opsKey  = "ops-key-0123456789abcdef01234567890" // allowed for "*"

	miniAppID  = "wx00000000000000b2"
	miniSecret = "0b2e7a1f0d94b3c8a6e1d2b7f0c9a4b2"
)

// appCred is one credential of one app on the fake multi-app server.
type appCred struct {
	typ string // the ticket type the answer carries; "" for a token
	get func(ctx context.Context) (store.Item, error)
	inv func(ctx context.Context, rejected string) error
}

// appsServer serves the contract's /v1/apps/{id}/ routes over granting
// Confs and wecom.Apps, and counts what it was asked.
type appsServer struct {
	apps map[string]map[string]appCred // app id → credential name → source
	keys map[string][]string           // key → app ids it is allowed ("*": all)

	mu   sync.Mutex
	hits map[string]int // "GET /v1/apps/shop/ticket?type=jsapi" → count
}

func (s *appsServer) count(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hits == nil {
		s.hits = map[string]int{}
	}
	s.hits[r.Method+" "+r.URL.RequestURI()]++
}

func (s *appsServer) hit(req string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[req]
}

func (s *appsServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.hits {
		n += c
	}
	return n
}

func (s *appsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.count(r)
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	allowed, ok := s.keys[key]
	if !ok {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer key"})
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/apps/")
	id, route, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint"})
		return
	}
	star := slices.Contains(allowed, "*")
	creds, known := s.apps[id]
	switch {
	case !star && !slices.Contains(allowed, id), !star && !known:
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "this key is not allowed for this app"})
		return
	case !known:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such app"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	name := route
	switch {
	case r.Method == http.MethodGet && route == "ticket":
		name = map[string]string{"": "jsapi_ticket", "jsapi": "jsapi_ticket", "wx_card": "wx_card_ticket", "agent_config": "agent_config_ticket"}[r.URL.Query().Get("type")]
	case r.Method == http.MethodPost && route == "invalidate":
		var req struct{ Kind, Value string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Value == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad body"})
			return
		}
		c, ok := creds[req.Kind]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad kind"})
			return
		}
		if err := c.inv(ctx, req.Value); err != nil {
			fail(w, err)
			return
		}
		name = req.Kind
	case r.Method != http.MethodGet:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method"})
		return
	}
	c, ok := creds[name]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such credential for this app"})
		return
	}
	item, err := c.get(ctx)
	if err != nil {
		fail(w, err)
		return
	}
	resp := map[string]any{"expires_at": item.ExpiresAt.Unix(), "expires_in": int64(max(time.Until(item.ExpiresAt), 0) / time.Second)}
	if c.typ == "" {
		resp["access_token"] = item.Value
	} else {
		resp["ticket"], resp["type"] = item.Value, c.typ
	}
	writeJSON(w, http.StatusOK, resp)
}

// oaCreds serves a granting Conf's three credentials.
func oaCreds(c *conf.Conf) map[string]appCred {
	m := map[string]appCred{}
	for _, k := range []struct {
		kind conf.Kind
		typ  string
	}{{conf.AccessToken, ""}, {conf.JSAPITicket, "jsapi"}, {conf.WXCardTicket, "wx_card"}} {
		m[k.kind.String()] = appCred{typ: k.typ,
			get: func(ctx context.Context) (store.Item, error) { return c.Credential(ctx, k.kind) },
			inv: func(ctx context.Context, v string) error { _, err := c.Invalidate(ctx, k.kind, v); return err },
		}
	}
	return m
}

// weComCreds serves a granting wecom.App's three credentials under the
// protocol's names.
func weComCreds(a *wecom.App) map[string]appCred {
	m := map[string]appCred{}
	for _, k := range []struct {
		kind      wecom.Kind
		name, typ string
	}{{wecom.AccessToken, "access_token", ""}, {wecom.JSAPITicket, "jsapi_ticket", "jsapi"}, {wecom.AgentTicket, "agent_config_ticket", "agent_config"}} {
		m[k.name] = appCred{typ: k.typ,
			get: func(ctx context.Context) (store.Item, error) { return a.Credential(ctx, k.kind) },
			inv: func(ctx context.Context, v string) error { _, err := a.Invalidate(ctx, k.kind, v); return err },
		}
	}
	return m
}

// appsCluster is a fake WeChat with two Official Accounts, a fake WeCom
// with one app, and a multi-app server over them at host "tok1":
// apps "shop", "mini" (OA) and "hr" (WeCom).
type appsCluster struct {
	*cluster
	wecom *wechattest.WeCom
	srv   *appsServer
}

func newAppsCluster(t *testing.T) *appsCluster {
	t.Helper()
	cl := newCluster(t, wechattest.WithApp(wechattest.DefaultAppID, wechattest.DefaultAppSecret), wechattest.WithApp(miniAppID, miniSecret))
	wc := wechattest.NewWeCom()
	oa := func(appid, secret string) *conf.Conf {
		c, err := conf.New(conf.WithAppID(appid, secret), conf.WithStore(cl.st),
			conf.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(cl.fake)}), conf.WithBaseURLs("http://wechat.test"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	hr, err := wecom.New(wechattest.DefaultCorpID, wechattest.DefaultAgentSecret, wecom.WithAgentID(wechattest.DefaultAgentID),
		wecom.WithStore(cl.st), wecom.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(wc)}), wecom.WithBaseURLs("http://wecom.test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hr.Close() })
	srv := &appsServer{
		apps: map[string]map[string]appCred{
			"shop": oaCreds(oa(wechattest.DefaultAppID, wechattest.DefaultAppSecret)),
			"mini": oaCreds(oa(miniAppID, miniSecret)),
			"hr":   weComCreds(hr),
		},
		keys: map[string][]string{shopKey: {"shop"}, opsKey: {"*"}},
	}
	cl.net.set("tok1", srv)
	return &appsCluster{cluster: cl, wecom: wc, srv: srv}
}

func (cl *appsCluster) appClient(t *testing.T, app, key string, urls ...string) *tokenclient.Client {
	t.Helper()
	tc, err := tokenclient.New(tokenclient.Config{URLs: urls, Key: key, App: app, HTTPClient: &http.Client{Transport: cl.net}})
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

func TestAppIDValidated(t *testing.T) {
	for _, bad := range []string{"Shop", "-shop", "_shop", "shop/../x", "a b", "shop?x=1", "é", strings.Repeat("a", 65)} {
		_, err := tokenclient.New(tokenclient.Config{URLs: []string{"https://tok"}, Key: testKey, App: bad})
		if err == nil || !strings.Contains(err.Error(), "not an app id") {
			t.Errorf("App %q: %v; want it refused", bad, err)
		}
		if tokenclient.ValidApp(bad) {
			t.Errorf("ValidApp(%q) = true", bad)
		}
	}
	for _, good := range []string{"a", "0", "shop", "shop_2026-12", strings.Repeat("z", 64)} {
		if _, err := tokenclient.New(tokenclient.Config{URLs: []string{"https://tok"}, Key: testKey, App: good}); err != nil {
			t.Errorf("App %q: %v", good, err)
		}
	}
}

// Two Official Accounts behind one server: each node gets its own app's
// credentials through /v1/apps/{id}/, never the other's, and a rejection
// is reported to its app's invalidate route.
func TestAppRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newAppsCluster(t)
		shop := cl.node(t, cl.appClient(t, "shop", shopKey, "http://tok1"))
		mini, err := conf.New(append(cl.appClient(t, "mini", opsKey, "http://tok1").ConfOptions(),
			conf.WithAppID(miniAppID, ""), conf.WithBaseURLs("http://wechat.test"))...)
		if err != nil {
			t.Fatal(err)
		}
		defer mini.Close()

		for _, tc := range []struct {
			c     *conf.Conf
			appid string
		}{{shop, wechattest.DefaultAppID}, {mini, miniAppID}} {
			tok, err := tc.c.AccessToken(t.Context())
			if err != nil || tok != cl.fake.CurrentToken(tc.appid) {
				t.Fatalf("%s: AccessToken: %v; want the app's current token", tc.appid, err)
			}
			for _, get := range []func(context.Context) (string, error){tc.c.JSAPITicket, tc.c.WXCardTicket} {
				if tk, err := get(t.Context()); err != nil || !cl.fake.ValidTicket(tk) {
					t.Fatalf("%s: ticket: %v", tc.appid, err)
				}
			}
		}
		if s := cl.fake.Stats(); s.TokenGrants != 2 || s.JSAPITickets != 2 || s.WXCardTickets != 2 {
			t.Errorf("stats %+v: want one token and one ticket of each type per app", s)
		}
		for _, req := range []string{
			"GET /v1/apps/shop/access_token", "GET /v1/apps/shop/ticket?type=jsapi", "GET /v1/apps/shop/ticket?type=wx_card",
			"GET /v1/apps/mini/access_token", "GET /v1/apps/mini/ticket?type=jsapi", "GET /v1/apps/mini/ticket?type=wx_card",
		} {
			if n := cl.srv.hit(req); n != 1 {
				t.Errorf("%s: asked %d times; want once", req, n)
			}
		}

		old := cl.fake.CurrentToken(wechattest.DefaultAppID)
		cl.fake.Revoke(wechattest.DefaultAppID)
		if err := shop.Do(t.Context(), func(tok string) error { return callWeChat(t.Context(), wechattest.InProcess(cl.fake), tok) }); err != nil {
			t.Fatalf("Do after the revocation: %v", err)
		}
		if n := cl.srv.hit("POST /v1/apps/shop/invalidate"); n != 1 {
			t.Errorf("POST /v1/apps/shop/invalidate: %d reports; want 1", n)
		}
		if tok, _ := shop.AccessToken(t.Context()); tok == old || !cl.fake.Valid(tok) {
			t.Error("shop does not hold a valid replacement")
		}
		if tok, _ := mini.AccessToken(t.Context()); tok != cl.fake.CurrentToken(miniAppID) {
			t.Error("mini's token changed with shop's revocation")
		}
	})
}

// A key not allowed for the app: a 403 StatusError that says so, not
// Temporary, and the next server is not asked (every server holds the same
// keys). An unknown app is a 404 to a key for every app, a 403 to any
// other (app ids are not enumerable).
func TestKeyNotAllowedForApp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newAppsCluster(t)
		other := &appsServer{apps: cl.srv.apps, keys: cl.srv.keys}
		cl.net.set("tok2", other)

		for _, tc := range []struct {
			app, key string
			status   int
			want     string
		}{
			{"mini", shopKey, 403, `the key is not allowed for app "mini"`},
			{"nope", shopKey, 403, `the key is not allowed for app "nope"`},
			{"nope", opsKey, 404, `no app "nope"`},
			{"shop", "wrong-key-0123456789abcdef", 401, "key is missing or wrong"},
		} {
			tc2 := cl.appClient(t, tc.app, tc.key, "http://tok1", "http://tok2")
			for _, call := range []func() error{
				func() error { _, err := tc2.Get(t.Context(), "access_token"); return err },
				func() error { _, err := tc2.Invalidate(t.Context(), "access_token", "OLD-TOKEN"); return err },
			} {
				err := call()
				var se *tokenclient.StatusError
				if !errors.As(err, &se) || se.StatusCode != tc.status || se.Temporary() || se.Server != "http://tok1" || se.App != tc.app {
					t.Errorf("app %s: %v; want a final %d StatusError from tok1", tc.app, err, tc.status)
					continue
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("app %s: %q; want it to say %q", tc.app, err, tc.want)
				}
				noSecret(t, "the error", err.Error(), tc.key, "OLD-TOKEN")
			}
		}
		if n := other.total(); n != 0 {
			t.Errorf("the second server was asked %d times after a 401/403/404; want never", n)
		}
		// A node refused: AccessToken fails with the 403, WeChat untouched.
		c := cl.node(t, cl.appClient(t, "mini", shopKey, "http://tok1", "http://tok2"))
		_, err := c.AccessToken(t.Context())
		var se *tokenclient.StatusError
		if !errors.As(err, &se) || se.StatusCode != 403 {
			t.Errorf("node of a forbidden app: %v; want the 403", err)
		}
		if s := cl.fake.Stats(); s.TokenGrants != 0 {
			t.Errorf("%d grants for refused requests", s.TokenGrants)
		}
	})
}

// A WeCom face node with no secret: its three credentials come from the
// server's /v1/apps/hr/ routes, WeCom grants each once, and a 40014 seen
// by Do goes to /v1/apps/hr/invalidate and is repaired with one new grant.
func TestWeComOptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newAppsCluster(t)
		nodes := make([]*wecom.App, 3)
		for i := range nodes {
			opts := append(cl.appClient(t, "hr", opsKey, "http://tok1").WeComOptions(),
				wecom.WithAgentID(wechattest.DefaultAgentID), wecom.WithBaseURLs("http://wecom.test"))
			a, err := wecom.New(wechattest.DefaultCorpID, "", opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			nodes[i] = a
		}
		for i, a := range nodes {
			tok, err := a.AccessToken(t.Context())
			if err != nil || tok != cl.wecom.CurrentToken(wechattest.DefaultCorpID, wechattest.DefaultAgentSecret) {
				t.Fatalf("node %d: AccessToken: %v; want the app's current token", i, err)
			}
			jt, err := a.JSAPITicket(t.Context())
			if kind, _, ok := cl.wecom.TicketOf(jt); err != nil || !ok || kind != "jsapi" {
				t.Fatalf("node %d: JSAPITicket: %v, kind %q", i, err, kind)
			}
			at, err := a.AgentTicket(t.Context())
			if kind, agent, ok := cl.wecom.TicketOf(at); err != nil || !ok || kind != "agent_config" || agent != wechattest.DefaultAgentID {
				t.Fatalf("node %d: AgentTicket: %v, kind %q agent %d", i, err, kind, agent)
			}
			if _, err := a.AgentConfig(t.Context(), "https://example.com/page"); err != nil {
				t.Fatalf("node %d: AgentConfig: %v", i, err)
			}
		}
		if s := cl.wecom.Stats(); s.TokenGrants != 1 || s.JSAPITickets != 1 || s.AgentTickets != 1 {
			t.Errorf("stats %+v: want one grant of each", s)
		}
		for _, req := range []string{"GET /v1/apps/hr/access_token", "GET /v1/apps/hr/ticket?type=jsapi", "GET /v1/apps/hr/ticket?type=agent_config"} {
			if n := cl.srv.hit(req); n != len(nodes) {
				t.Errorf("%s: asked %d times; want once per node (%d)", req, n, len(nodes))
			}
		}

		cl.wecom.RevokeAgent(wechattest.DefaultCorpID, wechattest.DefaultAgentID)
		cl.wecom.ResetStats()
		var wg sync.WaitGroup
		for i, a := range nodes {
			wg.Go(func() {
				if err := a.Do(t.Context(), func(tok string) error { return callWeCom(t.Context(), cl.wecom, tok) }); err != nil {
					t.Errorf("node %d: Do after the revocation: %v", i, err)
				}
			})
		}
		wg.Wait()
		if s := cl.wecom.Stats(); s.TokenGrants != 1 {
			t.Errorf("%d grants after the revocation; want 1", s.TokenGrants)
		}
		if n := cl.srv.hit("POST /v1/apps/hr/invalidate"); n < 1 || n > len(nodes) {
			t.Errorf("POST /v1/apps/hr/invalidate: %d reports; want 1 to %d", n, len(nodes))
		}
	})
}

// callWeCom makes a protected WeCom call (getcallbackip) with tok.
func callWeCom(ctx context.Context, h http.Handler, tok string) error {
	code, msg, err := callbackIP(ctx, wechattest.InProcess(h), "http://wecom.test", tok)
	if err != nil || code == 0 {
		return err
	}
	return &wecom.APIError{Endpoint: "/cgi-bin/getcallbackip", Code: code, Msg: msg, Platform: wecom.Platform}
}
