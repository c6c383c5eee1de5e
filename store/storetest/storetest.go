// Package storetest checks that a store.Store keeps the contract written in
// package store, the way testing/fstest.TestFS checks an fs.FS: one call
// proves a backend, ours or a user's.
//
//	storetest.Run(t, func(t *testing.T) store.Store { return newStoreOnFreshPrefix(t) })
//
// Run's subtests are grouped (Item, NewerWins, Lease, Watch, Context,
// Concurrency, Broken, BadData); inside a group they run in parallel, each on a store
// of its own from newStore. A failure message starts with the contract rule
// that was broken.
//
// A backend over a server should also pass WithPeer (a second client on the
// same namespace, so that leases, newer-wins and watches are proven across
// nodes), WithBroken (a store whose server is gone, so that outages are
// proven to be errors and not misses), WithRawWriter (a way to plant
// records the store cannot decode, so that they are proven to be reported as
// store.ErrMalformed and healed by Set) and, if its expiry is coarse,
// WithGranularity.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// Option changes how Run tests a store.
type Option func(*config)

type config struct {
	peer        func(t *testing.T, s store.Store) store.Store
	broken      func(t *testing.T) store.Store
	granularity time.Duration
	raw         func(t *testing.T, s store.Store, key string, raw []byte) // baddata.go
	malformed   [][]byte
	problems    []string
}

// defaultGranularity is the expiry step assumed when WithGranularity is not
// given.
const defaultGranularity = 100 * time.Millisecond

// WithPeer gives Run a second handle onto the namespace of a store made by
// newStore: for a networked backend, a store over its own client or
// connection with the same prefix. Run then splits lease contenders across
// both handles, sets on one and reads on the other, and expects a watcher on
// one to be woken by a Set on the other: the cross-node half of the
// contract. peer is called with the subtest's t (use t.Cleanup to close
// what it opens) and must not return s itself for a networked backend, or
// nothing crosses a node.
func WithPeer(peer func(t *testing.T, s store.Store) store.Store) Option {
	return func(c *config) {
		if peer == nil {
			c.problems = append(c.problems, "WithPeer was given a nil func")
			return
		}
		c.peer = peer
	}
}

// WithBroken gives Run a way to make a store whose backend is unreachable:
// a closed client, a stopped server, a wrong address. Every operation on it
// must return an error that is neither store.ErrNotFound nor
// store.ErrLocked (callers that took an outage for a miss would grant a new
// credential on every outage and burn WeChat's daily quota), and the error
// must not reveal the item's value. Without this option the Broken subtest
// is skipped.
func WithBroken(broken func(t *testing.T) store.Store) Option {
	return func(c *config) {
		if broken == nil {
			c.problems = append(c.problems, "WithBroken was given a nil func")
			return
		}
		c.broken = broken
	}
}

// WithGranularity tells Run the smallest expiry step that the backend honours
// (memcached counts in whole seconds: pass time.Second). Lease and item
// expiry tests wait multiples of d, and allow an expiry to come up to d
// early. The default is 100ms.
func WithGranularity(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.problems = append(c.problems, fmt.Sprintf("WithGranularity(%v): the granularity must be positive", d))
			return
		}
		c.granularity = d
	}
}

// Run tests the store that newStore makes against the store contract. Each
// call of newStore must return a store over a fresh, empty namespace (a new
// prefix, a new table, a new file) that no other call shares; newStore
// receives the subtest's t, so it can register cleanup with t.Cleanup or
// call t.Skip when its server is missing.
//
// Run returns when every subtest has finished, so a caller may close shared
// clients once Run returns. The whole run takes a few seconds at the default
// granularity and about ten at one second.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	t.Helper()
	cfg := config{granularity: defaultGranularity}
	for _, o := range opts {
		if o == nil {
			cfg.problems = append(cfg.problems, "a nil Option")
			continue
		}
		o(&cfg)
	}
	if newStore == nil {
		cfg.problems = append(cfg.problems, "newStore is nil")
	}
	if len(cfg.problems) > 0 {
		t.Fatalf("storetest.Run: %s", strings.Join(cfg.problems, "; "))
	}
	r := &runner{cfg: cfg, newStore: newStore}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, r)
				})
			}
		})
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, r *runner)
}

