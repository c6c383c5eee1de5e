package conf_test

// The bad days of issue #10, one test each: every one failed on the engine
// before flights, lease guards and the limits (see the comments), and
// passes now.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

var tokenKey = conf.Key(wechattest.DefaultAppID, conf.AccessToken)

// totalGrants counts every token the fake issued: classic and stable.
func totalGrants(f *wechattest.Fake) int {
	st := f.Stats()
	return st.TokenGrants + st.StableTokenGrants
}

// Seen: with the store down, every rejection entered the lease-less grant
// path again; three nodes in one process made 15 grants for 15 calls, each
// grant killing the token of the grant before last.
func TestOutageRejectionsNeverStartAGrantStorm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithGrace(0))
		st := &flakyStore{Store: store.NewMemory()}
		nodes := []*conf.Conf{node(t, fake, st), node(t, fake, st), node(t, fake, st)}
		ctx := t.Context()
		for _, n := range nodes {
			if _, err := n.AccessToken(ctx); err != nil {
				t.Fatal(err)
			}
		}
		before := totalGrants(fake)
		st.down.Store(true)
		// Two grants behind the nodes' back kill the token they share.
		fake.GrantElsewhere(wechattest.DefaultAppID)
		fake.GrantElsewhere(wechattest.DefaultAppID)
		calls, failed := 0, 0
		for round := range 5 {
			for i, n := range nodes {
				calls++
				err := n.Do(ctx, func(tok string) error { return protected(ctx, fake, tok) })
				if err != nil {
					failed++
					t.Errorf("round %d node %d: %v", round, i, err)
				}
			}
			time.Sleep(time.Second)
		}
		grants := totalGrants(fake) - before
		t.Logf("store down, 2 grants behind the back: %d calls, %d failed, %d grants (%+v)", calls, failed, grants, fake.Stats())
		if grants > len(nodes) {
			t.Fatalf("%d grants during the outage; want at most one per process (%d)", grants, len(nodes))
		}
		if f := fake.Stats().StableTokenForced; f != 0 {
			t.Fatalf("%d forced stable refreshes without the lease; want 0", f)
		}
	})
}

// Seen: the grant's deadline counted from the grant's start and the lease
// was never extended: two nodes with a lease shorter than the grant made
// two grants.
func TestLeaseCoversASlowGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithLatency(2500 * time.Millisecond))
		st := store.NewMemory()
		opts := []conf.Option{conf.WithLeaseTTL(time.Second)}
		a, b := node(t, fake, st, opts...), node(t, fake, st, opts...)
		var ta, tb string
		var wg sync.WaitGroup
		wg.Go(func() {
			var err error
			if ta, err = a.AccessToken(t.Context()); err != nil {
				t.Errorf("a: %v", err)
			}
		})
		wg.Go(func() {
			time.Sleep(1500 * time.Millisecond) // past the first lease's TTL
			var err error
			if tb, err = b.AccessToken(t.Context()); err != nil {
				t.Errorf("b: %v", err)
			}
		})
		wg.Wait()
		if g := fake.Stats().TokenGrants; g != 1 || ta != tb {
			t.Fatalf("grants = %d, a %q, b %q; want 1 grant shared by both", g, ta, tb)
		}
	})
}

// noExtend hides the leases' Extend, as a third-party store might.
type noExtend struct{ store.Store }

type plainLease struct{ l store.Lease }

func (p plainLease) Unlock(ctx context.Context) error { return p.l.Unlock(ctx) }

func (n noExtend) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	l, err := n.Store.Lock(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return plainLease{l}, nil
}

// Without Extend a grant that outlives its lease is cancelled: it never
// stores a result another holder may already be replacing.
func TestGrantOutlivingALeaseThatCannotBeExtendedIsNotStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithLatency(2500 * time.Millisecond))
		mem := store.NewMemory()
		c := node(t, fake, noExtend{mem}, conf.WithLeaseTTL(time.Second))
		_, err := c.AccessToken(t.Context())
		if err == nil || !strings.Contains(err.Error(), "lease") {
			t.Fatalf("AccessToken: %v; want an error saying the lease ran out", err)
		}
		if _, err := mem.Get(t.Context(), tokenKey); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("store after a lapsed lease: %v; want nothing stored", err)
		}
	})
}

// Seen: the flight ran on its first caller's context; a 50 ms caller and a
// patient one sent two grant requests to WeChat.
func TestShortCallerDeadlineDoesNotCancelTheRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithLatency(200 * time.Millisecond))
		c := node(t, fake, store.NewMemory())
		var wg sync.WaitGroup
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			if _, err := c.AccessToken(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("hasty caller: %v; want its own deadline", err)
			}
		})
		wg.Go(func() {
			time.Sleep(10 * time.Millisecond)
			if _, err := c.AccessToken(t.Context()); err != nil {
				t.Errorf("patient caller: %v", err)
			}
		})
		wg.Wait()
		if st := fake.Stats(); st.Requests != 1 || st.TokenGrants != 1 {
			t.Fatalf("requests = %d, grants = %d; want 1 and 1", st.Requests, st.TokenGrants)
		}
	})
}

