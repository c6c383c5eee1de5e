package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

const testKey = "test-server-key-0123456789"

// api is a serve handler behind httptest, on a memory store and a fake
// WeChat.
type api struct {
	t    *testing.T
	fake *wechattest.Server
	conf *conf.Conf
	srv  *httptest.Server
	logs *watcher
}

// newAPI turns the forced-refresh limit off, so that tests of the
// handler's plumbing can invalidate at will; TestServeInvalidateFloodIsLimited
// runs with the default limit.
func newAPI(t *testing.T, fakeOpts ...wechattest.Option) *api {
	t.Helper()
	return newAPIWith(t, []conf.Option{conf.WithForcedRefreshInterval(0)}, fakeOpts...)
}

func newAPIWith(t *testing.T, confOpts []conf.Option, fakeOpts ...wechattest.Option) *api {
	t.Helper()
	fake := newFake(t, fakeOpts...)
	m := newMetrics(appID)
	st := store.NewMemory()
	c, err := conf.New(append([]conf.Option{conf.WithAppID(appID, secret), conf.WithStore(st),
		conf.WithBaseURLs(fake.URL()), conf.WithObserver(m.observe), conf.WithBusyRetries(0, time.Millisecond)}, confOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	logs := &watcher{}
	srv := httptest.NewServer(newHandler(c, st, testKey, m, slog.New(slog.NewTextHandler(logs, nil))))
	t.Cleanup(srv.Close)
	return &api{t: t, fake: fake, conf: c, srv: srv, logs: logs}
}

// do sends a request with the given Authorization header ("" for none)
// and returns the status and body.
func (a *api) do(method, path, auth, body string) (int, string) {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// get asks for a credential with the right key and decodes the answer.
func (a *api) get(path string) credentialResponse {
	a.t.Helper()
	code, body := a.do("GET", path, "Bearer "+testKey, "")
	if code != 200 {
		a.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	return decode(a.t, body)
}

func (a *api) invalidate(body string) (int, string) {
	a.t.Helper()
	return a.do("POST", "/v1/invalidate", "Bearer "+testKey, body)
}

func decode(t *testing.T, body string) credentialResponse {
	t.Helper()
	var r credentialResponse
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return r
}

// scrape reads /metrics into series → value.
func (a *api) scrape() map[string]float64 {
	a.t.Helper()
	code, body := a.do("GET", "/metrics", "", "")
	if code != 200 {
		a.t.Fatalf("/metrics: %d", code)
	}
	return parseMetrics(a.t, body)
}

func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad metrics line %q", line)
		}
		if _, dup := out[line[:i]]; dup {
			t.Fatalf("series %s written twice", line[:i])
		}
		out[line[:i]] = v
	}
	return out
}

func TestServeAuth(t *testing.T) {
	a := newAPI(t)
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/v1/access_token", "", 401},
		{"GET", "/v1/access_token", "Bearer wrong-key-wrong-key-wrong", 401},
		{"GET", "/v1/access_token", "Bearer " + testKey + "x", 401},
		{"GET", "/v1/access_token", "Bearer " + testKey[:len(testKey)-1], 401},
		{"GET", "/v1/access_token", "Basic " + testKey, 401},
		{"GET", "/v1/access_token", testKey, 401},
		{"GET", "/v1/jsapi_ticket", "", 401},
		{"GET", "/v1/wx_card_ticket", "", 401},
		{"GET", "/v1/ticket?type=jsapi", "", 401},
		{"POST", "/v1/invalidate", "", 401},
		{"GET", "/v1/no-such-thing", "", 401}, // no probing without the key
		{"GET", "/v1/no-such-thing", "Bearer " + testKey, 404},
		{"GET", "/v1/access_token", "bearer " + testKey, 200}, // the scheme is case-insensitive
		{"GET", "/v1/access_token", "Bearer " + testKey, 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"POST", "/v1/access_token", "Bearer " + testKey, 405},
		{"GET", "/nope", "", 404},
	} {
		code, body := a.do(tc.method, tc.path, tc.auth, "")
		if code != tc.want {
			t.Errorf("%s %s with %q: %d %s, want %d", tc.method, tc.path, tc.auth, code, body, tc.want)
		}
		if code == 401 && strings.Contains(body, testKey[:8]) {
			t.Errorf("401 body echoes the key: %s", body)
		}
	}
	if s := a.fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("%d grants, want 1 (unauthorised requests must not grant)", s.TokenGrants)
	}
}

