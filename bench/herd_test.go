package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/cache"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// Both clients treat a token as stale life after its grant, so that a cycle
// takes seconds, not hours. silenceper caches a token for expires_in − 1500 s,
// so its fake grants tokens of 1500 s + life. Ours refreshes margin before
// expiry but holds a token it granted itself for at least half its life (so
// that a short-lived grant cannot start a grant loop), so its fake grants
// tokens of 2 × life and its margin is life.
const peerCacheCut = 1500 * time.Second

// herdLatency is the fake's delay on each grant, a round trip to WeChat.
const herdLatency = 20 * time.Millisecond

// herdSlack is how long after the expiry a cycle starts, so that every
// node's copy is stale even on a loaded machine whose timers run late.
const herdSlack = 300 * time.Millisecond

type herdConfig struct {
	nodes      int           // clients sharing one store, as processes would
	goroutines int           // callers per node, all at once
	life       time.Duration // how long a grant stays fresh
}

// The herd of the benchmark: four nodes of sixteen goroutines. life is 2 s
// because memcached counts a relative expiry of 1 s as anything between 0
// and 1 s, which would let silenceper's cached token vanish mid-cycle.
var benchHerd = herdConfig{nodes: 4, goroutines: 16, life: 2 * time.Second}

// herdResult sums up the measured cycles.
type herdResult struct {
	cycles, calls int
	grants        int             // tokens the fake granted
	cycleGrants   []int           // the same, cycle by cycle
	rejected      int             // calls whose token the fake refused right after the cycle
	latencies     []time.Duration // one per call
	err           error           // the first call that failed
}

func (r herdResult) perCycle(n int) float64 { return float64(n) / float64(r.cycles) }

// percentile is the nearest-rank q-quantile of the call latencies.
func (r herdResult) percentile(q float64) time.Duration {
	l := slices.Clone(r.latencies)
	slices.Sort(l)
	if len(l) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(l)))) - 1
	return l[max(i, 0)]
}

// getter is one node's way to get the access token.
type getter func(ctx context.Context) (string, error)

// herd runs cycles of the herd against srv: each waits until every node's
// token is stale, then lets all nodes × goroutines callers in at once and
// records what they got. One warm-up call per node, not counted, fills the
// caches first. sleep waits between cycles (a benchmark stops its timer).
func herd(ctx context.Context, srv *wechattest.Server, cfg herdConfig, nodes []getter, cycles int, sleep func(time.Duration)) herdResult {
	var r herdResult
	for _, get := range nodes {
		if _, err := get(ctx); err != nil {
			r.err = fmt.Errorf("warm-up: %w", err)
			return r
		}
	}
	granted := srv.Stats().TokenGrants
	last := time.Now() // every grant so far happened before this
	type call struct {
		token string
		err   error
		took  time.Duration
	}
	calls := make([]call, len(nodes)*cfg.goroutines)
	for range cycles {
		sleep(time.Until(last.Add(cfg.life + herdSlack)))
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for i := range calls {
			get := nodes[i/cfg.goroutines]
			wg.Go(func() {
				<-gate
				start := time.Now()
				token, err := get(ctx)
				calls[i] = call{token, err, time.Since(start)}
			})
		}
		close(gate)
		wg.Wait()
		last = time.Now()
		now := srv.Stats().TokenGrants
		r.grants += now - granted
		r.cycleGrants = append(r.cycleGrants, now-granted)
		granted = now
		r.cycles++
		for _, c := range calls {
			r.calls++
			r.latencies = append(r.latencies, c.took)
			switch {
			case c.err != nil:
				if r.err == nil {
					r.err = c.err
				}
			case !srv.Valid(c.token):
				r.rejected++
			}
		}
	}
	return r
}

// herdFake is the fake WeChat of one herd run, granting tokens of ttl.
func herdFake(tb testing.TB, appID, secret string, ttl time.Duration) *wechattest.Server {
	return fake(tb, appID, secret, wechattest.WithTokenTTL(ttl), wechattest.WithLatency(herdLatency))
}

// ourHerd starts a fake for ours and cfg.nodes Confs, each on the store open
// returns for it.
func ourHerd(tb testing.TB, cfg herdConfig, open func() store.Store) (*wechattest.Server, []getter) {
	appID, secret := app()
	srv := herdFake(tb, appID, secret, 2*cfg.life)
	nodes := make([]getter, cfg.nodes)
	for i := range nodes {
		// No refresh spread: every copy goes stale at the same instant,
		// the worst herd, as silenceper's do.
		nodes[i] = ours(tb, srv, appID, secret, open(), conf.WithMargin(cfg.life), conf.WithRefreshSpread(0)).AccessToken
	}
	return srv, nodes
}