// hangStore blocks every call until its context ends while hung is set, as
// a SIGSTOPped Redis does; it records the longest call.
type hangStore struct {
	store.Store
	hung    atomic.Bool
	mu      sync.Mutex
	longest time.Duration
}

func (h *hangStore) block(ctx context.Context) error {
	start := time.Now()
	<-ctx.Done()
	h.mu.Lock()
	h.longest = max(h.longest, time.Since(start))
	h.mu.Unlock()
	return ctx.Err()
}

func (h *hangStore) Get(ctx context.Context, key string) (store.Item, error) {
	if h.hung.Load() {
		return store.Item{}, h.block(ctx)
	}
	return h.Store.Get(ctx, key)
}

func (h *hangStore) Set(ctx context.Context, key string, item store.Item) error {
	if h.hung.Load() {
		return h.block(ctx)
	}
	return h.Store.Set(ctx, key, item)
}

func (h *hangStore) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	if h.hung.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Lock(ctx, key, ttl)
}

// Seen: past its margin a local copy was no longer served, so with the
// store hung every request waited for the store client's retries (10 s)
// although the token was valid for minutes.
func TestHungStoreNeverBlocksCallersWhileTheCopyIsValid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := &hangStore{Store: store.NewMemory()}
		var ev events
		c := node(t, fake, st, conf.WithObserver(ev.observe), conf.WithStoreTimeout(time.Second))
		tok, err := c.AccessToken(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		st.hung.Store(true)
		time.Sleep(wechattest.DefaultTokenTTL - conf.DefaultMargin + time.Second) // past the margin
		var worst time.Duration
		for range 100 {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			start := time.Now()
			got, err := c.AccessToken(ctx)
			worst = max(worst, time.Since(start))
			cancel()
			if err != nil || got != tok {
				t.Fatalf("with the store hung: %q, %v; want the valid local copy", got, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if worst != 0 {
			t.Fatalf("a caller waited %v (fake time) with a valid copy at hand; want no wait", worst)
		}
		synctest.Wait()
		st.mu.Lock()
		longest := st.longest
		st.mu.Unlock()
		if longest == 0 || longest > time.Second {
			t.Fatalf("longest store call %v; want bounded by WithStoreTimeout (1s)", longest)
		}
		if ev.count(conf.EventStoreError) == 0 {
			t.Fatal("the hung store was not reported")
		}
	})
}

// setFails fails only Set, or every call when down.
type setFails struct{ store.Store }

func (setFails) Set(context.Context, string, store.Item) error { return errDown }

// Seen: GrantAccessToken and GrantJSAPITicket panicked ("interface {} is
// nil, not *conf.TokenResponse") when the store failed.
func TestGrantMethodsNeverPanicWhenTheStoreFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := &flakyStore{Store: store.NewMemory()}
		c := node(t, fake, st, conf.WithForcedRefreshInterval(0))
		ctx := t.Context()
		if _, err := c.AccessToken(ctx); err != nil { // a valid local copy
			t.Fatal(err)
		}
		if _, err := c.JSAPITicket(ctx); err != nil {
			t.Fatal(err)
		}
		st.down.Store(true)
		if r, err := c.GrantAccessToken(ctx); err == nil || r != nil || !errors.Is(err, conf.ErrUnavailable) {
			t.Fatalf("GrantAccessToken with the store down: %v, %v; want ErrUnavailable", r, err)
		}
		if r, err := c.GrantJSAPITicket(ctx); err == nil || r != nil {
			t.Fatalf("GrantJSAPITicket with the store down: %v, %v; want an error", r, err)
		}
		if r, err := c.GrantWXCardTicket(ctx); err == nil || r != nil {
			t.Fatalf("GrantWXCardTicket with the store down: %v, %v; want an error", r, err)
		}
		// A store that takes the lease but fails the Set: the grant was
		// made, and is returned.
		c2 := node(t, fake, setFails{store.NewMemory()})
		r, err := c2.GrantAccessToken(ctx)
		if err != nil || r == nil || !fake.Valid(r.AccessToken) {
			t.Fatalf("GrantAccessToken with a failing Set: %v, %v; want the grant", r, err)
		}
	})
}

// plantedStore answers Get with what a bad record gives (an item with no
// value, or ErrMalformed as a backend does for a record it cannot decode)
// until the next Set overwrites it.
type plantedStore struct {
	store.Store
	bad   atomic.Bool
	empty bool // an empty value instead of ErrMalformed
}

