package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Memory is a Store kept in one process's memory. Use it when a single
// process owns the credentials (a command-line tool, a one-node service that
// does not need them to survive a restart) and in tests, where it is fast and
// deterministic: it reads the clock through time.Now, so testing/synctest can
// fake the passing of time.
//
// Memory implements Store, Watcher, io.Closer, and Extender on its leases. It
// starts no goroutines of its own: expired items and leases are dropped
// lazily, when the key is next used. Every method returns ctx's error at
// once when ctx is already done, and every error is a *OpError naming the
// package "store".
//
// Nothing in a Memory is shared with other processes: two processes each with
// a Memory may both grant a credential. Use a networked backend for that.
//
// The zero value is an empty store ready to use; NewMemory is the usual way
// to get one. A Memory must not be copied after first use.
type Memory struct {
	mu       sync.Mutex
	items    map[string]Item
	watchers map[string]map[chan struct{}]struct{}
	closed   bool // guarded by mu

	leases leaseTable
}

var (
	_ Store   = (*Memory)(nil)
	_ Watcher = (*Memory)(nil)
)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return new(Memory) }

// memErr describes a failed operation on the in-memory store or the funcs
// adapter, both of which live in package store.
func memErr(op, key string, err error) error {
	return &OpError{Backend: "store", Op: op, Key: key, Err: err}
}

// checkItem rejects items that no credential could be: they are a caller's
// bug, and storing them would hide it.
func checkItem(item Item) error {
	switch {
	case item.Value == "":
		return errors.New("item has an empty Value")
	case item.ExpiresAt.IsZero():
		return errors.New("item has a zero ExpiresAt")
	}
	return nil
}

// Get returns the item under key, or ErrNotFound when there is none or it has
// expired (an expired item is dropped then).
func (m *Memory) Get(ctx context.Context, key string) (Item, error) {
	if err := ctx.Err(); err != nil {
		return Item{}, memErr("get", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Item{}, memErr("get", key, ErrClosed)
	}
	item, ok := m.items[key]
	if !ok {
		return Item{}, memErr("get", key, ErrNotFound)
	}
	if !time.Now().Before(item.ExpiresAt) {
		delete(m.items, key)
		return Item{}, memErr("get", key, ErrNotFound)
	}
	return item, nil
}

// Set stores item under key unless the stored item expires later, and then
// wakes the key's watchers. An item that loses is dropped without error. An
// item with an empty Value or a zero ExpiresAt is refused with an error.
//
// Newer-wins protects only a stored item that is Plausible at this call's
// clock: one whose expiry lies beyond MaxLifetime+ClockSlack (set by a
// caller whose clock ran far ahead, or by a bug) is replaced. A Memory
// holds no encoded records, so nothing in it is ever undecodable, and Get
// never returns ErrMalformed.
func (m *Memory) Set(ctx context.Context, key string, item Item) error {
	if err := ctx.Err(); err != nil {
		return memErr("set", key, err)
	}
	if err := checkItem(item); err != nil {
		return memErr("set", key, err)
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return memErr("set", key, ErrClosed)
	}
	if cur, ok := m.items[key]; ok && cur.Plausible(now) && cur.Newer(item) {
		return nil
	}
	if m.items == nil {
		m.items = make(map[string]Item)
	}
	m.items[key] = item
	for ch := range m.watchers[key] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending: coalesce
		}
	}
	return nil
}

// Lock takes a lease on key for ttl, or returns ErrLocked at once when a live
// lease is held on key through this Memory. The lease lives apart from the
// item under key. The returned Lease also implements Extender.
func (m *Memory) Lock(ctx context.Context, key string, ttl time.Duration) (Lease, error) {
	return m.leases.lock(ctx, key, ttl)
}

