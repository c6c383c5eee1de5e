// Package storetest checks that a store.Store keeps the contract written in
// package store, the way testing/fstest.TestFS checks an fs.FS: one call
// proves a backend, ours or a user's.
//
//	storetest.Run(t, func(t *testing.T) store.Store { return newStoreOnFreshPrefix(t) })
//
// Run's subtests are grouped (Item, NewerWins, Lease, Watch, Context,
// Concurrency, Broken, BadData, Shape), one file per group (items.go,
// newerwins.go, leases.go, watch.go, context.go, concurrency.go, broken.go,
// baddata.go, shape.go), so that a store author finds a failing case by its
// name; inside a group they run in parallel, each on a store of its own from
// newStore. A failure message starts with the contract rule that was broken.
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
	"fmt"
	"strings"
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
	{"Shape", shapeCases},
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