func TestServeEndpoints(t *testing.T) {
	a := newAPI(t)
	now := time.Now().Unix()

	tok := a.get("/v1/access_token")
	if tok.AccessToken != a.fake.CurrentToken(appID) || tok.Ticket != "" || tok.Type != "" {
		t.Fatalf("access token answer %+v is not the current token", tok)
	}
	if tok.ExpiresIn <= 0 || tok.ExpiresIn > 7200 || tok.ExpiresAt < now+tok.ExpiresIn-1 || tok.ExpiresAt > now+7201 {
		t.Errorf("expiry %d / %d s does not fit a 7200 s token granted now", tok.ExpiresAt, tok.ExpiresIn)
	}

	js := a.get("/v1/jsapi_ticket")
	if js.Ticket == "" || js.Type != "jsapi" || js.AccessToken != "" || !a.fake.ValidTicket(js.Ticket) {
		t.Fatalf("jsapi answer %+v", js)
	}
	card := a.get("/v1/wx_card_ticket")
	if card.Ticket == "" || card.Type != "wx_card" || card.Ticket == js.Ticket || !a.fake.ValidTicket(card.Ticket) {
		t.Fatalf("wx_card answer %+v", card)
	}
	if again := a.get("/v1/ticket?type=wx_card"); again.Ticket != card.Ticket || again.Type != "wx_card" {
		t.Errorf("/v1/ticket?type=wx_card gave %+v, want the card ticket", again)
	}
	if again := a.get("/v1/ticket"); again.Ticket != js.Ticket || again.Type != "jsapi" {
		t.Errorf("/v1/ticket gave %+v, want the jsapi ticket", again)
	}
	if code, _ := a.do("GET", "/v1/ticket?type=card", "Bearer "+testKey, ""); code != 400 {
		t.Errorf("bad ticket type: %d, want 400", code)
	}
	s := a.fake.Stats()
	if s.TokenGrants != 1 || s.JSAPITickets != 1 || s.WXCardTickets != 1 {
		t.Errorf("stats %+v: want one of each", s)
	}

	code, body := a.do("GET", "/healthz", "", "")
	if code != 200 || strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Errorf("/healthz: %d %s", code, body)
	}
	for _, secretish := range []string{tok.AccessToken, js.Ticket, card.Ticket, secret, testKey} {
		if strings.Contains(a.logs.String(), secretish) {
			t.Errorf("the handler logged a secret")
		}
	}
}

// Seen: 1000 chained POST /v1/invalidate calls (each with the token the
// previous call returned) made 1000 grants in 52 s. With the default
// cluster-wide limit they make one, the rest get 429 with Retry-After.
func TestServeInvalidateFloodIsLimited(t *testing.T) {
	a := newAPIWith(t, nil)
	tok := a.get("/v1/access_token").AccessToken
	before := a.fake.Stats().TokenGrants
	limited := 0
	for i := range 1000 {
		code, body := a.invalidate(`{"kind":"access_token","value":"` + tok + `"}`)
		switch code {
		case 200:
			tok = decode(t, body).AccessToken
		case 429:
			limited++
			if !strings.Contains(body, `"error"`) {
				t.Fatalf("429 without a JSON error: %s", body)
			}
		default:
			t.Fatalf("invalidation %d: %d %s", i, code, body)
		}
	}
	grants := a.fake.Stats().TokenGrants - before
	t.Logf("1000 chained invalidations: %d grants, %d answered 429", grants, limited)
	if grants > 3 || limited < 997 {
		t.Fatalf("%d grants, %d limited; want at most 3 grants", grants, limited)
	}
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/invalidate", strings.NewReader(`{"value":"`+tok+`"}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ra := resp.Header.Get("Retry-After"); resp.StatusCode != 429 || ra == "" || ra == "0" {
		t.Fatalf("limited answer: %d, Retry-After %q; want 429 and a positive Retry-After", resp.StatusCode, ra)
	}
}