var groups = []struct {
	name  string
	cases []testCase
}{
	{"Item", []testCase{
		{"RoundTrip", testRoundTrip},
		{"NotFound", testNotFound},
		{"Expiry", testExpiry},
		{"Keys", testKeys},
		{"LeaseBesideItem", testLeaseBesideItem},
	}},
	{"NewerWins", []testCase{
		{"OlderNeverReplacesNewer", testOlderNeverReplacesNewer},
		{"Concurrent", testNewerWinsConcurrent},
	}},
	{"Lease", []testCase{
		{"OneOf64", testOneOf64},
		{"ExpiresAfterTTL", testExpiresAfterTTL},
		{"StaleUnlockAfterTakeover", testStaleUnlockAfterTakeover},
		{"UnlockIdempotent", testUnlockIdempotent},
		{"IndependentKeys", testLeaseIndependentKeys},
		{"ExtendKeepsHeld", testExtendKeepsHeld},
		{"ExtendAfterTakeover", testExtendAfterTakeover},
	}},
	{"Watch", []testCase{
		{"SetWakesWatcher", testWatchWakes},
		{"CancelClosesChannel", testWatchCancel},
	}},
	{"Context", []testCase{
		{"Done", testContextDone},
	}},
	{"Concurrency", []testCase{
		{"Mixed", testMixed},
	}},
	{"Broken", []testCase{
		{"ErrorsAreNotMisses", testBroken},
	}},
	{"BadData", badDataCases},
}

// Keys in the form package conf uses, braces and colons included.
const (
	keyToken  = "{wx00000000000000a1}:access_token"
	keyTicket = "{wx00000000000000a1}:jsapi_ticket"
	keyCard   = "{wx00000000000000a1}:wx_card_ticket"
	keyOther  = "{wx00000000000000a2}:access_token"
	keyBare   = "{wx00000000000000a1}"
)

type runner struct {
	cfg      config
	newStore func(t *testing.T) store.Store
}

// stores returns a fresh store and its peer (the store itself without
// WithPeer).
func (r *runner) stores(t *testing.T) (s, peer store.Store) {
	t.Helper()
	s = r.newStore(t)
	if s == nil {
		t.Fatal("storetest: newStore returned a nil Store")
	}
	peer = s
	if r.cfg.peer != nil {
		peer = r.cfg.peer(t, s)
		if peer == nil {
			t.Fatal("storetest: the WithPeer func returned a nil Store")
		}
	}
	return s, peer
}

// hasPeer reports whether the two handles are distinct.
func (r *runner) hasPeer() bool { return r.cfg.peer != nil }

// handle spreads work across the two handles: even i on s, odd i on peer.
func handle(i int, s, peer store.Store) store.Store {
	if i%2 == 0 {
		return s
	}
	return peer
}

// g is the expiry granularity.
func (r *runner) g() time.Duration { return r.cfg.granularity }

// long is a TTL that no test outlives.
func (r *runner) long() time.Duration { return max(time.Minute, 30*r.g()) }

// prompt bounds calls that must return at once: generous, so that a slow
// machine does not fail them, yet far shorter than long, so that a Lock that
// waits for a lease instead of returning ErrLocked is caught.
func (r *runner) prompt() time.Duration { return max(5*time.Second, 10*r.g()) }

// patience bounds how long after a TTL a new holder may take to get in.
func (r *runner) patience() time.Duration { return max(5*time.Second, 10*r.g()) }

// poll is the pause between attempts while waiting for a lease to expire.
func (r *runner) poll() time.Duration {
	return min(max(r.g()/10, 2*time.Millisecond), 100*time.Millisecond)
}

// within runs f and fails the test if it has not returned after d. On that
// failure f's goroutine is left behind; the test has failed anyway.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// show prints a test item in full: the values are made up by the tests.
func show(it store.Item) string {
	return fmt.Sprintf("{Value:%q ExpiresAt:%s}", it.Value, it.ExpiresAt.Format(time.RFC3339Nano))
}

// sameItem reports whether got is want, its expiry kept to the millisecond.
func sameItem(got, want store.Item) bool {
	d := got.ExpiresAt.Sub(want.ExpiresAt)
	return got.Value == want.Value && d > -time.Millisecond && d < time.Millisecond
}

// tokenValue looks like an access token and carries characters that break
// careless quoting (SQL, Lua, JSON, shells) and non-ASCII text.
func tokenValue(tag string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	var b strings.Builder
	b.WriteString(tag)
	b.WriteString(`-"quote'\backslash%percent:colon{brace} space;semi 令牌-`)
	for range 160 {
		b.WriteByte(alphabet[rand.IntN(len(alphabet))])
	}
	return b.String()
}

// mustSet sets item and fails the test on an error.
func mustSet(t *testing.T, s store.Store, key string, item store.Item) {
	t.Helper()
	if err := s.Set(t.Context(), key, item); err != nil {
		t.Fatalf("Set(%q, %s) failed: %v", key, show(item), err)
	}
}

// mustGet gets an item that must be there.
func mustGet(t *testing.T, s store.Store, key string) store.Item {
	t.Helper()
	got, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q) after a Set: want the item, got error %v", key, err)
	}
	return got
}

// mustLock takes a lease that must be free.
func mustLock(t *testing.T, s store.Store, key string, ttl time.Duration, why string) store.Lease {
	t.Helper()
	l, err := s.Lock(t.Context(), key, ttl)
	if err != nil {
		t.Fatalf("lease: Lock(%q, %v) %s: want a lease, got %v", key, ttl, why, err)
	}
	if l == nil {
		t.Fatalf("lease: Lock(%q, %v) returned a nil Lease and a nil error", key, ttl)
	}
	return l
}

