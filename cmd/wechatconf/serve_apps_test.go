package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// The apps of the multi-app tests, on two fakes: two Official Accounts, a
// Mini Program and a WeCom app.
const (
	appShop = "wx00000000000000a1"
	appNews = "wx00000000000000a2"
	appMini = "wx00000000000000b3"
)

// apps is a multi-app server behind httptest, built the way serve --config
// builds it, with its configuration file at hand for reloads.
type apps struct {
	t      *testing.T
	fake   *wechattest.Server
	wc     *wechattest.WeComServer
	dir    string
	e      *cmdEnv
	srv    *httptest.Server
	logs   *watcher
	client *http.Client
}

// appsConfig is the configuration of newApps: fmt-formatted with the fake's
// URL, the WeCom fake's URL and the SHA-256 of cfgKeyA.
const appsConfig = `{
  "store": "memory:",
  "api_base": [%[1]q],
  "apps": [
    {"id": "shop", "kind": "official_account", "appid": "wx00000000000000a1", "secret_file": "shop.secret"},
    {"id": "news", "kind": "official_account", "appid": "wx00000000000000a2", "secret_env": "NEWS_SECRET"},
    {"id": "mini", "kind": "mini_program", "appid": "wx00000000000000b3", "secret_env": "MINI_SECRET"},
    {"id": "hr", "kind": "wecom", "corpid": "ww00000000000000c1", "agentid": 1000002, "secret_file": "hr.secret", "api_base": [%[2]q]}
  ],
  "keys": [
    {"name": "shop-old", "sha256": %[3]q, "apps": ["shop"]},
    {"name": "shop-new", "file": "shop-new.key", "apps": ["shop"]},
    {"name": "apps", "env": "APPS_KEY", "apps": ["news", "mini", "hr"]},
    {"name": "ops", "env": "OPS_KEY", "apps": ["*"]}
  ]
}`

const (
	keyShopNew = "shop-new-key-0123456789abcdef"
	keyApps    = "apps-key-0123456789abcdef"
	keyOps     = "ops-key-0123456789abcdef"
)

func newApps(t *testing.T) *apps {
	t.Helper()
	fake := newFake(t, wechattest.WithApp(appShop, cfgSecretA), wechattest.WithApp(appNews, cfgSecretB), wechattest.WithApp(appMini, cfgSecretA))
	wc := newWeComFake(t)
	dir := configDir(t, map[string]string{
		"shop.secret":  cfgSecretA,
		"hr.secret":    wechattest.DefaultAgentSecret,
		"shop-new.key": keyShopNew,
	})
	a := &apps{t: t, fake: fake, wc: wc, dir: dir, logs: &watcher{}, client: &http.Client{Timeout: time.Minute}}
	a.write(fmt.Sprintf(appsConfig, fake.URL(), wc.URL(), hexSum(cfgKeyA)))
	getenv := env{"NEWS_SECRET": cfgSecretB, "MINI_SECRET": cfgSecretA, "APPS_KEY": keyApps, "OPS_KEY": keyOps}.get
	log := slog.New(slog.NewTextHandler(a.logs, nil))
	path := filepath.Join(dir, "wechatconf.json")
	files := fileCheck{strict: true}
	p, err := loadConfig(path, getenv, files)
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewMemory()
	reg, m, h := newTestServer(t, p, st, log)
	a.e = &cmdEnv{o: &options{}, log: log, metrics: m, store: st, reg: reg, configPath: path, getenv: getenv, files: files,
		storeURL: p.store, storeFromFile: true}
	a.srv = httptest.NewServer(h)
	t.Cleanup(a.srv.Close)
	return a
}

// newTestServer starts the apps of p on st as serve --config does, closed
// at the end of the test, and their handler.
func newTestServer(tb testing.TB, p *plan, st store.Store, log *slog.Logger) (*registry, *metrics, *handler) {
	tb.Helper()
	m := newMetrics("")
	reg, err := newRegistry(p, &appBuilder{st: st, log: log, m: m})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { reg.close() })
	return reg, m, newSetHandler(reg, st, "{wechatconf}:readyz", m, log)
}