// A revoked token reported to /v1/invalidate is replaced by exactly one new
// grant; a stale report of it costs nothing; many reports at once cost one
// grant.
func TestServeInvalidate(t *testing.T) {
	a := newAPI(t)
	t1 := a.get("/v1/access_token").AccessToken

	a.fake.Revoke(appID)
	if a.fake.Valid(t1) {
		t.Fatal("Revoke left the token valid")
	}
	code, body := a.invalidate(`{"kind":"access_token","value":"` + t1 + `"}`)
	if code != 200 {
		t.Fatalf("invalidate: %d %s", code, body)
	}
	t2 := decode(t, body)
	if t2.AccessToken == t1 || !a.fake.Valid(t2.AccessToken) || t2.ExpiresIn <= 0 {
		t.Fatalf("invalidate answered %+v: want a new valid token", t2)
	}
	if n := a.fake.Stats().TokenGrants; n != 2 {
		t.Fatalf("%d grants after one invalidation, want 2", n)
	}
	if got := a.get("/v1/access_token").AccessToken; got != t2.AccessToken {
		t.Error("GET after invalidate does not return the replacement")
	}

	// The same stale report again: the store no longer holds t1.
	code, body = a.invalidate(`{"value":"` + t1 + `"}`) // kind defaults to access_token
	if code != 200 || decode(t, body).AccessToken != t2.AccessToken {
		t.Fatalf("stale report: %d %s, want the current token", code, body)
	}
	if n := a.fake.Stats().TokenGrants; n != 2 {
		t.Fatalf("a stale report granted anew: %d grants", n)
	}

	// Many clients report t2 at once: one grant.
	a.fake.Revoke(appID)
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			code, body := a.invalidate(`{"kind":"access_token","value":"` + t2.AccessToken + `"}`)
			if code == 200 {
				got[i] = decode(t, body).AccessToken
			}
		})
	}
	wg.Wait()
	for _, g := range got {
		if g == "" || g != got[0] || g == t2.AccessToken || !a.fake.Valid(g) {
			t.Fatalf("concurrent reports got %q: want one new valid token for all", got)
		}
	}
	if n := a.fake.Stats().TokenGrants; n != 3 {
		t.Errorf("%d grants after concurrent reports, want 3", n)
	}

	// A rejected jsapi ticket is replaced the same way.
	js := a.get("/v1/jsapi_ticket").Ticket
	code, body = a.invalidate(`{"kind":"jsapi_ticket","value":"` + js + `"}`)
	if r := decode(t, body); code != 200 || r.Ticket == js || r.Type != "jsapi" || !a.fake.ValidTicket(r.Ticket) {
		t.Errorf("ticket invalidation: %d %s", code, body)
	}
	if n := a.fake.Stats().JSAPITickets; n != 2 {
		t.Errorf("%d jsapi tickets, want 2", n)
	}

	for _, bad := range []string{
		``, `not json`, `{"kind":"access_token"}`, `{"kind":"refresh_token","value":"x"}`,
		`{"kind":"access_token","value":"x","extra":1}`, `{"value":"x"} {"value":"y"}`,
	} {
		if code, body := a.invalidate(bad); code != 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("body %.40q: %d %s, want 400 with an error", bad, code, body)
		}
	}
	// Too large is not malformed: 413.
	if code, body := a.invalidate(`{"value":"` + strings.Repeat("x", maxInvalidateBody) + `"}`); code != 413 || !strings.Contains(body, `"error"`) {
		t.Errorf("oversized body: %d %s, want 413 with an error", code, body)
	}
	if code, _ := a.do("GET", "/v1/invalidate", "Bearer "+testKey, ""); code != 405 {
		t.Errorf("GET /v1/invalidate: %d, want 405", code)
	}
}