// Watch returns a channel that receives a value each time Set stores an item
// under key, until ctx is done; then the channel is closed. Notifications are
// coalesced: a watcher that has not yet read the previous one gets no second.
// The watch holds memory until ctx is done, so pass a ctx that ends.
func (m *Memory) Watch(ctx context.Context, key string) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, memErr("watch", key, err)
	}
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, memErr("watch", key, ErrClosed)
	}
	if m.watchers == nil {
		m.watchers = make(map[string]map[chan struct{}]struct{})
	}
	set := m.watchers[key]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		m.watchers[key] = set
	}
	set[ch] = struct{}{}
	m.mu.Unlock()

	// AfterFunc runs once ctx is done; nothing waits for it before then.
	// Closing under m.mu means Set never sends on a closed channel.
	context.AfterFunc(ctx, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		set := m.watchers[key]
		if _, ok := set[ch]; !ok {
			return // Close has closed it
		}
		delete(set, ch)
		if len(set) == 0 {
			delete(m.watchers, key)
		}
		close(ch)
	})
	return ch, nil
}

// Close closes every Watch channel and makes every later operation, on the
// Memory and on its leases, fail with an error matching ErrClosed. The items
// are dropped. Close is idempotent and always returns nil.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.leases.closed.Store(true)
	for _, set := range m.watchers {
		for ch := range set {
			close(ch)
		}
	}
	m.watchers, m.items = nil, nil
	return nil
}

// leaseTable is an in-process lease table, used by Memory and by the funcs
// adapter. The zero value is ready to use.
type leaseTable struct {
	mu   sync.Mutex
	held map[string]leaseRecord
	// next is the owner of the next lease: random at first use, then
	// counted up, so owners are unpredictable and never repeat in a table.
	next uint64
	// closed is set by Memory.Close (the funcs adapter never closes).
	closed atomic.Bool
}

type leaseRecord struct {
	owner   uint64
	expires time.Time
}

func (lt *leaseTable) lock(ctx context.Context, key string, ttl time.Duration) (Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, memErr("lock", key, err)
	}
	if ttl <= 0 {
		return nil, memErr("lock", key, fmt.Errorf("ttl must be positive, got %v", ttl))
	}
	if lt.closed.Load() {
		return nil, memErr("lock", key, ErrClosed)
	}
	now := time.Now()
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if rec, ok := lt.held[key]; ok && now.Before(rec.expires) {
		return nil, memErr("lock", key, ErrLocked)
	}
	if lt.held == nil {
		lt.held = make(map[string]leaseRecord)
	}
	if lt.next == 0 {
		lt.next = rand.Uint64() | 1
	}
	owner := lt.next
	lt.next++
	lt.held[key] = leaseRecord{owner: owner, expires: now.Add(ttl)}
	return &memLease{table: lt, key: key, owner: owner}, nil
}

// memLease is a lease in a leaseTable. It is ours while the table holds a
// record under key with our owner and the record has not expired.
type memLease struct {
	table *leaseTable
	key   string
	owner uint64
}

var _ Extender = (*memLease)(nil)

// Unlock releases the lease if it is still ours, and is nil otherwise.
func (l *memLease) Unlock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return memErr("unlock", l.key, err)
	}
	if l.table.closed.Load() {
		return memErr("unlock", l.key, ErrClosed)
	}
	l.table.mu.Lock()
	defer l.table.mu.Unlock()
	if rec, ok := l.table.held[l.key]; ok && rec.owner == l.owner {
		delete(l.table.held, l.key)
	}
	return nil
}

// Extend gives the lease ttl more time from now if it is still ours and has
// not expired; otherwise it returns ErrLeaseLost.
func (l *memLease) Extend(ctx context.Context, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return memErr("extend", l.key, err)
	}
	if ttl <= 0 {
		return memErr("extend", l.key, fmt.Errorf("ttl must be positive, got %v", ttl))
	}
	if l.table.closed.Load() {
		return memErr("extend", l.key, ErrClosed)
	}
	now := time.Now()
	l.table.mu.Lock()
	defer l.table.mu.Unlock()
	rec, ok := l.table.held[l.key]
	if !ok || rec.owner != l.owner || !now.Before(rec.expires) {
		return memErr("extend", l.key, ErrLeaseLost)
	}
	rec.expires = now.Add(ttl)
	l.table.held[l.key] = rec
	return nil
}
