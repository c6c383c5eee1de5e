package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// mapFuncs is a user's own storage behind a GetFunc and a SetFunc: a map, the
// way a Python app kept its token in a dict or a cache.
type mapFuncs struct {
	mu    sync.Mutex
	items map[string]store.Item
	raw   map[string][]byte // records get cannot decode, planted by tests
	gets  int
	sets  int

	getErr error // returned by get when set
	setErr error // returned by set when set
}

func newMapFuncs() *mapFuncs { return &mapFuncs{items: map[string]store.Item{}} }

func (m *mapFuncs) get(_ context.Context, key string) (store.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	if m.getErr != nil {
		return store.Item{}, m.getErr
	}
	if raw, ok := m.raw[key]; ok {
		// What a user's get should do with bytes that are not an item.
		return store.Item{}, fmt.Errorf("%w: %d bytes that are not an item", store.ErrMalformed, len(raw))
	}
	it, ok := m.items[key]
	if !ok {
		return store.Item{}, store.ErrNotFound
	}
	return it, nil
}

// set writes unconditionally, as most users' functions do: the adapter keeps
// newer-wins within a process.
func (m *mapFuncs) set(_ context.Context, key string, item store.Item) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sets++
	if m.setErr != nil {
		return m.setErr
	}
	delete(m.raw, key)
	m.items[key] = item
	return nil
}

// plant puts raw under key in place of an item, as another program might.
func (m *mapFuncs) plant(key string, raw []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.raw == nil {
		m.raw = map[string][]byte{}
	}
	delete(m.items, key)
	m.raw[key] = raw
}

func (m *mapFuncs) store() store.Store { return store.FromFuncs(m.get, m.set) }

func (m *mapFuncs) counts() (gets, sets int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets, m.sets
}

// TestFuncsConformance runs the suite on the adapter.
//
// It runs without WithPeer on purpose: a peer would be a second FromFuncs
// value over the same map, and the adapter's lease lives inside one value, so
// two contenders on two values would both get it (TestFuncsLeaseIsPerValue
// shows this). That is the documented limit of the adapter, not a bug to
// hide.
//
// It runs without WithBroken too: the lease never calls the user's functions,
// so Lock succeeds while they are down, and the Broken subtest demands an
// error from every operation. TestFuncsOutage checks Get and Set instead.
//
// Its raw writer plants records that the map's get reports as
// store.ErrMalformed, the way the adapter asks users' functions to.
func TestFuncsConformance(t *testing.T) {
	var maps sync.Map // store.Store -> *mapFuncs
	storetest.Run(t, func(*testing.T) store.Store {
		m := newMapFuncs()
		s := m.store()
		maps.Store(s, m)
		return s
	}, storetest.WithRawWriter(func(t *testing.T, s store.Store, key string, raw []byte) {
		m, ok := maps.Load(s)
		if !ok {
			t.Fatal("raw writer: a store that newStore did not make")
		}
		m.(*mapFuncs).plant(key, raw)
	}))
}

// TestFuncsImplausibleReplaced: a stored item that WeChat cannot have
// granted (no value, or an expiry beyond MaxLifetime+ClockSlack, as a
// poisoned cache holds) does not win newer-wins: Set writes over it.
func TestFuncsImplausibleReplaced(t *testing.T) {
	for _, bad := range []store.Item{
		{Value: "POISON", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Value: "", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Value: "POISON", ExpiresAt: time.Now().Add(store.MaxLifetime + store.ClockSlack + time.Minute)},
	} {
		m := newMapFuncs()
		m.items["k"] = bad // written behind the adapter's back
		good := store.Item{Value: "good", ExpiresAt: time.Now().Add(2 * time.Hour)}
		if err := m.store().Set(t.Context(), "k", good); err != nil {
			t.Fatalf("Set over %v: %v", bad, err)
		}
		if got := m.items["k"]; got != good {
			t.Errorf("Set over the implausible %v left %v; want %v", bad, got, good)
		}
	}
}

// TestFuncsMalformedHeals: a get that reports store.ErrMalformed makes Get
// fail with an error matching it (not a miss), and Set overwrite the record.
func TestFuncsMalformedHeals(t *testing.T) {
	m := newMapFuncs()
	s := m.store()
	m.plant("k", []byte("\xff garbage"))
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrMalformed) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a record get cannot decode: %v, want an error matching store.ErrMalformed", err)
	}
	good := store.Item{Value: "good", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(t.Context(), "k", good); err != nil {
		t.Fatalf("Set over a malformed record: %v, want nil (it must heal)", err)
	}
	if got, err := s.Get(t.Context(), "k"); err != nil || got != good {
		t.Fatalf("Get after Set over a malformed record = %v, %v; want %v", got, err, good)
	}
}