// mustUnlock releases a lease and fails the test on an error.
func mustUnlock(t *testing.T, l store.Lease, why string) {
	t.Helper()
	if err := l.Unlock(t.Context()); err != nil {
		t.Errorf("lease: Unlock %s: want nil, got %v", why, err)
	}
}

// wantLocked checks that a Lock on a held key returns ErrLocked at once. A
// lease it gets anyway is released.
func (r *runner) wantLocked(t *testing.T, s store.Store, key string, rule string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), r.prompt())
	defer cancel()
	l, err := s.Lock(ctx, key, r.long())
	switch {
	case err == nil:
		t.Errorf("%s: Lock(%q) got a lease; want ErrLocked", rule, key)
		if l != nil {
			_ = l.Unlock(t.Context())
		}
	case errors.Is(err, store.ErrLocked):
	case ctx.Err() != nil:
		t.Errorf("%s: Lock(%q) of a held key did not return within %v (%v); Lock must return ErrLocked at once, not wait for the lease", rule, key, r.prompt(), err)
	default:
		t.Errorf("%s: Lock(%q): want ErrLocked (errors.Is), got %v", rule, key, err)
	}
}

// acquire polls Lock until it gets the lease that expires at about
// expiresAt, and reports how long after start it got in. It fails the test
// when patience runs out.
func (r *runner) acquire(t *testing.T, s store.Store, key string, ttl time.Duration, start, expiresAt time.Time) (store.Lease, time.Duration) {
	t.Helper()
	deadline := expiresAt.Add(r.patience())
	for {
		l, err := s.Lock(t.Context(), key, ttl)
		if err == nil {
			if l == nil {
				t.Fatalf("lease: Lock(%q) returned a nil Lease and a nil error", key)
			}
			return l, time.Since(start)
		}
		if !errors.Is(err, store.ErrLocked) {
			t.Fatalf("lease: Lock(%q) while waiting for an expired lease: want a lease or ErrLocked, got %v", key, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease expiry: the lease on %q, taken for %v and never unlocked, still refused a new holder %v after its TTL ran out; a holder that crashes must block no one past its TTL",
				key, expiresAt.Sub(start), time.Since(expiresAt).Round(time.Millisecond))
		}
		time.Sleep(r.poll())
	}
}

// checkNotEarly fails the test when a new holder got in well before the
// first lease's TTL ran out.
func (r *runner) checkNotEarly(t *testing.T, key string, ttl, after time.Duration) {
	t.Helper()
	if after < ttl-r.g() {
		t.Errorf("lease expiry: a new holder got the lease on %q %v after it was taken for %v without Unlock; the lease must hold for its whole TTL (within the granularity %v)",
			key, after.Round(time.Millisecond), ttl, r.g())
	}
}

// ---- Item ----

func testRoundTrip(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	want := store.Item{Value: tokenValue("round-trip"), ExpiresAt: time.Now().Add(2*time.Hour + 123456789)}
	mustSet(t, s, keyToken, want)
	for name, h := range map[string]store.Store{"the same handle": s, "the peer": peer} {
		got := mustGet(t, h, keyToken)
		if !sameItem(got, want) {
			t.Errorf("round trip: Get on %s returned %s after Set(%s); want the same value and ExpiresAt to the millisecond",
				name, show(got), show(want))
		}
		if !got.Fresh(time.Now(), 0) {
			t.Errorf("round trip: Get on %s returned %s, not fresh, for an item two hours from expiry", name, show(got))
		}
	}
}

func testNotFound(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	for _, key := range []string{keyToken, keyTicket} {
		for name, h := range map[string]store.Store{"the store": s, "the peer": peer} {
			got, err := h.Get(t.Context(), key)
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("ErrNotFound: Get(%q) on %s of an empty namespace: want ErrNotFound (errors.Is), got item %s, error %v",
					key, name, show(got), err)
			}
		}
	}
}

