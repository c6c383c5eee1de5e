package bench

// Issue #14's scale figures: many apps in one process. What each credential
// held costs in heap and goroutines, and how long a cold start takes to
// fetch every app's token with bounded concurrency.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
	"github.com/wechatconf/wechatconf/wechattest"
)

var (
	scaleN       = flag.Int("scale.n", 10000, "apps (credentials) held by the scale benchmarks")
	scaleWorkers = flag.Int("scale.workers", 64, "concurrent fetches in the cold-start benchmark")
)

// scaleRedis returns the address of a Redis for the scale benchmarks: the
// one run.sh started (WECHATCONF_BENCH_REDIS), or one of its own from
// Debian's redis-server (internal/testserver), so that a plain go test
// -bench=Scale measures Redis too.
func scaleRedis(tb testing.TB) string {
	if addr := os.Getenv(envRedis); addr != "" {
		return addr
	}
	return testserver.Redis(tb).Addr
}

// scaleStore opens the store a scale benchmark runs on: one store shared by
// every app, as one process holds one client.
func scaleStore(tb testing.TB, backend string) store.Store {
	tb.Helper()
	switch backend {
	case "memory":
		return store.NewMemory()
	case "redis":
		s, err := redisstore.New(redisClient(tb, scaleRedis(tb)))
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	tb.Fatalf("unknown backend %q", backend)
	return nil
}

// tokenValue is a value as long as a real access token (136 to 157
// characters; 150 here), unique to the app.
func tokenValue(i int) string {
	b := make([]byte, 72)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%06d", i%1000000) + hex.EncodeToString(b)[:144]
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first
// error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		next  = make(chan int)
		errMu sync.Mutex
		first error
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// heapAlloc is the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// settle waits (bounded) until no more than want goroutines run: a load's
// flight ends just after it hands its caller the item.
func settle(want int) int {
	for range 200 {
		if n := runtime.NumGoroutine(); n <= want {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
	return runtime.NumGoroutine()
}

// scaleApps names n apps with a prefix of their own, so that runs sharing a
// Redis start cold.
func scaleApps(n int) []string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("wx%s%08d", hex.EncodeToString(b), i)
	}
	return ids
}

// seedTokens stores a valid 2-hour access token for each app, as another
// node of the cluster would have.
func seedTokens(tb testing.TB, s store.Store, ids []string) {
	tb.Helper()
	exp := time.Now().Add(2 * time.Hour)
	err := parallel(len(ids), 64, func(i int) error {
		return s.Set(context.Background(), conf.Key(ids[i], conf.AccessToken), store.Item{Value: tokenValue(i), ExpiresAt: exp})
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// warmPool opens the store client's connections before the baseline, so
// that the pool's buffers are not counted per credential.
func warmPool(tb testing.TB, s store.Store) {
	tb.Helper()
	_ = parallel(256, 64, func(int) error {
		_, err := s.Get(context.Background(), "{warm}:access_token")
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
}

// sharedHTTP is the one http.Client a process with many apps shares.
func sharedHTTP() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 128
	return &http.Client{Timeout: 10 * time.Second, Transport: t}
}

// BenchmarkScaleMemory loads -scale.n access tokens that another node
// stored and reports the live heap held per credential (after GC, before
// building and after loading) and the goroutines left per credential:
// held=conf is a conf.Conf per app (its three Keepers, the access token
// loaded), held=keeper a bare credential.Keeper per app configured as conf
// configures one. store=redis copies each value out of Redis; the memory
// store shares its strings, so there the 150-byte value is not counted.
// Run it with -benchtime=1x: each iteration builds all n.
func BenchmarkScaleMemory(b *testing.B) {
	for _, held := range []string{"conf", "keeper"} {
		for _, backend := range []string{"memory", "redis"} {
			b.Run("held="+held+"/store="+backend, func(b *testing.B) {
				n := *scaleN
				s := scaleStore(b, backend)
				warmPool(b, s)
				hc := sharedHTTP()
				srv := wechattest.NewServer() // knows none of the apps: a grant would fail
				b.Cleanup(srv.Close)
				ctx := context.Background()
				var perCred, perGoroutine float64
				for b.Loop() {
					b.StopTimer()
					ids := scaleApps(n)
					seedTokens(b, s, ids)
					g0 := settle(0)
					h0 := heapAlloc()
					b.StartTimer()
					closers := make([]func(), n)
					for i, id := range ids {
						switch held {
						case "conf":
							c, err := conf.New(conf.WithAppID(id, "secret"), conf.WithStore(s), conf.WithHTTPClient(hc), conf.WithBaseURLs(srv.URL()))
							if err != nil {
								b.Fatal(err)
							}
							if _, err := c.AccessToken(ctx); err != nil {
								b.Fatal(err)
							}
							closers[i] = func() { c.Close() }
						case "keeper":
							k, err := credential.New(credential.Config{
								Name: "access_token", Key: conf.Key(id, conf.AccessToken), Store: s,
								Grant: func(context.Context, credential.Request) (credential.Grant, error) {
									return credential.Grant{}, errors.New("no grant in this benchmark")
								},
								LogAttrs: []slog.Attr{slog.String("appid", id)},
							})
							if err != nil {
								b.Fatal(err)
							}
							if _, err := k.Get(ctx); err != nil {
								b.Fatal(err)
							}
							closers[i] = func() { k.Close() }
						}
					}
					b.StopTimer()
					g1 := settle(g0)
					h1 := heapAlloc()
					perCred = float64(int64(h1)-int64(h0)) / float64(n)
					perGoroutine = float64(g1-g0) / float64(n)
					runtime.KeepAlive(closers)
					for _, c := range closers {
						c()
					}
					b.StartTimer()
				}
				b.ReportMetric(perCred, "B/credential")
				b.ReportMetric(perGoroutine, "goroutines/credential")
				if st := srv.Stats(); st.TokenGrants != 0 {
					b.Fatalf("%d grants; every token was in the store", st.TokenGrants)
				}
			})
		}
	}
}

// BenchmarkScaleColdStart is a process starting with -scale.n apps: it
// builds a conf.Conf per app and fetches every access token with
// -scale.workers concurrent callers. tokens=stored: another node already
// stored them (a restart); tokens=granted: the store is empty and every
// token is granted by the fake WeChat over HTTP under the store's lease
// (a first deploy). It reports the seconds per start and tokens per second.
func BenchmarkScaleColdStart(b *testing.B) {
	for _, backend := range []string{"memory", "redis"} {
		for _, tokens := range []string{"stored", "granted"} {
			b.Run("store="+backend+"/tokens="+tokens, func(b *testing.B) {
				n, workers := *scaleN, *scaleWorkers
				s := scaleStore(b, backend)
				hc := sharedHTTP()
				ctx := context.Background()
				var total time.Duration
				starts := 0
				for b.Loop() {
					b.StopTimer()
					ids := scaleApps(n)
					opts := []wechattest.Option{wechattest.WithDailyQuota(-1)}
					for _, id := range ids {
						opts = append(opts, wechattest.WithApp(id, "secret-"+id))
					}
					srv := wechattest.NewServer(opts...)
					if tokens == "stored" {
						seedTokens(b, s, ids)
					}
					confs := make([]*conf.Conf, n)
					runtime.GC()
					b.StartTimer()
					t0 := time.Now()
					err := parallel(n, workers, func(i int) error {
						c, err := conf.New(conf.WithAppID(ids[i], "secret-"+ids[i]), conf.WithStore(s), conf.WithHTTPClient(hc), conf.WithBaseURLs(srv.URL()))
						if err != nil {
							return err
						}
						confs[i] = c
						_, err = c.AccessToken(ctx)
						return err
					})
					elapsed := time.Since(t0)
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					total += elapsed
					starts++
					grants := srv.Stats().TokenGrants
					for _, c := range confs {
						c.Close()
					}
					srv.Close()
					want := 0
					if tokens == "granted" {
						want = n
					}
					if grants != want {
						b.Fatalf("%d grants; want %d", grants, want)
					}
					b.StartTimer()
				}
				sec := total.Seconds() / float64(starts)
				b.ReportMetric(sec, "s/start")
				b.ReportMetric(float64(n)/sec, "tokens/s")
			})
		}
	}
}
