package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
)

// The hand-written answer is byte for byte encoding/json's, for every kind
// and for values at the edges of plainJSON (which go through
// encoding/json itself).
func TestWriteCredentialMatchesEncodingJSON(t *testing.T) {
	exp := time.Now().Add(7200 * time.Second).Truncate(time.Second)
	for kind := range numCredKinds {
		for _, v := range []string{"", "ACCESS_token-123", "a<b>&c", `q"uote`, `back\slash`, "new\nline", "\x7f", "é", "\u2028", "~ !"} {
			item := store.Item{Value: v, ExpiresAt: exp}
			rec := httptest.NewRecorder()
			now := time.Now()
			a := &app{}
			if code := writeCredential(rec, a, kind, item, now); code != 200 || rec.Code != 200 {
				t.Fatalf("code %d, recorded %d", code, rec.Code)
			}
			want := &strings.Builder{}
			enc := json.NewEncoder(want)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(toResponseAt(kind, item, now)); err != nil {
				t.Fatal(err)
			}
			if got := rec.Body.String(); got != want.String() {
				t.Errorf("%v %q:\n got %s\nwant %s", kind, v, got, want.String())
			}
			// The second time, from the remembered check.
			rec = httptest.NewRecorder()
			writeCredential(rec, a, kind, item, now)
			if got := rec.Body.String(); got != want.String() {
				t.Errorf("%v %q again:\n got %s\nwant %s", kind, v, got, want.String())
			}
			if ct, cc := rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
				t.Errorf("headers %q %q", ct, cc)
			}
		}
	}
	// An expired item says 0 seconds left, never a negative count.
	b := appendCredential(nil, credAccessToken, store.Item{Value: "x", ExpiresAt: time.Unix(100, 0)}, time.Unix(200, 0))
	if string(b) != `{"access_token":"x","expires_at":100,"expires_in":0}`+"\n" {
		t.Errorf("expired: %s", b)
	}
}

// discardWriter is a ResponseWriter that keeps its header map across
// requests and drops the body, so that AllocsPerRun and the benchmarks see
// the handler's allocations only. It remembers the status and counts the
// bytes written.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header  { return w.h }
func (w *discardWriter) WriteHeader(code int) { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

// maxHotAllocs is the most allocations serve's handler may make for a GET
// of a fresh credential (the answer, the bearer check, the counters):
// none. net/http's own (the request, the response, the buffers) are
// outside the handler and not counted.
const maxHotAllocs = 0

func TestServeHotPathAllocs(t *testing.T) {
	a := newAPI(t)
	h := a.srv.Config.Handler.(*handler)
	for _, path := range []string{"/v1/access_token", "/v1/jsapi_ticket", "/v1/ticket?type=wx_card", "/v1/ticket"} {
		a.get(path) // the first answer of each path resolves its counters
		req := httptest.NewRequest("GET", path, nil)
		// A key as long as the check copies to its stack.
		key := strings.Repeat("k", 128)
		set := h.reg.cur.Load()
		set.keys[0].sum = sha256.Sum256([]byte(key))
		req.Header.Set("Authorization", "Bearer "+key)
		w := &discardWriter{h: http.Header{}}
		allocs := testing.AllocsPerRun(200, func() {
			w.code = 0
			h.ServeHTTP(w, req)
		})
		set.keys[0].sum = sha256.Sum256([]byte(testKey))
		if w.code != 200 || w.n == 0 {
			t.Fatalf("%s: %d, %d bytes", path, w.code, w.n)
		}
		if allocs > maxHotAllocs {
			t.Errorf("%s: %v allocations per request, want at most %d", path, allocs, maxHotAllocs)
		}
	}
}

// A credential the Conf has to fetch first takes the slow path (with its
// bound) and is answered as well; the Conf's own error still maps to 503.
func TestServeSlowPath(t *testing.T) {
	a := newAPI(t)
	if s := a.fake.Stats(); s.TokenGrants != 0 {
		t.Fatalf("grants before any request: %+v", s)
	}
	if tok := a.get("/v1/access_token").AccessToken; !a.fake.Valid(tok) {
		t.Fatal("first token is not valid")
	}
	if s := a.fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("grants %d, want 1", s.TokenGrants)
	}
	if !errors.Is(errNoWait, context.Canceled) || noWait.Err() != errNoWait {
		t.Error("noWait's error is not context.Canceled")
	}
	select {
	case <-noWait.Done():
	default:
		t.Error("noWait is not done")
	}
}

// failingStore is a store whose Get fails while down is set; it counts the
// Gets of the readiness key.
type failingStore struct {
	store.Store
	down   atomic.Bool
	probes atomic.Int32
}