// write replaces the configuration file.
func (a *apps) write(content string) {
	a.t.Helper()
	if err := os.WriteFile(filepath.Join(a.dir, "wechatconf.json"), []byte(content), 0o600); err != nil {
		a.t.Fatal(err)
	}
}

// do sends a request with key ("" for none) and returns the status and
// the decoded answer (credential or error).
func (a *apps) do(method, path, key, body string) (int, credentialResponse, errorResponse) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var cr credentialResponse
	var er errorResponse
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &cr); err != nil {
			a.t.Fatalf("%s %s: %v in %q", method, path, err, b)
		}
	} else if err := json.Unmarshal(b, &er); err != nil || er.Error == "" {
		a.t.Fatalf("%s %s: %d, not a JSON error: %q", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, cr, er
}

// Each app's routes give its own credentials; a key reads only its apps
// (403 elsewhere, and for an unknown app, so that ids cannot be guessed
// through it); the "*" key reads all and learns which ids are unknown.
func TestServeAppsScopedKeys(t *testing.T) {
	a := newApps(t)
	for _, tc := range []struct {
		path, key string
		code      int
		check     func(credentialResponse) bool
	}{
		{"/v1/apps/shop/access_token", cfgKeyA, 200, func(r credentialResponse) bool { return r.AccessToken == a.fake.CurrentToken(appShop) }},
		{"/v1/apps/shop/access_token", keyShopNew, 200, func(r credentialResponse) bool { return r.AccessToken == a.fake.CurrentToken(appShop) }},
		{"/v1/apps/shop/jsapi_ticket", keyShopNew, 200, func(r credentialResponse) bool { return a.fake.ValidTicket(r.Ticket) && r.Type == "jsapi" }},
		{"/v1/apps/shop/ticket?type=wx_card", cfgKeyA, 200, func(r credentialResponse) bool { return a.fake.ValidTicket(r.Ticket) && r.Type == "wx_card" }},
		{"/v1/apps/news/access_token", keyApps, 200, func(r credentialResponse) bool { return r.AccessToken == a.fake.CurrentToken(appNews) }},
		{"/v1/apps/mini/access_token", keyApps, 200, func(r credentialResponse) bool { return r.AccessToken == a.fake.CurrentToken(appMini) }},
		{"/v1/apps/hr/access_token", keyApps, 200, func(r credentialResponse) bool { return a.wc.Valid(r.AccessToken) }},
		{"/v1/apps/hr/jsapi_ticket", keyOps, 200, func(r credentialResponse) bool { return a.wc.ValidTicket(r.Ticket) && r.Type == "jsapi" }},
		{"/v1/apps/hr/agent_config_ticket", keyOps, 200, func(r credentialResponse) bool { return a.wc.ValidTicket(r.Ticket) && r.Type == "agent_config" }},
		{"/v1/apps/hr/ticket?type=agent_config", keyApps, 200, func(r credentialResponse) bool { return a.wc.ValidTicket(r.Ticket) }},
		{"/v1/apps/news/access_token", keyOps, 200, func(r credentialResponse) bool { return r.AccessToken == a.fake.CurrentToken(appNews) }},
		// Another app's key: 403, whichever app.
		{"/v1/apps/news/access_token", cfgKeyA, 403, nil},
		{"/v1/apps/shop/access_token", keyApps, 403, nil},
		{"/v1/apps/shop/invalidate", keyApps, 403, nil},
		{"/v1/apps/nope/access_token", keyApps, 403, nil},
		{"/v1/apps/nope/access_token", keyOps, 404, nil},
		// No key, or a wrong one: 401.
		{"/v1/apps/shop/access_token", "", 401, nil},
		{"/v1/apps/shop/access_token", "wrong-key-0123456789abcdef", 401, nil},
		// What an app does not have.
		{"/v1/apps/mini/jsapi_ticket", keyApps, 404, nil},
		{"/v1/apps/hr/wx_card_ticket", keyApps, 404, nil},
		{"/v1/apps/shop/agent_config_ticket", cfgKeyA, 404, nil},
		{"/v1/apps/shop/ticket?type=nope", cfgKeyA, 400, nil},
		{"/v1/apps/shop/nope", cfgKeyA, 404, nil},
		{"/v1/apps/shop", cfgKeyA, 404, nil},
		// The single-app routes name no app: with four, they say where to go.
		{"/v1/access_token", keyOps, 404, nil},
	} {
		code, resp, er := a.do("GET", tc.path, tc.key, "")
		if code != tc.code {
			t.Errorf("GET %s with %q: %d %q, want %d", tc.path, tc.key, code, er.Error, tc.code)
			continue
		}
		if tc.check != nil && !tc.check(resp) {
			t.Errorf("GET %s: wrong credential %+v", tc.path, resp)
		}
		if code != 200 && strings.Contains(er.Error, "nope") {
			t.Errorf("GET %s: the answer echoes the path: %q", tc.path, er.Error)
		}
	}
	if _, _, er := a.do("GET", "/v1/access_token", keyOps, ""); !strings.Contains(er.Error, "/v1/apps/{id}/access_token") {
		t.Errorf("single-app route on four apps: %q, want a pointer to /v1/apps/{id}/access_token", er.Error)
	}
	if code, _, _ := a.do("DELETE", "/v1/apps/shop/access_token", cfgKeyA, ""); code != 405 {
		t.Errorf("DELETE: %d, want 405", code)
	}
	if code, _, _ := a.do("GET", "/v1/apps/shop/invalidate", cfgKeyA, ""); code != 405 {
		t.Errorf("GET invalidate: %d, want 405", code)
	}
	// One grant per credential asked, whatever the keys.
	if s := a.fake.Stats(); s.TokenGrants != 3 {
		t.Errorf("%d token grants for three apps, want 3", s.TokenGrants)
	}
	// The log and /metrics name apps, never a key, a secret or a
	// credential; /metrics has each app's series under its id.
	metrics := scrapeMetrics(t, a.e.metrics)
	for _, s := range []string{cfgKeyA, keyShopNew, keyApps, keyOps, hexSum(cfgKeyA), cfgSecretA, cfgSecretB, wechattest.DefaultAgentSecret,
		a.fake.CurrentToken(appShop), a.fake.CurrentToken(appNews), a.fake.CurrentToken(appMini)} {
		if strings.Contains(a.logs.String(), s) {
			t.Fatalf("the log shows a key, secret or token:\n%s", a.logs)
		}
		if strings.Contains(metrics, s) {
			t.Fatalf("/metrics shows a key, secret or token")
		}
	}
	for _, want := range []string{
		`wechatconf_grants_total{app="shop",kind="access_token"} 1`,
		`wechatconf_grants_total{app="hr",kind="agent_config_ticket"} 1`,
		`wechatconf_http_requests_total{app="shop",code="404",path="/v1/apps/{id}/agent_config_ticket"} 1`,
		`wechatconf_http_requests_total{app="",code="401",path="/v1/apps/{id}/access_token"} 2`,
		`wechatconf_http_requests_total{app="",code="403",path="/v1/apps/{id}/access_token"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// Invalidate is per app: compare-then-refresh on that app alone.
func TestServeAppsInvalidate(t *testing.T) {
	a := newApps(t)
	_, shop, _ := a.do("GET", "/v1/apps/shop/access_token", cfgKeyA, "")
	_, news, _ := a.do("GET", "/v1/apps/news/access_token", keyApps, "")
	a.fake.Revoke(appShop)
	code, fresh, er := a.do("POST", "/v1/apps/shop/invalidate", cfgKeyA, fmt.Sprintf(`{"value": %q}`, shop.AccessToken))
	if code != 200 || fresh.AccessToken == shop.AccessToken || !a.fake.Valid(fresh.AccessToken) {
		t.Fatalf("invalidate: %d %q %+v", code, er.Error, fresh)
	}
	if _, again, _ := a.do("GET", "/v1/apps/news/access_token", keyApps, ""); again.AccessToken != news.AccessToken {
		t.Error("invalidating shop replaced news's token")
	}
	// A stale report (the value already replaced) costs no grant.
	before := a.fake.Stats().TokenGrants
	if code, cur, _ := a.do("POST", "/v1/apps/shop/invalidate", keyOps, fmt.Sprintf(`{"value": %q}`, shop.AccessToken)); code != 200 || cur.AccessToken != fresh.AccessToken {
		t.Errorf("stale report: %d %+v", code, cur)
	}
	if n := a.fake.Stats().TokenGrants; n != before {
		t.Errorf("a stale report granted (%d → %d)", before, n)
	}
	// A WeCom app's agent ticket by name; a kind the app lacks is 404.
	_, tic, _ := a.do("GET", "/v1/apps/hr/agent_config_ticket", keyApps, "")
	if code, _, er := a.do("POST", "/v1/apps/hr/invalidate", keyApps, fmt.Sprintf(`{"kind": "agent_config_ticket", "value": %q}`, tic.Ticket)); code != 200 {
		t.Errorf("WeCom agent ticket invalidate: %d %q", code, er.Error)
	}
	if code, _, _ := a.do("POST", "/v1/apps/mini/invalidate", keyApps, `{"kind": "jsapi_ticket", "value": "x"}`); code != 404 {
		t.Errorf("a Mini Program's jsapi ticket: %d, want 404", code)
	}
}

// SIGHUP's reload: a key rotated out stops working and a new one starts,
// an app added is served and one removed is not, and the apps left as
// they were keep their credentials (no new grant). A bad file changes
// nothing.
func TestServeAppsReload(t *testing.T) {
	a := newApps(t)
	_, shop, _ := a.do("GET", "/v1/apps/shop/access_token", cfgKeyA, "")
	_, news, _ := a.do("GET", "/v1/apps/news/access_token", keyApps, "")
	a.do("GET", "/v1/apps/mini/access_token", keyApps, "")
	before := a.fake.Stats().TokenGrants
	oldShop := a.e.reg.cur.Load().apps["shop"]

	// Bad files: each refused, the running set kept.
	for _, bad := range []string{
		`{"apps": [`,
		strings.Replace(fmt.Sprintf(appsConfig, a.fake.URL(), a.wc.URL(), hexSum(cfgKeyA)), `"apps": ["shop"]}`, `"apps": ["gone"]}`, 1),
		strings.Replace(fmt.Sprintf(appsConfig, a.fake.URL(), a.wc.URL(), hexSum(cfgKeyA)), `"store": "memory:"`, `"store": "bolt:/tmp/x.db"`, 1),
	} {
		a.write(bad)
		if _, err := a.e.reloadConfig(); err == nil {
			t.Fatalf("reload of a bad file accepted:\n%s", bad)
		}
		if code, _, _ := a.do("GET", "/v1/apps/shop/access_token", cfgKeyA, ""); code != 200 {
			t.Fatalf("after a refused reload the old key gets %d", code)
		}
	}

	// Rotate shop's old key out, drop mini, add a third Official Account
	// on news's secret (another AppID), and give "apps" the new one.
	next := fmt.Sprintf(appsConfig, a.fake.URL(), a.wc.URL(), hexSum(cfgKeyA))
	next = strings.Replace(next, fmt.Sprintf(`{"name": "shop-old", "sha256": %q, "apps": ["shop"]},`, hexSum(cfgKeyA)), "", 1)
	next = strings.Replace(next, `{"id": "mini", "kind": "mini_program", "appid": "wx00000000000000b3", "secret_env": "MINI_SECRET"},`,
		`{"id": "blog", "kind": "official_account", "appid": "wx00000000000000b3", "secret_env": "MINI_SECRET"},`, 1)
	next = strings.Replace(next, `["news", "mini", "hr"]`, `["news", "blog", "hr"]`, 1)
	a.write(next)
	st, err := a.e.reloadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if st.apps != 4 || st.started != 1 || st.kept != 3 || st.dropped != 1 {
		t.Errorf("reload stats %+v, want 4 apps, 1 started, 3 kept, 1 retired", st)
	}
	if code, _, _ := a.do("GET", "/v1/apps/shop/access_token", cfgKeyA, ""); code != 401 {
		t.Errorf("a key rotated out: %d, want 401", code)
	}
	if code, got, _ := a.do("GET", "/v1/apps/shop/access_token", keyShopNew, ""); code != 200 || got.AccessToken != shop.AccessToken {
		t.Errorf("shop after the reload: %d %+v, want its token unchanged", code, got)
	}
	if code, got, _ := a.do("GET", "/v1/apps/news/access_token", keyApps, ""); code != 200 || got.AccessToken != news.AccessToken {
		t.Errorf("news after the reload: %d", code)
	}
	if code, _, _ := a.do("GET", "/v1/apps/mini/access_token", keyOps, ""); code != 404 {
		t.Errorf("a removed app: %d, want 404", code)
	}
	if code, got, _ := a.do("GET", "/v1/apps/blog/access_token", keyApps, ""); code != 200 || !a.fake.Valid(got.AccessToken) {
		t.Errorf("an added app: %d", code)
	}
	if n := a.fake.Stats().TokenGrants; n != before {
		// The blog app's AppID is mini's: its token was in the store.
		t.Errorf("the reload cost %d grants, want none", n-before)
	}
	if a.e.reg.cur.Load().apps["shop"] != oldShop {
		t.Error("an unchanged app was rebuilt")
	}
	body := scrapeMetrics(t, a.e.metrics)
	for _, want := range []string{`wechatconf_config_reloads_total{result="ok"} 1`, `wechatconf_config_reloads_total{result="error"} 3`, "wechatconf_apps 4"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// The retired app answers until its grace ends, then is closed and its
// series removed; close stops the timers of what is still retiring.
func TestServeAppsRetire(t *testing.T) {
	a := newApps(t)
	a.do("GET", "/v1/apps/mini/access_token", keyApps, "")
	a.e.reg.grace = 10 * time.Millisecond
	mini := a.e.reg.cur.Load().apps["mini"]
	cfg := fmt.Sprintf(appsConfig, a.fake.URL(), a.wc.URL(), hexSum(cfgKeyA))
	cfg = strings.Replace(cfg, `{"id": "mini", "kind": "mini_program", "appid": "wx00000000000000b3", "secret_env": "MINI_SECRET"},`, "", 1)
	cfg = strings.Replace(cfg, `["news", "mini", "hr"]`, `["news", "hr"]`, 1)
	a.write(cfg)
	if _, err := a.e.reloadConfig(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := mini.credential(t.Context(), credAccessToken)
		if err != nil && strings.Contains(err.Error(), "closed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retired app was not closed: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for strings.Contains(scrapeMetrics(t, a.e.metrics), `app="mini"`) {
		if time.Now().After(deadline) {
			t.Fatal("the retired app's series stayed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The per-app hot path allocates no more than the single-app one.
func TestServeAppsHotPathAllocs(t *testing.T) {
	a := newApps(t)
	h := a.srv.Config.Handler.(*handler)
	for _, tc := range []struct{ path, key string }{
		{"/v1/apps/shop/access_token", keyShopNew},
		{"/v1/apps/hr/agent_config_ticket", keyApps},
		{"/v1/apps/news/ticket?type=wx_card", keyOps},
	} {
		a.do("GET", tc.path, tc.key, "") // resolves its counters
		req := httptest.NewRequest("GET", tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+tc.key)
		w := &discardWriter{h: http.Header{}}
		allocs := testing.AllocsPerRun(200, func() {
			w.code = 0
			h.ServeHTTP(w, req)
		})
		if w.code != 200 || w.n == 0 {
			t.Fatalf("%s: %d, %d bytes", tc.path, w.code, w.n)
		}
		if allocs > maxHotAllocs {
			t.Errorf("%s: %v allocations per request, want at most %d", tc.path, allocs, maxHotAllocs)
		}
	}
}