func (m *plantedStore) Get(ctx context.Context, key string) (store.Item, error) {
	if m.bad.Load() {
		if m.empty {
			return store.Item{ExpiresAt: time.Now().Add(time.Hour)}, nil
		}
		return store.Item{}, &store.OpError{Backend: "test", Op: "get", Key: key, Err: store.ErrMalformed}
	}
	return m.Store.Get(ctx, key)
}

func (m *plantedStore) Set(ctx context.Context, key string, item store.Item) error {
	m.bad.Store(false) // the backend overwrites the bad record
	return m.Store.Set(ctx, key, item)
}

// Seen: a record with a far-future expiry and any value was served as the
// access token forever (and newer-wins kept it over real grants); an empty
// value cost a grant every minute; an undecodable record never healed.
func TestPoisonedStoreItemsAreNeverServedAndAreReplaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		item func(now time.Time) store.Item
	}{
		{"far future", func(now time.Time) store.Item { return store.Item{Value: "POISON", ExpiresAt: now.AddDate(80, 0, 0)} }},
		{"clock a day ahead", func(now time.Time) store.Item { return store.Item{Value: "AHEAD", ExpiresAt: now.Add(26 * time.Hour)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := wechattest.New()
				st := store.NewMemory()
				ctx := t.Context()
				poison := tc.item(time.Now())
				if err := st.Set(ctx, tokenKey, poison); err != nil {
					t.Fatal(err)
				}
				var ev events
				c := node(t, fake, st, conf.WithObserver(ev.observe))
				for range 3 {
					tok, err := c.AccessToken(ctx)
					if err != nil || !fake.Valid(tok) {
						t.Fatalf("AccessToken: %q, %v; want a real token", tok, err)
					}
					time.Sleep(conf.DefaultReread + time.Second)
					c.AccessToken(ctx)
					synctest.Wait()
				}
				if g := fake.Stats().TokenGrants; g != 1 {
					t.Fatalf("grants = %d; want 1 (the poison replaced once and for all)", g)
				}
				if item, err := st.Get(ctx, tokenKey); err != nil || !fake.Valid(item.Value) {
					t.Fatalf("store holds %v, %v; want the granted token", item, err)
				}
				if ev.count(conf.EventMalformed) == 0 {
					t.Fatal("the poisoned item was not reported")
				}
			})
		})
	}
	for _, empty := range []bool{false, true} {
		name := map[bool]string{false: "undecodable", true: "empty value"}[empty]
		t.Run(name, func(t *testing.T) { testPlanted(t, empty) })
	}
}

func testPlanted(t *testing.T, empty bool) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := &plantedStore{Store: store.NewMemory(), empty: empty}
		st.bad.Store(true)
		var ev events
		c := node(t, fake, st, conf.WithObserver(ev.observe))
		tok, err := c.AccessToken(t.Context())
		if err != nil || !fake.Valid(tok) {
			t.Fatalf("AccessToken: %q, %v", tok, err)
		}
		if s := fake.Stats(); s.TokenGrants != 1 || s.StableTokenGrants != 0 {
			t.Fatalf("grants %+v; want one classic grant under the lease, none without it", s)
		}
		if st.bad.Load() || ev.count(conf.EventMalformed) == 0 || ev.count(conf.EventStoreError) != 0 {
			t.Fatalf("bad record left=%v, malformed events %d, store errors %d; want healed, reported, not an outage",
				st.bad.Load(), ev.count(conf.EventMalformed), ev.count(conf.EventStoreError))
		}
	})
}

// Seen: expires_in = 1e10 gave a negative expiry and one grant per request;
// 0, negative or an empty token were not refused either.
func TestImplausibleGrantAnswersAreErrorsAndNothingIsCached(t *testing.T) {
	for _, body := range []string{
		`{"access_token":"T","expires_in":10000000000}`,
		`{"access_token":"T","expires_in":0}`,
		`{"access_token":"T","expires_in":-7200}`,
		`{"access_token":"T","expires_in":7201}`,
		`{"access_token":"","expires_in":7200}`,
		`{"access_token":"  ","expires_in":7200}`,
		`{"expires_in":7200}`,
	} {
		t.Run(body, func(t *testing.T) {
			var requests atomic.Int32
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, body)
			})
			st := store.NewMemory()
			c := node(t, h, st)
			for i := range 2 {
				if tok, err := c.AccessToken(t.Context()); err == nil {
					t.Fatalf("call %d: got %q; want an error", i, tok)
				}
			}
			if n := requests.Load(); n != 2 {
				t.Fatalf("requests = %d; want 2 (nothing cached)", n)
			}
			if _, err := st.Get(t.Context(), tokenKey); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("store: %v; want nothing stored", err)
			}
		})
	}
}