// peerHerd starts a fake for silenceper and cfg.nodes officialaccounts, each
// on the cache open returns for it.
func peerHerd(tb testing.TB, cfg herdConfig, open func() cache.Cache) (*wechattest.Server, []getter) {
	appID, secret := app()
	srv := herdFake(tb, appID, secret, peerCacheCut+cfg.life)
	nodes := make([]getter, cfg.nodes)
	for i := range nodes {
		nodes[i] = theirs(srv, appID, secret, open()).GetAccessTokenContext
	}
	return srv, nodes
}

// BenchmarkHerd: N nodes × M goroutines ask for the token just after it
// expired. One op is one cycle; the metrics are the ones that matter:
// grants/cycle (upstream grants; WeChat's daily quota is 2000),
// rejected/cycle (callers left holding a token that WeChat already refuses,
// because a later grant by another node killed it), and the p50 and p99
// latency of a call. ns/op is the whole cycle, the slowest call.
//
// Ours: N Confs on one shared store. Theirs: N silenceper officialaccounts on
// one shared cache. silenceper's in-memory cache is left out: it reads its
// map without its lock, a data race that -race reports (and it cannot be
// shared between processes anyway).
func BenchmarkHerd(b *testing.B) {
	cfg := benchHerd
	for _, backend := range backends {
		b.Run("backend="+backend+"/impl=wechatconf", func(b *testing.B) {
			srv, nodes := ourHerd(b, cfg, cluster(b, backend))
			runHerd(b, srv, cfg, nodes)
		})
		if !peerBackends[backend] || backend == "memory" {
			continue
		}
		b.Run("backend="+backend+"/impl=silenceper", func(b *testing.B) {
			srv, nodes := peerHerd(b, cfg, peerCache(b, backend))
			runHerd(b, srv, cfg, nodes)
		})
	}
}

func runHerd(b *testing.B, srv *wechattest.Server, cfg herdConfig, nodes []getter) {
	b.ResetTimer()
	r := herd(context.Background(), srv, cfg, nodes, b.N, func(d time.Duration) {
		b.StopTimer()
		time.Sleep(d)
		b.StartTimer()
	})
	if r.err != nil {
		b.Fatal(r.err)
	}
	b.ReportMetric(r.perCycle(r.grants), "grants/cycle")
	b.ReportMetric(r.perCycle(r.rejected), "rejected/cycle")
	b.ReportMetric(float64(r.percentile(0.50)), "p50-ns")
	b.ReportMetric(float64(r.percentile(0.99)), "p99-ns")
}

// TestHerd checks the claim the benchmark measures: however many nodes and
// goroutines ask at expiry, one grant per cycle, and every caller holds a
// token WeChat accepts. Memory and bbolt always run; Redis, Memcached and
// PostgreSQL when their servers are set (run.sh sets them; the backends' own
// tests, not these, are where a missing server fails CI). It also checks
// that the harness sees grants made per node, with nodes that do not share a
// store, so that the claim could fail.
func TestHerd(t *testing.T) {
	cfg := herdConfig{nodes: 3, goroutines: 8, life: 2 * time.Second}
	const cycles = 2 // the wants below spell out one entry per cycle
	ctx := context.Background()
	for _, backend := range backends {
		t.Run("shared/"+backend, func(t *testing.T) {
			t.Parallel()
			srv, nodes := ourHerd(t, cfg, cluster(t, backend))
			r := herd(ctx, srv, cfg, nodes, cycles, time.Sleep)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if !slices.Equal(r.cycleGrants, []int{1, 1}) || r.rejected != 0 || r.calls != cycles*cfg.nodes*cfg.goroutines {
				t.Errorf("grants by cycle %v, %d calls rejected, %d calls; want [1 1], 0, %d",
					r.cycleGrants, r.rejected, r.calls, cycles*cfg.nodes*cfg.goroutines)
			}
		})
	}
	t.Run("unshared", func(t *testing.T) {
		t.Parallel()
		srv, nodes := ourHerd(t, cfg, func() store.Store { return store.NewMemory() })
		r := herd(ctx, srv, cfg, nodes, cycles, time.Sleep)
		if r.err != nil {
			t.Fatal(r.err)
		}
		// Each node grants once a cycle; WeChat keeps only the last
		// grant and the one before, so the first node's callers (all its
		// goroutines) hold a dead token.
		wantRejected := cycles * (cfg.nodes - 2) * cfg.goroutines
		if !slices.Equal(r.cycleGrants, []int{cfg.nodes, cfg.nodes}) || r.rejected != wantRejected {
			t.Errorf("grants by cycle %v, %d calls rejected; want [%d %d], %d",
				r.cycleGrants, r.rejected, cfg.nodes, cfg.nodes, wantRejected)
		}
	})
}