func testExpiry(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	g := r.g()
	ctx := t.Context()

	start := time.Now()
	short := store.Item{Value: tokenValue("short-lived"), ExpiresAt: start.Add(3 * g)}
	mustSet(t, s, keyToken, short)
	got, err := s.Get(ctx, keyToken)
	if elapsed := time.Since(start); elapsed < g {
		if err != nil || !sameItem(got, short) {
			t.Errorf("expiry: Get %v after Set of an item that expires in %v: want it back, got %s, error %v",
				elapsed.Round(time.Millisecond), 3*g, show(got), err)
		}
	} else {
		t.Logf("storetest: Set+Get took %v, too slow to check that an item is kept until it expires", elapsed)
	}

	// An item that expired before it was set is accepted and never fresh.
	past := store.Item{Value: tokenValue("already-expired"), ExpiresAt: start.Add(-time.Minute)}
	if err := s.Set(ctx, keyTicket, past); err != nil {
		t.Errorf("expiry: Set of an item that has already expired: want nil (expired items may be dropped), got %v", err)
	}

	time.Sleep(time.Until(short.ExpiresAt.Add(g)))
	for _, key := range []string{keyToken, keyTicket} {
		for name, h := range map[string]store.Store{"the store": s, "the peer": peer} {
			got, err := h.Get(ctx, key)
			switch {
			case err == nil && got.Fresh(time.Now(), 0):
				t.Errorf("expiry: Get(%q) on %s returned %s as fresh after its ExpiresAt passed; want ErrNotFound or an item that is not Fresh",
					key, name, show(got))
			case err != nil && !errors.Is(err, store.ErrNotFound):
				t.Errorf("expiry: Get(%q) on %s of an expired item: want ErrNotFound or the stale item, got error %v", key, name, err)
			}
		}
	}

	// An expired item does not stand in the way of the next one.
	next := store.Item{Value: tokenValue("after-expiry"), ExpiresAt: time.Now().Add(time.Hour)}
	mustSet(t, peer, keyToken, next)
	if got := mustGet(t, s, keyToken); !sameItem(got, next) {
		t.Errorf("expiry: after the old item expired, Set(%s) then Get returned %s", show(next), show(got))
	}
}

func testKeys(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	keys := []string{keyToken, keyTicket, keyCard, keyOther, keyBare}
	base := time.Now().Add(time.Hour)
	items := make(map[string]store.Item, len(keys))
	for i, key := range keys {
		items[key] = store.Item{Value: tokenValue(fmt.Sprintf("key-%d", i)), ExpiresAt: base.Add(time.Duration(i) * time.Minute)}
		mustSet(t, handle(i, s, peer), key, items[key])
	}
	for i, key := range keys {
		if got := mustGet(t, handle(i+1, s, peer), key); !sameItem(got, items[key]) {
			t.Errorf("independent keys: Get(%q) returned %s; want %s, the item set under that key", key, show(got), show(items[key]))
		}
	}
}

func testLeaseBesideItem(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ctx := t.Context()
	long := r.long()

	// A lease alone is not an item.
	l := mustLock(t, s, keyTicket, long, "on a free key")
	if got, err := peer.Get(ctx, keyTicket); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lease beside item: Get(%q) of a key that has only a lease: want ErrNotFound, got %s, error %v", keyTicket, show(got), err)
	}
	mustUnlock(t, l, "of a live lease")

	// A lease does not disturb the item, nor the item the lease.
	item := store.Item{Value: tokenValue("beside"), ExpiresAt: time.Now().Add(time.Hour)}
	mustSet(t, s, keyToken, item)
	l = mustLock(t, s, keyToken, long, "on a key that holds an item")
	if got := mustGet(t, peer, keyToken); !sameItem(got, item) {
		t.Errorf("lease beside item: Lock(%q) changed the item: Get returned %s; want %s", keyToken, show(got), show(item))
	}
	newer := store.Item{Value: tokenValue("beside-newer"), ExpiresAt: item.ExpiresAt.Add(time.Hour)}
	mustSet(t, peer, keyToken, newer)
	r.wantLocked(t, peer, keyToken, "lease beside item: a Set under the leased key must not release the lease")
	mustUnlock(t, l, "of a live lease")
	if got := mustGet(t, s, keyToken); !sameItem(got, newer) {
		t.Errorf("lease beside item: Unlock(%q) changed the item: Get returned %s; want %s", keyToken, show(got), show(newer))
	}
}

// ---- NewerWins ----

func testOlderNeverReplacesNewer(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	now := time.Now()
	older := store.Item{Value: tokenValue("older"), ExpiresAt: now.Add(time.Hour)}
	newer := store.Item{Value: tokenValue("newer"), ExpiresAt: now.Add(2 * time.Hour)}
	newest := store.Item{Value: tokenValue("newest"), ExpiresAt: now.Add(3 * time.Hour)}

	mustSet(t, s, keyToken, newer)
	mustSet(t, peer, keyToken, older) // a slow node, late with an older grant
	for name, h := range map[string]store.Store{"the store": s, "the peer": peer} {
		if got := mustGet(t, h, keyToken); !sameItem(got, newer) {
			t.Errorf("newer-wins Set: after Set(newer %s) then Set(older %s), Get on %s returned %s; an older item must never replace a newer one",
				show(newer), show(older), name, show(got))
		}
	}
	mustSet(t, peer, keyToken, newest)
	if got := mustGet(t, s, keyToken); !sameItem(got, newest) {
		t.Errorf("newer-wins Set: Set(%s) over %s left %s; the item that expires later must replace the stored one",
			show(newest), show(newer), show(got))
	}
}