// WeChat's refusals reach the client with their errcode; a closed Conf is a
// 503.
func TestServeErrors(t *testing.T) {
	a := newAPI(t, wechattest.WithDailyQuota(0))
	code, body := a.do("GET", "/v1/access_token", "Bearer "+testKey, "")
	var e errorResponse
	if err := json.Unmarshal([]byte(body), &e); err != nil || code != 502 || e.ErrCode != 45009 || !strings.Contains(e.Error, "45009") {
		t.Errorf("quota: %d %s, want 502 with errcode 45009", code, body)
	}
	// The quota is not asked again at once (credential.FatalBackoff): the
	// same answer, without a request to WeChat.
	before := a.fake.Stats().Requests
	if code, body := a.do("GET", "/v1/access_token", "Bearer "+testKey, ""); code != 502 || !strings.Contains(body, "45009") {
		t.Errorf("quota again: %d %s, want 502 with errcode 45009", code, body)
	}
	if n := a.fake.Stats().Requests - before; n != 0 {
		t.Errorf("the quota answer was asked for again %d times; want 0 within the backoff", n)
	}
	m := a.scrape()
	if v := m[sr(`wechatconf_grant_failures_total`, `kind="access_token"`)]; v != 1 {
		t.Errorf("grant failures %v, want 1", v)
	}
	if v := m[sr(`wechatconf_http_requests_total`, `code="502",path="/v1/access_token"`)]; v != 2 {
		t.Errorf("502 count %v, want 2", v)
	}
	if !strings.Contains(a.logs.String(), "request failed") {
		t.Error("failures are not logged")
	}
	b := newAPI(t)
	b.fake.FailNext(1, wechattest.HTTPStatus(503))
	if code, body := b.do("GET", "/v1/jsapi_ticket", "Bearer "+testKey, ""); code != 502 {
		t.Errorf("WeChat 503: %d %s, want 502", code, body)
	}
	a.conf.Close()
	if code, _ := a.do("GET", "/v1/access_token", "Bearer "+testKey, ""); code != 503 {
		t.Errorf("closed conf: %d, want 503", code)
	}
}