// TestFuncsOutage checks that the user's errors are outages, not misses, and
// that no error reveals the value being set.
func TestFuncsOutage(t *testing.T) {
	const secret = "S3CR3T-token"
	m := newMapFuncs()
	m.getErr = errors.New("redis: connection refused")
	s := m.store()
	_, getErr := s.Get(t.Context(), "k")
	setErr := s.Set(t.Context(), "k", store.Item{Value: secret, ExpiresAt: time.Now().Add(time.Hour)})
	for op, err := range map[string]error{"Get": getErr, "Set": setErr} {
		switch {
		case err == nil:
			t.Errorf("%s while the funcs fail: want an error, got nil", op)
		case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrLocked):
			t.Errorf("%s while the funcs fail: want an outage, got %v", op, err)
		case !errors.Is(err, m.getErr):
			t.Errorf("%s while the funcs fail: want the func's error wrapped, got %v", op, err)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%s error reveals the value: %v", op, err)
		}
	}
}

func TestFuncsLeaseIsPerValue(t *testing.T) {
	m := newMapFuncs()
	a, b := m.store(), m.store()
	ctx := t.Context()
	la, err := a.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("Lock on the first adapter: %v", err)
	}
	if _, err := a.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Errorf("a second Lock on the same adapter value: want ErrLocked, got %v", err)
	}
	lb, err := b.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("Lock on a second adapter over the same funcs: want a lease (leases are per value, as documented), got %v", err)
	}
	_ = la.Unlock(ctx)
	_ = lb.Unlock(ctx)
}

func TestFuncsGet(t *testing.T) {
	future := time.Now().Add(time.Hour)
	boom := errors.New("boom")
	tests := []struct {
		name    string
		item    store.Item
		err     error
		want    store.Item
		wantErr error // matched with errors.Is
	}{
		{"found", store.Item{Value: "tok", ExpiresAt: future}, nil, store.Item{Value: "tok", ExpiresAt: future}, nil},
		{"func reports ErrNotFound", store.Item{}, store.ErrNotFound, store.Item{}, store.ErrNotFound},
		{"func wraps ErrNotFound", store.Item{}, fmt.Errorf("cache miss: %w", store.ErrNotFound), store.Item{}, store.ErrNotFound},
		{"zero item", store.Item{}, nil, store.Item{}, store.ErrNotFound},
		{"item without value", store.Item{ExpiresAt: future}, nil, store.Item{}, store.ErrNotFound},
		{"expired item", store.Item{Value: "old", ExpiresAt: time.Now().Add(-time.Second)}, nil, store.Item{}, store.ErrNotFound},
		{"outage", store.Item{}, boom, store.Item{}, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := store.FromFuncs(func(context.Context, string) (store.Item, error) { return tt.item, tt.err }, nil)
			got, err := s.Get(t.Context(), "k")
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Get: got error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Get: got %v, want %v", got, tt.want)
			}
			if tt.wantErr == boom {
				if errors.Is(err, store.ErrNotFound) {
					t.Error("an outage must not match ErrNotFound")
				}
				if want := `store: get "k": boom`; err.Error() != want {
					t.Errorf("error text: got %q, want %q", err.Error(), want)
				}
			}
		})
	}
}

func TestFuncsSet(t *testing.T) {
	ctx := t.Context()
	now := time.Now()
	older := store.Item{Value: "older", ExpiresAt: now.Add(time.Hour)}
	newer := store.Item{Value: "newer", ExpiresAt: now.Add(2 * time.Hour)}

	m := newMapFuncs()
	s := m.store()
	if err := s.Set(ctx, "k", older); err != nil {
		t.Fatalf("Set into an empty place: %v", err)
	}
	if err := s.Set(ctx, "k", newer); err != nil {
		t.Fatalf("Set of a newer item: %v", err)
	}
	_, sets := m.counts()
	if err := s.Set(ctx, "k", older); err != nil {
		t.Fatalf("Set of an older item: want nil (losing is not an error), got %v", err)
	}
	if _, after := m.counts(); after != sets {
		t.Errorf("Set of an older item called the SetFunc (%d calls, want %d): newer wins", after, sets)
	}
	if got, err := s.Get(ctx, "k"); err != nil || got != newer {
		t.Errorf("Get after newer then older: got %v, %v; want %v", got, err, newer)
	}
}

