package main

// Ten thousand apps in one serve: the cost of loading the configuration,
// of the cold start (every app's first token, through the handler), and
// of holding them (heap per app, /metrics size).
//
//	go test -run='^$' -bench=BenchmarkServeManyApps -benchtime=1x ./cmd/wechatconf
//
// Under -race (make test runs every benchmark once) it runs 1 000 apps, as
// a smoke test of the same code.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

var scaleApps = flag.Int("scale.apps", 10000, "apps of BenchmarkServeManyApps (1 000 under -race)")

// scaleSecret is every app's secret at the fake.
const scaleSecret = "scaleSecretSSSSSSSSSSSSSSSSSSSSS"

func scaleAppID(i int) string { return fmt.Sprintf("wx%016x", 0xa0000+i) }

// scaleConfig writes a configuration of n Official Accounts on storeURL and
// the fake at api, readable by any key of keyAll.
func scaleConfig(tb testing.TB, n int, storeURL, api, keyAll string, otherKeys int) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(scaleSecret), 0o600); err != nil {
		tb.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"store": %q, "api_base": [%q], "apps": [`, storeURL, api)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `{"id": "a%05d", "kind": "official_account", "appid": %q, "secret_file": "secret"}`, i, scaleAppID(i))
	}
	b.WriteString(`], "keys": [`)
	for i := range otherKeys {
		fmt.Fprintf(&b, `{"name": "k%d", "sha256": %q, "apps": ["a00000"]},`, i, hexSum(fmt.Sprintf("other-key-%d-0123456789abcdef", i)))
	}
	fmt.Fprintf(&b, `{"name": "ops", "sha256": %q, "apps": ["*"]}]}`, hexSum(keyAll))
	path := filepath.Join(dir, "wechatconf.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func BenchmarkServeManyApps(b *testing.B) {
	n := *scaleApps
	if raceEnabled {
		n = min(n, 1000)
	}
	opts := make([]wechattest.Option, n)
	for i := range n {
		opts[i] = wechattest.WithApp(scaleAppID(i), scaleSecret)
	}
	fake := wechattest.NewServer(opts...)
	b.Cleanup(fake.Close)
	for _, bc := range []struct {
		name string
		open func(b *testing.B) (store.Store, string)
	}{
		{"memory", func(b *testing.B) (store.Store, string) { return store.NewMemory(), "memory:" }},
		{"redis", func(b *testing.B) (store.Store, string) {
			u := "redis://" + testserver.Redis(b).Addr + "/0"
			sp, err := parseStore(u)
			if err != nil {
				b.Fatal(err)
			}
			st, closeStore, err := sp.open(context.Background(), u)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { closeStore() })
			return st, u
		}},
	} {
		b.Run(fmt.Sprintf("%s/apps=%d", bc.name, n), func(b *testing.B) {
			st, u := bc.open(b)
			const key = "scale-key-0123456789abcdef"
			path := scaleConfig(b, n, u, fake.URL(), key, 0)
			first := true
			for b.Loop() {
				fake.ResetStats()
				r := runScale(b, path, st, key, n)
				b.ReportMetric(r.load.Seconds(), "load-s")
				b.ReportMetric(r.cold.Seconds(), "cold-s")
				b.ReportMetric(r.warm.Seconds(), "warm-s")
				b.ReportMetric(r.heapPerApp, "heap-B/app")
				b.ReportMetric(float64(r.goroutines)/float64(n), "goroutines/app")
				b.ReportMetric(float64(r.metricsBytes)/float64(n), "metrics-B/app")
				if g := fake.Stats().TokenGrants; first && g != n {
					b.Fatalf("%d grants for %d apps on a fresh store", g, n)
				}
				first = false
			}
		})
	}
}

type scaleResult struct {
	load, cold, warm time.Duration
	heapPerApp       float64
	goroutines       int
	metricsBytes     int
}

// runScale loads the configuration at path on st, asks every app's token
// through the handler (64 at a time), then asks them all again from the
// local copies, and measures what the apps hold.
func runScale(b *testing.B, path string, st store.Store, key string, n int) scaleResult {
	var res scaleResult
	g0 := runtime.NumGoroutine()

	t0 := time.Now()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := loadConfig(path, env{}.get, fileCheck{strict: true})
	if err != nil {
		b.Fatal(err)
	}
	m := newMetrics("")
	reg, err := newRegistry(p, &appBuilder{st: st, log: log, m: m})
	if err != nil {
		b.Fatal(err)
	}
	h := newSetHandler(reg, st, "{wechatconf}:readyz", m, log)
	res.load = time.Since(t0)

	ask := func() time.Duration {
		var next atomic.Int64
		var failed atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		for range 64 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					req := httptest.NewRequest("GET", fmt.Sprintf("/v1/apps/a%05d/access_token", i), nil)
					req.Header.Set("Authorization", "Bearer "+key)
					w := &discardWriter{h: http.Header{}}
					h.ServeHTTP(w, req)
					if w.code != 200 {
						failed.CompareAndSwap(nil, fmt.Sprintf("app %d: %d", i, w.code))
					}
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f != nil {
			b.Fatal(f)
		}
		return time.Since(start)
	}
	res.cold = ask()
	res.warm = ask()

	res.metricsBytes = func() int {
		rec := httptest.NewRecorder()
		m.serveHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.Len()
	}()
	res.goroutines = runtime.NumGoroutine() - g0

	// What the apps hold: the heap with them, less the heap once they
	// are closed and unreachable. The fake's records and the store's
	// content (in this process for memory:) stay on both sides.
	runtime.GC()
	var with runtime.MemStats
	runtime.ReadMemStats(&with)
	if f := os.Getenv("SCALE_HEAP_PROFILE"); f != "" {
		if out, err := os.Create(f); err == nil {
			pprof.WriteHeapProfile(out)
			out.Close()
		}
	}
	if err := reg.close(); err != nil {
		b.Fatal(err)
	}
	runtime.KeepAlive(h)
	h, reg, m, p = nil, nil, nil, nil
	runtime.GC()
	var without runtime.MemStats
	runtime.ReadMemStats(&without)
	res.heapPerApp = float64(int64(with.HeapAlloc)-int64(without.HeapAlloc)) / float64(n)
	return res
}

// BenchmarkServeAppRoute is the handler alone, in process, on a GET of a
// fresh access token of one app of many: the single-app route of a
// one-app server (as BenchmarkServeHandler's serve) beside the per-app
// route of a 1 000-app server with 1 and with 50 keys (every key is
// compared, in constant time).
//
//	go test -run='^$' -bench=BenchmarkServeAppRoute -count=10 ./cmd/wechatconf
func BenchmarkServeAppRoute(b *testing.B) {
	const n = 1000
	opts := make([]wechattest.Option, n)
	for i := range n {
		opts[i] = wechattest.WithApp(scaleAppID(i), scaleSecret)
	}
	fake := wechattest.NewServer(opts...)
	b.Cleanup(fake.Close)
	const key = "route-key-0123456789abcdef"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	handlerOf := func(apps, keys int) http.Handler {
		p, err := loadConfig(scaleConfig(b, apps, "memory:", fake.URL(), key, keys), env{}.get, fileCheck{strict: true})
		if err != nil {
			b.Fatal(err)
		}
		_, _, h := newTestServer(b, p, store.NewMemory(), log)
		return h
	}
	for _, bc := range []struct {
		name string
		h    http.Handler
		path string
	}{
		{"single", handlerOf(1, 0), "/v1/access_token"},
		{"apps=1000/keys=1", handlerOf(n, 0), "/v1/apps/a00500/access_token"},
		{"apps=1000/keys=50", handlerOf(n, 49), "/v1/apps/a00500/access_token"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", bc.path, nil)
			req.Header.Set("Authorization", "Bearer "+key)
			w := &discardWriter{h: http.Header{}}
			bc.h.ServeHTTP(w, req) // grants the token
			b.ReportAllocs()
			for b.Loop() {
				w.code = 0
				bc.h.ServeHTTP(w, req)
			}
			if w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
		})
	}
}