func TestServeMetrics(t *testing.T) {
	a := newAPI(t)
	for range 3 {
		a.get("/v1/access_token")
	}
	a.do("GET", "/v1/access_token", "", "")
	a.get("/v1/jsapi_ticket")
	a.fake.Revoke(appID)
	tok := a.get("/v1/access_token").AccessToken
	if code, body := a.invalidate(`{"value":"` + tok + `"}`); code != 200 {
		t.Fatalf("invalidate: %d %s", code, body)
	}
	a.invalidate(`junk`)
	a.do("GET", "/healthz", "", "")
	a.do("GET", "/scanner/probe", "", "")

	m := a.scrape()
	s := a.fake.Stats()
	want := map[string]float64{
		sr(`wechatconf_grants_total`, `kind="access_token"`):                                 float64(s.TokenGrants),
		sr(`wechatconf_grants_total`, `kind="jsapi_ticket"`):                                 float64(s.JSAPITickets),
		sr(`wechatconf_grants_total`, `kind="wx_card_ticket"`):                               0,
		sr(`wechatconf_grant_failures_total`, `kind="access_token"`):                         0,
		sr(`wechatconf_store_errors_total`, `kind="access_token"`):                           0,
		sr(`wechatconf_lease_waits_total`, `kind="access_token"`):                            0,
		sr(`wechatconf_lease_wait_seconds_total`, `kind="access_token"`):                     0,
		sr(`wechatconf_loads_total`, `kind="access_token"`):                                  0,
		sr(`wechatconf_invalidations_total`, `kind="access_token"`):                          1,
		sr(`wechatconf_invalidations_total`, `kind="jsapi_ticket"`):                          0,
		sr(`wechatconf_http_requests_total`, `code="200",path="/v1/access_token"`):           4,
		sr(`wechatconf_http_requests_total`, `code="401",path="/v1/access_token"`):           1,
		sr(`wechatconf_http_requests_total`, `code="200",path="/v1/jsapi_ticket"`):           1,
		sr(`wechatconf_http_requests_total`, `code="200",path="/v1/invalidate"`):             1,
		sr(`wechatconf_http_requests_total`, `code="400",path="/v1/invalidate"`):             1,
		sr(`wechatconf_http_requests_total`, `code="200",path="/healthz"`):                   1,
		sr(`wechatconf_http_requests_total`, `code="404",path="other"`):                      1,
		`wechatconf_http_request_duration_seconds_count{path="/v1/access_token"}`:            5,
		`wechatconf_http_request_duration_seconds_bucket{path="/v1/access_token",le="+Inf"}`: 5,
	}
	if s.TokenGrants != 2 || s.JSAPITickets != 1 {
		t.Fatalf("stats %+v: want 2 token grants and 1 ticket", s)
	}
	for series, v := range want {
		got, ok := m[series]
		if !ok {
			t.Errorf("missing series %s", series)
		} else if got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	if exp := m[sr(`wechatconf_credential_expiry_timestamp_seconds`, `kind="access_token"`)]; exp < float64(time.Now().Unix()) {
		t.Errorf("access token expiry gauge %v is not in the future", exp)
	}
	// Buckets are cumulative and end at the count.
	var prev float64
	for _, le := range latencyBuckets {
		v, ok := m[`wechatconf_http_request_duration_seconds_bucket{path="/v1/access_token",le="`+strconv.FormatFloat(le, 'g', -1, 64)+`"}`]
		if !ok || v < prev {
			t.Fatalf("bucket le=%v: %v (present %v), previous %v", le, v, ok, prev)
		}
		prev = v
	}
	if prev > 5 {
		t.Errorf("last bucket %v above the count", prev)
	}
	if sum := m[`wechatconf_http_request_duration_seconds_sum{path="/v1/access_token"}`]; sum <= 0 {
		t.Errorf("latency sum %v", sum)
	}

	code, body := a.do("GET", "/metrics", "", "")
	if code != 200 {
		t.Fatal(code)
	}
	for _, typ := range []string{
		"# TYPE wechatconf_grants_total counter",
		"# TYPE wechatconf_lease_wait_seconds_total counter",
		"# TYPE wechatconf_http_request_duration_seconds histogram",
		"# TYPE wechatconf_credential_expiry_timestamp_seconds gauge",
	} {
		if !strings.Contains(body, typ+"\n") {
			t.Errorf("metrics lack %q", typ)
		}
	}
	if strings.Contains(body, tok) || strings.Contains(body, secret) {
		t.Error("metrics show a credential")
	}
}

// Lease waits are counted with their time, from the engine's events.
func TestMetricsObserve(t *testing.T) {
	m := newMetrics(appID)
	(&app{kind: kindOfficialAccount, m: m.def}).resolveSeries() // as a server's app
	m.observe(conf.Event{Type: conf.EventLeaseWaited, Kind: conf.JSAPITicket, Wait: 1500 * time.Millisecond})
	m.observe(conf.Event{Type: conf.EventLeaseWaited, Kind: conf.JSAPITicket, Wait: 500 * time.Millisecond})
	m.observe(conf.Event{Type: conf.EventStoreError, Kind: conf.WXCardTicket})
	m.observe(conf.Event{Type: conf.EventLoaded, Kind: conf.AccessToken, ExpiresAt: time.Unix(1700000000, 0)})
	m.observe(conf.Event{Type: conf.EventGranted, Kind: conf.Kind(42)}) // ignored, no panic
	got := parseMetrics(t, scrapeMetrics(t, m))
	for series, v := range map[string]float64{
		sr(`wechatconf_lease_waits_total`, `kind="jsapi_ticket"`):                   2,
		sr(`wechatconf_lease_wait_seconds_total`, `kind="jsapi_ticket"`):            2,
		sr(`wechatconf_store_errors_total`, `kind="wx_card_ticket"`):                1,
		sr(`wechatconf_loads_total`, `kind="access_token"`):                         1,
		sr(`wechatconf_credential_expiry_timestamp_seconds`, `kind="access_token"`): 1700000000,
		sr(`wechatconf_grants_total`, `kind="access_token"`):                        0,
	} {
		if v2, ok := got[series]; !ok || v2 != v {
			t.Errorf("%s = %v (present %v), want %v", series, v2, ok, v)
		}
	}
	if _, ok := got[sr(`wechatconf_credential_expiry_timestamp_seconds`, `kind="jsapi_ticket"`)]; ok {
		t.Error("an expiry never known is shown")
	}
}

// sr names a series of the test app, labels (but app) in the order
// client_golang writes them: by name.
func sr(name, labels string) string {
	return name + `{app="` + appID + `",` + labels + `}`
}

// scrapeMetrics returns what m's /metrics handler writes.
func scrapeMetrics(t *testing.T, m *metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.serveHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}
