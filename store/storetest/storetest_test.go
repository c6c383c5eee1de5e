package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// faultEnv selects the fault that TestFaultyStoreHelper injects when the test
// binary runs itself.
const faultEnv = "STORETEST_FAULT"

// A faulty store is a store.Memory with one contract rule broken on purpose,
// to prove that storetest.Run notices.
type faulty struct {
	*store.Memory
	fault string

	mu     sync.Mutex
	items  map[string]store.Item  // "overwrite" keeps its items here
	latest map[string]store.Lease // "unlock-any": the newest lease per key
}

func newFaulty(fault string) *faulty {
	return &faulty{Memory: store.NewMemory(), fault: fault, items: map[string]store.Item{}, latest: map[string]store.Lease{}}
}

func (f *faulty) ctx(ctx context.Context) context.Context {
	if f.fault == "ignore-ctx" {
		return context.Background()
	}
	return ctx
}

func (f *faulty) Get(ctx context.Context, key string) (store.Item, error) {
	switch f.fault {
	case "overwrite", "keeps-poison":
		f.mu.Lock()
		defer f.mu.Unlock()
		it, ok := f.items[key]
		if !ok || !time.Now().Before(it.ExpiresAt) {
			return store.Item{}, store.ErrNotFound
		}
		return it, nil
	case "miss-is-nil":
		it, err := f.Memory.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return store.Item{}, nil
		}
		return it, err
	case "bare-not-found":
		it, err := f.Memory.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return store.Item{}, store.ErrNotFound
		}
		return it, err
	}
	return f.Memory.Get(f.ctx(ctx), key)
}

// Close closes the Memory, unless the fault is that Close forgets to.
func (f *faulty) Close() error {
	if f.fault == "close-forgets" {
		return nil
	}
	return f.Memory.Close()
}

func (f *faulty) Set(ctx context.Context, key string, item store.Item) error {
	switch f.fault {
	case "overwrite":
		f.mu.Lock()
		defer f.mu.Unlock()
		f.items[key] = item
		return nil
	case "keeps-poison": // newer-wins for every stored item, plausible or not
		f.mu.Lock()
		defer f.mu.Unlock()
		if cur, ok := f.items[key]; ok && cur.Newer(item) {
			return nil
		}
		f.items[key] = item
		return nil
	case "truncate-seconds":
		item.ExpiresAt = item.ExpiresAt.Truncate(time.Second)
	}
	return f.Memory.Set(f.ctx(ctx), key, item)
}