func TestFuncsSetFailsWhenGetFails(t *testing.T) {
	m := newMapFuncs()
	m.getErr = errors.New("cache unreachable")
	err := m.store().Set(t.Context(), "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)})
	if !errors.Is(err, m.getErr) {
		t.Fatalf("Set when the GetFunc fails: want its error, got %v", err)
	}
	if _, sets := m.counts(); sets != 0 {
		t.Errorf("Set called the SetFunc %d times without knowing the stored item; want 0", sets)
	}
}

func TestFuncsSetError(t *testing.T) {
	m := newMapFuncs()
	m.setErr = errors.New("disk full")
	err := m.store().Set(t.Context(), "k", store.Item{Value: "s3cr3t", ExpiresAt: time.Now().Add(time.Hour)})
	if !errors.Is(err, m.setErr) {
		t.Fatalf("Set when the SetFunc fails: want its error, got %v", err)
	}
	if want := `store: set "k": disk full`; err.Error() != want {
		t.Errorf("error text: got %q, want %q", err.Error(), want)
	}
}

func TestFuncsNil(t *testing.T) {
	ctx := t.Context()
	item := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	s := store.FromFuncs(nil, nil)
	if _, err := s.Get(ctx, "k"); err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "nil GetFunc") {
		t.Errorf("Get with a nil GetFunc: want an error naming it, got %v", err)
	}
	if err := s.Set(ctx, "k", item); err == nil || !strings.Contains(err.Error(), "nil SetFunc") {
		t.Errorf("Set with a nil SetFunc: want an error naming it, got %v", err)
	}
	m := newMapFuncs()
	s = store.FromFuncs(m.get, nil)
	if err := s.Set(ctx, "k", item); err == nil || !strings.Contains(err.Error(), "nil SetFunc") {
		t.Errorf("Set with a nil SetFunc: want an error naming it, got %v", err)
	}
	if gets, _ := m.counts(); gets != 0 {
		t.Errorf("Set with a nil SetFunc called the GetFunc %d times; want 0", gets)
	}
	// The lease does not need the funcs.
	l, err := store.FromFuncs(nil, nil).Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("Lock with nil funcs: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Errorf("Unlock: %v", err)
	}
}

func TestFuncsContext(t *testing.T) {
	m := newMapFuncs()
	s := m.store()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled ctx: want context.Canceled, got %v", err)
	}
	if err := s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Set with a cancelled ctx: want context.Canceled, got %v", err)
	}
	if _, err := s.Lock(ctx, "k", time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with a cancelled ctx: want context.Canceled, got %v", err)
	}
	if gets, sets := m.counts(); gets+sets != 0 {
		t.Errorf("the funcs were called %d times with a cancelled ctx; want 0", gets+sets)
	}
}

func TestFuncsBadItem(t *testing.T) {
	m := newMapFuncs()
	s := m.store()
	for _, it := range []store.Item{{}, {Value: "v"}, {ExpiresAt: time.Now().Add(time.Hour)}} {
		if err := s.Set(t.Context(), "k", it); err == nil {
			t.Errorf("Set(%v): want an error for an item that is no credential", it)
		}
	}
	if _, sets := m.counts(); sets != 0 {
		t.Errorf("the SetFunc was called %d times with bad items; want 0", sets)
	}
}

// TestFuncsSetsTakeTurns checks that Sets through one adapter do not overlap
// (so newer-wins holds in-process) and that a waiting Set gives up with its
// ctx.
func TestFuncsSetsTakeTurns(t *testing.T) {
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	var calls int
	var mu sync.Mutex
	s := store.FromFuncs(
		func(context.Context, string) (store.Item, error) { return store.Item{}, store.ErrNotFound },
		func(ctx context.Context, _ string, _ store.Item) error {
			mu.Lock()
			calls++
			mu.Unlock()
			entered <- struct{}{}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	it := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	first := make(chan error, 1)
	go func() { first <- s.Set(context.Background(), "k", it) }()
	<-entered

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := s.Set(ctx, "k", it); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a Set waiting behind another: want its ctx's error, got %v", err)
	}
	mu.Lock()
	n := calls
	mu.Unlock()
	if n != 1 {
		t.Errorf("the SetFunc ran %d times while the first Set was in it; want 1", n)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first Set: %v", err)
	}
}