func testNewerWinsConcurrent(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	const (
		rounds    = 10
		setters   = 16
		perSetter = 3
	)
	for round := range rounds {
		key := fmt.Sprintf("{wx%014d}:access_token", round)
		base := time.Now().Add(time.Hour)
		// Distinct expiries, handed out in random order.
		order := rand.Perm(setters * perSetter)
		items := make([]store.Item, len(order))
		want := 0
		for i, o := range order {
			items[i] = store.Item{
				Value:     fmt.Sprintf("round-%d-item-%d", round, i),
				ExpiresAt: base.Add(time.Duration(o)*time.Second + time.Duration(rand.IntN(1000))*time.Millisecond),
			}
			if items[i].Newer(items[want]) {
				want = i
			}
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make(chan error, len(items))
		)
		for w := range setters {
			h := handle(w, s, peer)
			wg.Go(func() {
				<-start
				for j := range perSetter {
					it := items[w*perSetter+j]
					if err := h.Set(t.Context(), key, it); err != nil {
						errs <- fmt.Errorf("Set(%s): %w", show(it), err)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("newer-wins Set under contention: a Set that loses must not be an error: %v", err)
		}
		if got := mustGet(t, s, key); !sameItem(got, items[want]) {
			t.Fatalf("newer-wins Set under contention (round %d): %d goroutines set %d items with random expiries; Get returned %s, want the one that expires last, %s",
				round, setters, len(items), show(got), show(items[want]))
		}
	}
}

// ---- Lease ----

func testOneOf64(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	const n = 64
	type holder struct {
		lease  store.Lease
		handle int
	}
	var (
		wg         sync.WaitGroup
		start      = make(chan struct{})
		mu         sync.Mutex
		winners    []holder
		locked     int
		unexpected []error
	)
	for i := range n {
		h := handle(i, s, peer)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), r.prompt())
			defer cancel()
			<-start
			l, err := h.Lock(ctx, keyToken, r.long())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && l == nil:
				unexpected = append(unexpected, errors.New("a nil Lease with a nil error"))
			case err == nil:
				winners = append(winners, holder{l, i})
			case errors.Is(err, store.ErrLocked):
				locked++
			case ctx.Err() != nil:
				unexpected = append(unexpected, fmt.Errorf("%w (Lock must return ErrLocked at once, not wait for the lease)", err))
			default:
				unexpected = append(unexpected, err)
			}
		})
	}
	close(start)
	wg.Wait()

	for _, err := range unexpected[:min(len(unexpected), 5)] {
		t.Errorf("lease: a contender's Lock: want a lease or ErrLocked (errors.Is), got %v", err)
	}
	if len(winners) != 1 {
		t.Errorf("lease: exactly one of %d concurrent contenders must get the lease (split across %s); %d did, %d got ErrLocked",
			n, map[bool]string{true: "two handles", false: "one handle"}[r.hasPeer()], len(winners), locked)
		for _, w := range winners {
			_ = w.lease.Unlock(t.Context())
		}
		return
	}
	if locked != n-1 {
		t.Errorf("lease: the %d contenders that did not get the lease must get ErrLocked; %d did", n-1, locked)
	}
	w := winners[0]
	r.wantLocked(t, handle(w.handle, s, peer), keyToken, "lease: while held, even the holder's own handle")
	mustUnlock(t, w.lease, "by the holder")
	other := handle(w.handle+1, s, peer)
	l := mustLock(t, other, keyToken, r.long(), "right after the holder's Unlock")
	mustUnlock(t, l, "by the holder")
}

func testExpiresAfterTTL(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ttl := 2 * r.g()
	start := time.Now()
	_ = mustLock(t, s, keyToken, ttl, "on a free key") // never unlocked: its holder "crashed"

	l, err := peer.Lock(t.Context(), keyToken, r.long())
	elapsed := time.Since(start)
	switch {
	case err == nil && elapsed < ttl-r.g():
		t.Fatalf("lease expiry: a second Lock(%q) got the lease %v after the first, whose TTL is %v; want ErrLocked: the lease must hold for its whole TTL",
			keyToken, elapsed.Round(time.Millisecond), ttl)
	case err == nil:
		t.Logf("storetest: Lock took %v, too slow to check that a %v lease is held", elapsed, ttl)
		_ = l.Unlock(t.Context())
	case !errors.Is(err, store.ErrLocked):
		t.Fatalf("lease: Lock(%q) of a held key: want ErrLocked (errors.Is), got %v", keyToken, err)
	}

	l, after := r.acquire(t, peer, keyToken, r.long(), start, start.Add(ttl))
	r.checkNotEarly(t, keyToken, ttl, after)
	r.wantLocked(t, s, keyToken, "lease: the holder that took over an expired lease must hold it")
	mustUnlock(t, l, "by the new holder")
}