func (s *failingStore) Get(ctx context.Context, key string) (store.Item, error) {
	if strings.HasSuffix(key, ":readyz") {
		s.probes.Add(1)
	}
	if s.down.Load() {
		return store.Item{}, errors.New("dial tcp 10.0.0.7:6379: connection refused")
	}
	return s.Store.Get(ctx, key)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestServeReadyz(t *testing.T) {
	st := &failingStore{Store: store.NewMemory()}
	m := newMetrics(appID)
	c, err := conf.New(conf.WithAppID(appID, secret), conf.WithStore(st), conf.WithBaseURLs(newFake(t).URL()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	logs := &watcher{}
	h := newHandler(c, st, testKey, m, slog.New(slog.NewTextHandler(logs, nil)))
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	h.ready.now = clk.now
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	probe := func(path string) (int, map[string]string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v map[string]string
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: not JSON: %q", path, b)
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: headers %v", path, resp.Header)
		}
		if strings.Contains(string(b), "10.0.0.7") {
			t.Errorf("%s shows the store's error: %s", path, b)
		}
		return resp.StatusCode, v
	}

	if code, v := probe("/readyz"); code != 200 || v["status"] != "ok" {
		t.Fatalf("store up: %d %v", code, v)
	}
	probe("/readyz")
	if n := st.probes.Load(); n != 1 {
		t.Errorf("two probes within the cache made %d store Gets, want 1", n)
	}

	st.down.Store(true)
	if code, _ := probe("/readyz"); code != 200 {
		t.Errorf("cached result: %d, want 200 until the cache ends", code)
	}
	clk.add(readyCache)
	if code, v := probe("/readyz"); code != 503 || v["status"] != "unavailable" || v["error"] == "" {
		t.Errorf("store down: %d %v, want 503", code, v)
	}
	if code, v := probe("/healthz"); code != 200 || v["status"] != "ok" {
		t.Errorf("liveness with the store down: %d %v, want 200", code, v)
	}
	if !strings.Contains(logs.String(), "not ready") {
		t.Errorf("no log of the outage:\n%s", logs.String())
	}

	st.down.Store(false)
	clk.add(readyCache)
	if code, _ := probe("/readyz"); code != 200 {
		t.Errorf("store back: %d, want 200", code)
	}
	if n := st.probes.Load(); n != 3 {
		t.Errorf("%d store Gets, want 3", n)
	}
	// Counted under its own path.
	got := parseMetrics(t, scrapeMetrics(t, m))
	if v := got[sr(`wechatconf_http_requests_total`, `code="503",path="/readyz"`)]; v != 1 {
		t.Errorf("readyz 503s counted %v, want 1", v)
	}
}

// /metrics carries the app label on every wechatconf series, the Go runtime
// and process collectors, and no credential.
func TestServeMetricsRegistry(t *testing.T) {
	a := newAPI(t)
	tok := a.get("/v1/access_token").AccessToken
	tic := a.get("/v1/jsapi_ticket").Ticket
	body := scrapeMetricsHTTP(a)
	for _, s := range []string{secret, tok, tic, testKey} {
		if strings.Contains(body, s) {
			t.Fatalf("/metrics shows a credential or key")
		}
	}
	m := parseMetrics(t, body)
	var ours int
	for series := range m {
		if strings.HasPrefix(series, "wechatconf_apps") || strings.HasPrefix(series, "wechatconf_config_") {
			continue // the server's own, not an app's
		}
		if strings.HasPrefix(series, "wechatconf_") {
			ours++
			if !strings.Contains(series, `{app="`+appID+`",`) {
				t.Errorf("series without the app label: %s", series)
			}
		}
	}
	if ours == 0 {
		t.Fatal("no wechatconf series")
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_open_fds"} {
		if _, ok := m[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	for _, name := range []string{"wechatconf_grants_total", "wechatconf_grant_failures_total", "wechatconf_loads_total",
		"wechatconf_lease_waits_total", "wechatconf_lease_wait_seconds_total", "wechatconf_invalidations_total",
		"wechatconf_store_errors_total"} {
		for _, k := range kinds {
			if _, ok := m[sr(name, `kind="`+k.String()+`"`)]; !ok {
				t.Errorf("no %s for %s", name, k)
			}
		}
	}
	// The server's own registry: nothing reaches the global default.
	if n := len(gatherDefault(t)); n != 0 {
		t.Errorf("%d wechatconf families on the default registry", n)
	}
}

func scrapeMetricsHTTP(a *api) string {
	a.t.Helper()
	code, body := a.do("GET", "/metrics", "", "")
	if code != 200 {
		a.t.Fatalf("/metrics: %d", code)
	}
	return body
}

// gatherDefault returns the wechatconf families on client_golang's global
// registry.
func gatherDefault(t *testing.T) []string {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "wechatconf_") {
			out = append(out, mf.GetName())
		}
	}
	return out
}

func TestServeMetricsHeaders(t *testing.T) {
	a := newAPI(t)
	resp, err := http.Get(a.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc, ct := resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"); cc != "no-store" || !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("/metrics: Cache-Control %q, Content-Type %q", cc, ct)
	}
}