func (f *faulty) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	switch f.fault {
	case "lock-always":
		return nopLease{}, nil
	case "lease-short":
		ttl /= 1000
	case "never-expires":
		ttl *= 1000
	case "lock-waits":
		for {
			l, err := f.Memory.Lock(ctx, key, ttl)
			if !errors.Is(err, store.ErrLocked) {
				return l, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	l, err := f.Memory.Lock(f.ctx(ctx), key, ttl)
	if err != nil {
		return nil, err
	}
	switch f.fault {
	case "unlock-any":
		f.mu.Lock()
		f.latest[key] = l
		f.mu.Unlock()
		return &anyLease{f: f, key: key}, nil
	case "extend-noop":
		return noopExtend{l}, nil
	}
	return l, nil
}

func (f *faulty) Watch(ctx context.Context, key string) (<-chan struct{}, error) {
	switch f.fault {
	case "watch-silent":
		ch := make(chan struct{})
		context.AfterFunc(ctx, func() { close(ch) })
		return ch, nil
	case "watch-never-closes":
		return make(chan struct{}), nil
	}
	return f.Memory.Watch(ctx, key)
}

type nopLease struct{}

func (nopLease) Unlock(context.Context) error { return nil }

// anyLease releases whichever lease is newest on its key: the bug of an
// Unlock that deletes the lock record without comparing its owner.
type anyLease struct {
	f   *faulty
	key string
}

func (l *anyLease) Unlock(ctx context.Context) error {
	l.f.mu.Lock()
	cur := l.f.latest[l.key]
	l.f.mu.Unlock()
	return cur.Unlock(ctx)
}

// noopExtend claims to extend and does nothing.
type noopExtend struct{ store.Lease }

func (noopExtend) Extend(context.Context, time.Duration) error { return nil }

// outage is a store whose backend is gone.
type outage struct{ fault string }

var errDown = errors.New("connection refused")

func (o outage) err(op, key string, item store.Item) error {
	switch o.fault {
	case "outage-is-miss":
		return store.ErrNotFound
	case "leak-secret":
		return fmt.Errorf("outagestore: %s %q (value %s): %w", op, key, item.Value, errDown)
	}
	return &store.OpError{Backend: "outagestore", Op: op, Key: key, Err: errDown}
}

func (o outage) Get(_ context.Context, key string) (store.Item, error) {
	return store.Item{}, o.err("get", key, store.Item{})
}

func (o outage) Set(_ context.Context, key string, item store.Item) error {
	return o.err("set", key, item)
}

func (o outage) Lock(_ context.Context, key string, _ time.Duration) (store.Lease, error) {
	return nil, o.err("lock", key, store.Item{})
}

// TestFaultyStoreHelper is run by TestRunCatchesFaults in a child process;
// on its own it skips.
func TestFaultyStoreHelper(t *testing.T) {
	fault, ok := os.LookupEnv(faultEnv)
	if !ok {
		t.Skip("helper for TestRunCatchesFaults, run in a child process")
	}
	opts := []storetest.Option{
		storetest.WithGranularity(50 * time.Millisecond),
		storetest.WithBroken(func(*testing.T) store.Store { return outage{fault} }),
		storetest.WithPeer(func(_ *testing.T, s store.Store) store.Store {
			if fault == "peer-isolated" {
				return newFaulty("")
			}
			return s
		}),
	}
	if fault == "bad-option" {
		opts = append(opts, storetest.WithGranularity(0))
	}
	storetest.Run(t, func(*testing.T) store.Store { return newFaulty(fault) }, opts...)
}

// TestRunCatchesFaults proves that storetest.Run can fail: for each broken
// contract rule, a child process runs Run on a store with that fault and
// must fail with a message naming the rule; with no fault it must pass.
func TestRunCatchesFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite in child processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		fault string
		want  string // a fragment of the failure message; "" means Run must pass
		only  string // a -test.run filter below the helper, to keep slow faults short
	}{
		// The slow ones first: they wait out storetest's bounds.
		{"watch-never-closes", "the watch must end with its ctx", "/^Watch$/"},
		{"never-expires", "must block no one past its TTL", ""},
		{"lock-waits", "Lock must return ErrLocked at once", "/^Lease$/^OneOf64$"},
		{"watch-silent", "did not wake a watcher", ""},
		{"peer-isolated", "split across two handles", ""},
		{"overwrite", "newer-wins Set", ""},
		{"keeps-poison", "newer-wins protects only plausible items", "/^BadData$/"},
		{"", "", ""},
		{"truncate-seconds", "to the millisecond", ""},
		{"miss-is-nil", "ErrNotFound: Get", ""},
		{"bare-not-found", "want a *store.OpError wrapping", "/^Shape$/"},
		{"close-forgets", "close: after Close: get", "/^Shape$/"},
		{"lock-always", "exactly one of 64 concurrent contenders", ""},
		{"lease-short", "the lease must hold for its whole TTL", ""},
		{"unlock-any", "stale holder must not release", ""},
		{"extend-noop", "Extend must keep the lease held", ""},
		{"ignore-ctx", "context: Get with a cancelled ctx", ""},
		{"outage-is-miss", "an outage must be an error, not a miss", ""},
		{"leak-secret", "reveals the item's value", ""},
		{"bad-option", "WithGranularity(0s): the granularity must be positive", ""},
	}
	// The children mostly sleep; run eight at a time whatever -test.parallel says.
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, c := range cases {
		name := c.fault
		if name == "" {
			name = "no-fault"
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, exe, "-test.run=^TestFaultyStoreHelper$"+c.only, "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), faultEnv+"="+c.fault)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%s: storetest.Run failed on a correct store: %v\n%s", name, err, out)
			case c.want == "" && !strings.Contains(string(out), "--- PASS: TestFaultyStoreHelper/Lease/OneOf64"):
				t.Errorf("%s: the child did not run the suite:\n%s", name, out)
			case c.want != "" && err == nil:
				t.Errorf("%s: storetest.Run passed a store with this fault; it must fail\n%s", name, out)
			case c.want != "" && !errors.As(err, &exit):
				t.Errorf("%s: the child did not run: %v", name, err)
			case c.want != "" && !strings.Contains(string(out), c.want):
				t.Errorf("%s: storetest.Run failed, but without naming the broken rule (%q):\n%s", name, c.want, out)
			}
		})
	}
	wg.Wait()
}

// counting wraps a store and counts the calls made through it.
type counting struct {
	store.Store
	calls *atomic.Int64
}

func (c counting) Get(ctx context.Context, key string) (store.Item, error) {
	c.calls.Add(1)
	return c.Store.Get(ctx, key)
}

func (c counting) Set(ctx context.Context, key string, item store.Item) error {
	c.calls.Add(1)
	return c.Store.Set(ctx, key, item)
}

func (c counting) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	c.calls.Add(1)
	return c.Store.Lock(ctx, key, ttl)
}

// TestRunUsesPeerAndBroken checks that the options are not decoration: a
// store per subtest, and the peer handle and the broken store are called.
func TestRunUsesPeerAndBroken(t *testing.T) {
	var newCalls, peerCalls, brokenCalls atomic.Int64
	storetest.Run(t, func(*testing.T) store.Store {
		newCalls.Add(1)
		return store.NewMemory()
	},
		storetest.WithPeer(func(_ *testing.T, s store.Store) store.Store {
			return counting{Store: s, calls: &peerCalls}
		}),
		storetest.WithBroken(func(*testing.T) store.Store {
			return counting{Store: outage{}, calls: &brokenCalls}
		}),
	)
	if n := newCalls.Load(); n < 10 {
		t.Errorf("storetest.Run made %d stores; want a fresh one per subtest", n)
	}
	if peerCalls.Load() == 0 {
		t.Error("storetest.Run never used the WithPeer handle")
	}
	if n := brokenCalls.Load(); n != 3 {
		t.Errorf("storetest.Run made %d calls on the WithBroken store; want Get, Set and Lock", n)
	}
}