func testStaleUnlockAfterTakeover(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ttl := 2 * r.g()
	start := time.Now()
	stale := mustLock(t, s, keyToken, ttl, "on a free key")
	fresh, after := r.acquire(t, peer, keyToken, r.long(), start, start.Add(ttl))
	r.checkNotEarly(t, keyToken, ttl, after)

	if err := stale.Unlock(t.Context()); err != nil {
		t.Errorf("lease: Unlock by a holder whose lease expired and was taken over: want nil (nothing of ours to release), got %v", err)
	}
	r.wantLocked(t, s, keyToken, "lease: Unlock by a stale holder must not release the new holder's lease")
	mustUnlock(t, fresh, "by the new holder")
	l := mustLock(t, s, keyToken, r.long(), "after the new holder's Unlock")
	mustUnlock(t, l, "by the holder")
}

func testUnlockIdempotent(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	long := r.long()
	first := mustLock(t, s, keyToken, long, "on a free key")
	mustUnlock(t, first, "of a live lease")
	if err := first.Unlock(t.Context()); err != nil {
		t.Errorf("lease: a second Unlock of the same lease: want nil (Unlock is idempotent), got %v", err)
	}
	second := mustLock(t, peer, keyToken, long, "after the holder's Unlock")
	if err := first.Unlock(t.Context()); err != nil {
		t.Errorf("lease: a third Unlock of a released lease, with someone else now holding the key: want nil, got %v", err)
	}
	r.wantLocked(t, s, keyToken, "lease: an old holder's repeated Unlock must not release the next holder's lease")
	mustUnlock(t, second, "by the holder")
}

func testLeaseIndependentKeys(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	long := r.long()
	keys := []string{keyToken, keyTicket, keyOther, keyBare}
	leases := make([]store.Lease, len(keys))
	for i, key := range keys {
		leases[i] = mustLock(t, handle(i, s, peer), key, long, "on a key whose only neighbours are leased")
	}
	for i, key := range keys {
		r.wantLocked(t, handle(i+1, s, peer), key, "lease: independent keys")
	}
	mustUnlock(t, leases[0], "by the holder")
	for i, key := range keys[1:] {
		r.wantLocked(t, handle(i, s, peer), key, "lease: Unlock of one key must not release another")
	}
	for _, l := range leases[1:] {
		mustUnlock(t, l, "by the holder")
	}
}

func testExtendKeepsHeld(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	g := r.g()
	ttl := 3 * g
	// A loaded machine may spend most of the short lease between Lock and
	// Extend; then the lease may really have expired, and the check is
	// tried again on a fresh lease rather than skipped.
	const tries = 5
	var (
		start time.Time
		l     store.Lease
		ext   store.Extender
	)
	for try := 1; ; try++ {
		start = time.Now()
		l = mustLock(t, s, keyToken, ttl, "on a free key")
		var ok bool
		if ext, ok = l.(store.Extender); !ok {
			_ = l.Unlock(t.Context())
			t.Skipf("storetest: the Lease (%T) does not implement store.Extender", l)
		}
		err := ext.Extend(t.Context(), r.long())
		if err == nil {
			break
		}
		elapsed := time.Since(start)
		if elapsed < ttl-g {
			t.Fatalf("extend: Extend of a live lease: want nil, got %v", err)
		}
		if try == tries {
			t.Fatalf("extend: Lock+Extend took %v of a %v lease in each of %d tries; cannot check Extend on this machine: %v", elapsed, ttl, tries, err)
		}
		_ = l.Unlock(t.Context())
		time.Sleep(time.Until(start.Add(ttl + g)))
	}
	time.Sleep(time.Until(start.Add(ttl + g)))
	r.wantLocked(t, peer, keyToken, fmt.Sprintf("extend: Extend must keep the lease held past its original TTL of %v", ttl))
	if err := ext.Extend(t.Context(), r.long()); err != nil {
		t.Errorf("extend: a second Extend of a live, extended lease: want nil, got %v", err)
	}
	mustUnlock(t, l, "of an extended lease")
	l = mustLock(t, peer, keyToken, r.long(), "after Unlock of an extended lease")
	mustUnlock(t, l, "by the holder")
}

func testExtendAfterTakeover(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	ttl := 2 * r.g()
	start := time.Now()
	stale := mustLock(t, s, keyToken, ttl, "on a free key")
	ext, ok := stale.(store.Extender)
	if !ok {
		_ = stale.Unlock(t.Context())
		t.Skipf("storetest: the Lease (%T) does not implement store.Extender", stale)
	}
	fresh, after := r.acquire(t, peer, keyToken, r.long(), start, start.Add(ttl))
	r.checkNotEarly(t, keyToken, ttl, after)
	if err := ext.Extend(t.Context(), r.long()); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("extend: Extend of a lease that expired and was taken over: want ErrLeaseLost (errors.Is), got %v", err)
	}
	r.wantLocked(t, s, keyToken, "extend: a stale holder's Extend must not take or release the new holder's lease")
	mustUnlock(t, fresh, "by the new holder")

	// A lease released by its holder is lost too.
	l := mustLock(t, s, keyTicket, r.long(), "on a free key")
	mustUnlock(t, l, "of a live lease")
	if ext, ok := l.(store.Extender); !ok {
		t.Errorf("extend: one Lease from this store implements store.Extender, another (%T) does not", l)
	} else if err := ext.Extend(t.Context(), r.long()); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("extend: Extend after Unlock: want ErrLeaseLost (errors.Is), got %v", err)
	}
	l = mustLock(t, peer, keyTicket, r.long(), "after Unlock and a failed Extend")
	mustUnlock(t, l, "by the holder")
}