// Seen: 1000 chained invalidations (each with the token the previous one
// returned) made 1000 grants in 52 s, then the day's quota was gone.
func TestForcedRefreshesAreLimitedAcrossTheCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		nodes := []*conf.Conf{node(t, fake, st), node(t, fake, st)}
		ctx := t.Context()
		if _, err := nodes[0].AccessToken(ctx); err != nil {
			t.Fatal(err)
		}
		var tok string
		var err error
		before := fake.Stats().TokenGrants
		limited := 0
		start := time.Now()
		for i := range 1000 {
			// Each node reports the token it serves, as a client of
			// each would after a 40001.
			n := nodes[i%2]
			if tok, err = n.AccessToken(ctx); err != nil {
				t.Fatal(err)
			}
			_, err := n.Invalidate(ctx, conf.AccessToken, tok)
			switch {
			case errors.Is(err, conf.ErrRefreshLimited):
				limited++
				var le *conf.RefreshLimitedError
				if !errors.As(err, &le) || !le.Next.After(time.Now()) {
					t.Fatalf("limit error %v carries no future Next", err)
				}
			case err != nil:
				t.Fatalf("invalidation %d: %v", i, err)
			}
			time.Sleep(60 * time.Millisecond)
		}
		grants := fake.Stats().TokenGrants - before
		t.Logf("1000 chained invalidations in %v: %d grants, %d refused", time.Since(start), grants, limited)
		if grants > 3 || grants < 1 {
			t.Fatalf("%d grants for 1000 invalidations in a minute; want 1 to 3", grants)
		}
		// A genuine revocation is still repaired within a minute, even
		// right after another one used the allowance.
		for i := range 2 {
			if d := repairAfterRevoke(t, fake, nodes[1]); i == 1 && d == 0 {
				t.Fatal("a second revocation right after the first was repaired at once: no limit in force")
			}
		}
	})
}

// repairAfterRevoke revokes the app's tokens and returns how long c took
// to make a protected call work again; it fails the test past a minute.
func repairAfterRevoke(t *testing.T, fake *wechattest.Fake, c *conf.Conf) time.Duration {
	ctx := t.Context()
	fake.Revoke(wechattest.DefaultAppID)
	revoked := time.Now()
	for {
		err := c.Do(ctx, func(tok string) error { return protected(ctx, fake, tok) })
		if err == nil {
			break
		}
		if !errors.Is(err, conf.ErrRefreshLimited) {
			t.Fatalf("after a revocation: %v", err)
		}
		if time.Since(revoked) > time.Minute {
			t.Fatal("a revocation was not repaired within a minute")
		}
		time.Sleep(time.Second)
	}
	d := time.Since(revoked)
	t.Logf("revocation repaired after %v", d)
	return d
}

// closableStore fails the test if it is used after it was closed.
type closableStore struct {
	store.Store
	t      *testing.T
	closed atomic.Bool
}

func (c *closableStore) used(op string) {
	if c.closed.Load() {
		c.t.Errorf("store %s after the store was closed", op)
	}
}

func (c *closableStore) Get(ctx context.Context, key string) (store.Item, error) {
	c.used("get")
	return c.Store.Get(ctx, key)
}

func (c *closableStore) Set(ctx context.Context, key string, item store.Item) error {
	c.used("set")
	return c.Store.Set(ctx, key, item)
}

func (c *closableStore) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	c.used("lock")
	l, err := c.Store.Lock(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return closableLease{l, c}, nil
}

type closableLease struct {
	store.Lease
	s *closableStore
}

func (l closableLease) Unlock(ctx context.Context) error {
	l.s.used("unlock")
	return l.Lease.Unlock(ctx)
}

// Seen: Close did not wait for a refresh in flight; its deferred Unlock
// reached a store the caller had already closed, leaving the lease held for
// its TTL.
func TestCloseWaitsForRefreshesAndReleasesTheirLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New(wechattest.WithLatency(5 * time.Second))
		mem := store.NewMemory()
		st := &closableStore{Store: mem, t: t}
		c, err := conf.New(
			conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
			conf.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(fake)}),
			conf.WithBaseURLs("http://wechat.test"),
			conf.WithStore(st),
		)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := c.AccessToken(context.Background()); done <- err }()
		synctest.Wait() // the grant is waiting on WeChat, the lease held
		c.Close()
		st.closed.Store(true)
		lease, err := mem.Lock(t.Context(), tokenKey, time.Second)
		if err != nil {
			t.Fatalf("Lock right after Close: %v; want the refresh's lease released", err)
		}
		lease.Unlock(t.Context())
		if err := <-done; !errors.Is(err, conf.ErrClosed) {
			t.Fatalf("caller: %v; want ErrClosed", err)
		}
	})
}