// ---- Watch ----

func testWatchWakes(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	w, ok := s.(store.Watcher)
	if !ok {
		t.Skipf("storetest: the Store (%T) does not implement store.Watcher", s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := w.Watch(ctx, keyToken)
	if err != nil {
		t.Fatalf("watch: Watch(%q): %v", keyToken, err)
	}
	if ch == nil {
		t.Fatalf("watch: Watch(%q) returned a nil channel and a nil error", keyToken)
	}
	setters := []struct {
		name string
		h    store.Store
	}{{"the peer", peer}, {"the watching store", s}}
	if !r.hasPeer() {
		setters[0].name = "the store"
	}
	base := time.Now().Add(time.Hour)
	for i, setter := range setters {
		item := store.Item{Value: tokenValue("watched"), ExpiresAt: base.Add(time.Duration(i) * time.Minute)}
		mustSet(t, setter.h, keyToken, item)
		timer := time.NewTimer(r.prompt())
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatal("watch: the channel was closed while ctx was still live")
			}
		case <-timer.C:
			t.Fatalf("watch: Set on %s (set #%d) did not wake a watcher within %v; a watcher must be told each time an item is set, by this process or another",
				setter.name, i+1, r.prompt())
		}
		timer.Stop()
	}
}

func testWatchCancel(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	w, ok := s.(store.Watcher)
	if !ok {
		t.Skipf("storetest: the Store (%T) does not implement store.Watcher", s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := w.Watch(ctx, keyToken)
	if err != nil {
		t.Fatalf("watch: Watch(%q): %v", keyToken, err)
	}
	mustSet(t, peer, keyToken, store.Item{Value: tokenValue("before-cancel"), ExpiresAt: time.Now().Add(time.Hour)})
	cancel()
	timer := time.NewTimer(r.prompt())
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("watch: the channel was not closed within %v of its ctx being cancelled; the watch must end with its ctx", r.prompt())
		}
	}
}

// ---- Context ----

func testContextDone(t *testing.T, r *runner) {
	s, _ := r.stores(t)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	item := store.Item{Value: tokenValue("ctx"), ExpiresAt: time.Now().Add(time.Hour)}
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelled, context.Canceled}, {"past-deadline", expired, context.DeadlineExceeded}} {
		var err error
		within(t, r.prompt(), "Get with a "+c.name+" ctx", func() { _, err = s.Get(c.ctx, keyToken) })
		if !errors.Is(err, c.want) {
			t.Errorf("context: Get with a %s ctx: want an error matching %v, got %v", c.name, c.want, err)
		}
		within(t, r.prompt(), "Set with a "+c.name+" ctx", func() { err = s.Set(c.ctx, keyToken, item) })
		if !errors.Is(err, c.want) {
			t.Errorf("context: Set with a %s ctx: want an error matching %v, got %v", c.name, c.want, err)
		}
		var l store.Lease
		within(t, r.prompt(), "Lock with a "+c.name+" ctx", func() { l, err = s.Lock(c.ctx, keyToken, r.long()) })
		if !errors.Is(err, c.want) {
			t.Errorf("context: Lock with a %s ctx: want an error matching %v, got %v", c.name, c.want, err)
		}
		if err == nil && l != nil {
			_ = l.Unlock(t.Context())
		}
		if w, ok := s.(store.Watcher); ok {
			var ch <-chan struct{}
			within(t, r.prompt(), "Watch with a "+c.name+" ctx", func() { ch, err = w.Watch(c.ctx, keyToken) })
			switch {
			case err != nil && !errors.Is(err, c.want):
				t.Errorf("context: Watch with a %s ctx: want an error matching %v or a closed channel, got %v", c.name, c.want, err)
			case err == nil && ch == nil:
				t.Errorf("context: Watch with a %s ctx returned a nil channel and a nil error", c.name)
			case err == nil:
				within(t, r.prompt(), "closing the channel of a Watch with a "+c.name+" ctx", func() {
					for range ch {
					}
				})
			}
		}
	}
	// A Lock that failed on its ctx left no lease behind.
	l := mustLock(t, s, keyToken, r.long(), "after Locks that failed on a done ctx (they must leave no lease behind)")
	mustUnlock(t, l, "by the holder")
}

// ---- Concurrency ----

func testMixed(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	const (
		workers = 16
		ops     = 48
	)
	keys := []string{keyToken, keyTicket, keyOther}
	seed := rand.Uint64()
	t.Logf("storetest: seed %d", seed)
	base := time.Now().Add(time.Hour)

	var (
		wg       sync.WaitGroup
		seq      atomic.Int64
		holders  [3]atomic.Int32
		acquired atomic.Int64
		mu       sync.Mutex
		best     = map[string]store.Item{}
		problems []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for w := range workers {
		h := handle(w, s, peer)
		wg.Go(func() {
			ctx := t.Context()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range ops {
				k := rng.IntN(len(keys))
				key := keys[k]
				switch rng.IntN(3) {
				case 0:
					if _, err := h.Get(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
						report("Get(%q): want an item or ErrNotFound, got %v", key, err)
					}
				case 1:
					n := seq.Add(1) // distinct expiries: n is below 1000
					it := store.Item{
						Value:     fmt.Sprintf("mixed-%d", n),
						ExpiresAt: base.Add(time.Duration(rng.IntN(1000))*time.Second + time.Duration(n)*time.Millisecond),
					}
					if err := h.Set(ctx, key, it); err != nil {
						report("Set(%q, %s): want nil, got %v", key, show(it), err)
						continue
					}
					mu.Lock()
					if it.Newer(best[key]) {
						best[key] = it
					}
					mu.Unlock()
				case 2:
					l, err := h.Lock(ctx, key, r.long())
					if err != nil {
						if !errors.Is(err, store.ErrLocked) {
							report("Lock(%q): want a lease or ErrLocked, got %v", key, err)
						}
						continue
					}
					acquired.Add(1)
					if n := holders[k].Add(1); n != 1 {
						report("lease: %d holders of %q at once", n, key)
					}
					if ext, ok := l.(store.Extender); ok && rng.IntN(2) == 0 {
						if err := ext.Extend(ctx, r.long()); err != nil {
							report("Extend of a live lease on %q: want nil, got %v", key, err)
						}
					}
					if _, err := h.Get(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
						report("Get(%q) under a lease: want an item or ErrNotFound, got %v", key, err)
					}
					holders[k].Add(-1)
					if err := l.Unlock(ctx); err != nil {
						report("Unlock of a live lease on %q: want nil, got %v", key, err)
					}
				}
			}
		})
	}
	wg.Wait()
	for _, p := range problems {
		t.Errorf("concurrency: %s", p)
	}
	if acquired.Load() == 0 {
		t.Errorf("concurrency: no Lock out of %d workers got a lease, though every holder unlocked", workers)
	}
	checked := 0
	for _, key := range keys {
		want, ok := best[key]
		if !ok {
			continue
		}
		checked++
		if got := mustGet(t, s, key); !sameItem(got, want) {
			t.Errorf("newer-wins Set amid Gets and Locks: Get(%q) returned %s; want the item that expires last, %s", key, show(got), show(want))
		}
	}
	if checked == 0 {
		t.Errorf("concurrency: no Set ran (seed %d); nothing was checked", seed)
	}
}

// ---- Broken ----

// secretValue is what the broken store is asked to Set; it must not appear
// in any error.
const secretValue = "S3CR3T-storetest-access-token-must-not-leak"

func testBroken(t *testing.T, r *runner) {
	if r.cfg.broken == nil {
		t.Skip("storetest: no WithBroken option; that outages are errors and not misses is not checked")
	}
	b := r.cfg.broken(t)
	if b == nil {
		t.Fatal("storetest: the WithBroken func returned a nil Store")
	}
	ctx, cancel := context.WithTimeout(t.Context(), r.prompt())
	defer cancel()
	check := func(op string, err error) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("outage: %s on a broken store returned nil; want an error", op)
		case errors.Is(err, store.ErrNotFound):
			t.Errorf("outage: %s on a broken store returned ErrNotFound (%v); an outage must be an error, not a miss", op, err)
		case errors.Is(err, store.ErrLocked):
			t.Errorf("outage: %s on a broken store returned ErrLocked (%v); an outage must be an error, not a held lease", op, err)
		case strings.Contains(err.Error(), secretValue):
			t.Errorf("secrets: %s on a broken store returned an error that reveals the item's value: %v", op, err)
		}
	}
	var err error
	within(t, 3*r.prompt(), "Get on a broken store", func() { _, err = b.Get(ctx, keyToken) })
	check("Get", err)
	within(t, 3*r.prompt(), "Set on a broken store", func() {
		err = b.Set(ctx, keyToken, store.Item{Value: secretValue, ExpiresAt: time.Now().Add(time.Hour)})
	})
	check("Set", err)
	var l store.Lease
	within(t, 3*r.prompt(), "Lock on a broken store", func() { l, err = b.Lock(ctx, keyToken, r.long()) })
	check("Lock", err)
	if err == nil && l != nil {
		_ = l.Unlock(ctx)
	}
	if w, ok := b.(store.Watcher); ok {
		var ch <-chan struct{}
		within(t, 3*r.prompt(), "Watch on a broken store", func() { ch, err = w.Watch(ctx, keyToken) })
		check("Watch", err)
		if err == nil && ch != nil {
			cancel()
		}
	}
}
