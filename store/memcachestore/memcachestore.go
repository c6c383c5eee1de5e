// Package memcachestore keeps wechatconf's credentials in memcached, so that
// every node of a deployment shares one access token and one jsapi ticket,
// and one node at a time grants a new one.
//
// It takes the *memcache.Client (github.com/bradfitz/gomemcache) the
// application already has. The client stays the caller's, who closes it:
// Store.Close only stops the Store. (A Store from store.Open, memcache://...,
// made its client and closes it.)
//
// What is stored, and why:
//
//   - An item lives under prefix+key as one value: its expiry (Unix
//     nanoseconds, 19 zero-padded digits) followed by its value, so no
//     reader sees one without the other. memcached drops it when the item
//     expires.
//   - Set is newer-wins by compare-and-swap: gets, compare the stored expiry,
//     then cas (or add when there is nothing stored), retrying a bounded
//     number of times when another node wrote in between. Newer-wins
//     protects only plausible items: a stored record that internal/record
//     cannot decode, or whose item is not store.Item.Plausible at the
//     writer's clock (no value, or an expiry beyond store.MaxLifetime plus
//     store.ClockSlack), is overwritten whatever its expiry; Get reports an
//     undecodable record with an error matching store.ErrMalformed.
//   - A lease lives beside the item, under prefix+key+":lock", taken by add
//     with a random owner value. Unlock and Extend read the lease with gets,
//     compare the owner, and cas it (Unlock with a negative expiration,
//     which memcached expires at once), so a holder whose lease ran out
//     never releases or extends the next holder's lease. A lease record that
//     is not an owner value this package writes (another program's, with
//     perhaps no expiration at all) holds no lease: Lock takes it over by
//     cas. memcached does not tell a record's remaining time, so a foreign
//     record shaped like an owner value, stored without expiration, would
//     still block Lock until evicted or deleted.
//
// Since leases sit beside items, do not use a key that ends in ":lock": its
// item would share a name with another key's lease.
//
// Know memcached's limits before choosing it:
//
//   - Expiry has a one-second granularity, and memcached's clock ticks once
//     a second, so a relative expiry of n seconds ends between n-1 and n
//     seconds later. A lease of ttl is therefore kept ceil(ttl)+1 seconds:
//     never less than ttl, up to two seconds more. Items carry their exact
//     expiry and Get checks it, so an item is never returned late.
//     Expirations are sent as relative times, capped at 30 days (memcached
//     reads anything longer as a Unix time on its own clock): a lease or
//     item asked for longer is kept 30 days.
//   - memcached may evict anything under memory pressure. An evicted item is
//     a miss, and an evicted lease lets a second node in: at worst one extra
//     grant from WeChat, which package conf tolerates. Give memcached room,
//     or pick Redis or PostgreSQL, if that matters.
//   - Keys (prefix included, and ":lock" for leases) must fit memcached's
//     rules: at most 250 bytes, no spaces or control characters. Store
//     operations reject other keys with an error matching ErrInvalidKey.
//   - gomemcache takes no context: ctx is checked before each round trip,
//     and each round trip is bounded by the client's Timeout.
//   - There is no watch: waiting nodes poll.
package memcachestore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/wechatconf/wechatconf/internal/record"
	"github.com/wechatconf/wechatconf/store"
)

// backend names this package in errors.
const backend = "memcachestore"

// DefaultPrefix is prepended to every key unless WithPrefix says otherwise.
// It is exported so that operators can find the records (and, in Redis
// Cluster, compute their slot) of a store made without WithPrefix, such as
// one from store.Open.
const DefaultPrefix = "wechatconf:"

// lockSuffix names a key's lease record, beside the item.
const lockSuffix = ":lock"

// maxKeyLen is memcached's limit on key length.
const maxKeyLen = 250

// maxRelative is the longest relative expiration memcached accepts (30
// days); beyond it the number is read as a Unix time. Items are kept at most
// this long: no WeChat credential lives nearly as long.
const maxRelative = 30 * 24 * 60 * 60

// maxAttempts bounds the compare-and-swap loops. Each failed attempt means
// another writer succeeded in between, so with n concurrent writers a Set
// fails at most n-1 times; the bound only stops a pathological loop.
const maxAttempts = 100

// ErrInvalidKey is matched (with errors.Is) by the error of an operation on
// a key memcached cannot hold: longer than 250 bytes with the prefix (and
// ":lock" for leases), or containing a space or a control character.
var ErrInvalidKey = errors.New("invalid memcached key")

// ErrContention is matched by the error of a Set, Unlock or Extend that
// lost its compare-and-swap race too many times in a row (a hundred): a sign
// that something rewrites the record in a loop.
var ErrContention = errors.New("too many concurrent writers")

// Store is a store.Store backed by memcached. It also implements io.Closer,
// and its leases implement store.Extender. It holds no resources of its
// own: a client given to New is the caller's, and Close does not close it.
// It is safe for concurrent use.
type Store struct {
	c      *memcache.Client
	prefix string
	closed atomic.Bool

	// closeClient, set when store.Open made the client, closes it.
	closeClient func() error
	closeOnce   sync.Once
	closeErr    error

	// beforeWrite, when set (by tests only), runs between a gets and the
	// add or cas that follows, where another writer may step in.
	beforeWrite func()
}

// Option configures New.
type Option func(*config)

type config struct {
	prefix string
}

// WithPrefix sets the string prepended to every key, DefaultPrefix
// ("wechatconf:") unless set. Give each deployment sharing a server its own
// prefix. It counts towards memcached's 250-byte key limit and must not
// contain spaces or control characters: New refuses one that does.
func WithPrefix(p string) Option {
	return func(c *config) { c.prefix = p }
}

// New returns a Store that keeps items and leases in memcached through c. It
// does not talk to memcached: an unreachable server shows in the first
// operation's error. A nil c, or a prefix memcached cannot hold in a key, is
// an error.
func New(c *memcache.Client, opts ...Option) (*Store, error) {
	if c == nil {
		return nil, errors.New("memcachestore: New: client is nil")
	}
	cfg := config{prefix: DefaultPrefix}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if cfg.prefix != "" {
		if err := checkKey(cfg.prefix); err != nil {
			return nil, fmt.Errorf("memcachestore: WithPrefix(%q): %w", cfg.prefix, err)
		}
	}
	return &Store{c: c, prefix: cfg.prefix}, nil
}

// Close makes every later operation, on the Store and on its leases, fail
// with an error matching store.ErrClosed. It does not close a client given
// to New, which stays the caller's; a Store from store.Open closes the
// client it made. Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.closeClient != nil {
			if err := s.closeClient(); err != nil {
				s.closeErr = fmt.Errorf("memcachestore: close: %w", err)
			}
		}
	})
	return s.closeErr
}

var (
	_ store.Store    = (*Store)(nil)
	_ io.Closer      = (*Store)(nil)
	_ store.Extender = (*lease)(nil)
)

func opErr(op, key string, err error) error {
	return &store.OpError{Backend: backend, Op: op, Key: key, Err: err}
}

// begin checks what every operation checks before its first round trip.
func (s *Store) begin(ctx context.Context, op, key string) error {
	if ctx == nil {
		return opErr(op, key, errors.New("nil context"))
	}
	if err := ctx.Err(); err != nil {
		return opErr(op, key, err)
	}
	if s.closed.Load() {
		return opErr(op, key, store.ErrClosed)
	}
	return nil
}

// checkKey tells why full (the key as sent to memcached) is not one
// memcached can hold, or returns nil.
func checkKey(full string) error {
	if len(full) > maxKeyLen {
		return fmt.Errorf("%w: %d bytes with prefix and suffix, memcached allows %d", ErrInvalidKey, len(full), maxKeyLen)
	}
	for i := 0; i < len(full); i++ {
		if c := full[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: byte %#x at offset %d (spaces and control characters are not allowed)", ErrInvalidKey, c, i)
		}
	}
	return nil
}

// Get returns the item under key, or store.ErrNotFound when there is none or
// the stored one has expired. A record that cannot be decoded gives a
// *store.OpError matching store.ErrMalformed. Any other error means
// memcached could not be read; it is a *store.OpError.
func (s *Store) Get(ctx context.Context, key string) (store.Item, error) {
	if err := s.begin(ctx, "get", key); err != nil {
		return store.Item{}, err
	}
	full := s.prefix + key
	if err := checkKey(full); err != nil {
		return store.Item{}, opErr("get", key, err)
	}
	mi, err := s.c.Get(full)
	if err == memcache.ErrCacheMiss {
		return store.Item{}, opErr("get", key, store.ErrNotFound)
	}
	if err != nil {
		return store.Item{}, opErr("get", key, err)
	}
	it, err := record.Decode(string(mi.Value))
	if err != nil {
		return store.Item{}, opErr("get", key, err)
	}
	if !it.ExpiresAt.After(time.Now()) {
		return store.Item{}, opErr("get", key, store.ErrNotFound)
	}
	return it, nil
}

// Set stores item under key unless the stored item expires later (newer
// wins), by compare-and-swap. An item that has already expired is dropped
// without error, and so is one that loses. A stored record that cannot be
// decoded, or that is not Plausible at this node's clock, is overwritten.
func (s *Store) Set(ctx context.Context, key string, item store.Item) error {
	if err := s.begin(ctx, "set", key); err != nil {
		return err
	}
	full := s.prefix + key
	if err := checkKey(full); err != nil {
		return opErr("set", key, err)
	}
	left := time.Until(item.ExpiresAt)
	if left <= 0 {
		return nil
	}
	rec, err := record.Encode(item)
	if err != nil {
		return opErr("set", key, err)
	}
	mi := &memcache.Item{Key: full, Value: rec, Expiration: expiration(left)}
	for range maxAttempts {
		if err := ctx.Err(); err != nil {
			return opErr("set", key, err)
		}
		cur, err := s.c.Get(full)
		switch {
		case err == memcache.ErrCacheMiss:
			if s.beforeWrite != nil {
				s.beforeWrite()
			}
			err = s.c.Add(mi)
			if err == memcache.ErrNotStored {
				continue // someone added first: compare with theirs
			}
		case err != nil:
		default:
			if old, derr := record.Decode(string(cur.Value)); derr == nil && old.Plausible(time.Now()) && old.ExpiresAt.After(item.ExpiresAt) {
				return nil // the stored item is newer
			}
			mi.CasID = cur.CasID
			if s.beforeWrite != nil {
				s.beforeWrite()
			}
			err = s.c.CompareAndSwap(mi)
			// EXISTS: changed since gets. NOT_FOUND (gomemcache's
			// ErrCacheMiss) or NOT_STORED: gone since gets. Look again.
			if err == memcache.ErrCASConflict || err == memcache.ErrCacheMiss || err == memcache.ErrNotStored {
				continue
			}
		}
		if err != nil {
			return opErr("set", key, err)
		}
		return nil
	}
	return opErr("set", key, ErrContention)
}

// Lock takes the lease on key with add, for ttl rounded up to whole seconds
// plus one (see the package doc), or returns store.ErrLocked at once when
// another holder's lease is live. A lease record that is not an owner value
// (see validOwner) is taken over by cas. The lease implements
// store.Extender.
func (s *Store) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	if err := s.begin(ctx, "lock", key); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, opErr("lock", key, fmt.Errorf("ttl %v must be positive", ttl))
	}
	full := s.prefix + key + lockSuffix
	if err := checkKey(full); err != nil {
		return nil, opErr("lock", key, err)
	}
	l := &lease{s: s, key: key, lockKey: full, owner: []byte(rand.Text())}
	mi := &memcache.Item{Key: full, Value: l.owner, Expiration: expiration(ttl)}
	if err := s.lock(ctx, mi); err != nil {
		return nil, opErr("lock", key, err)
	}
	return l, nil
}

// lockAttempts bounds Lock's add, look, cas round: each retry means the
// record changed in between (released, or taken), so a few are plenty, and
// Lock must not wait.
const lockAttempts = 3

// lock writes mi, the new lease record, with add; when a record is there
// already and it is not an owner value (garbage another program left,
// maybe without expiration), it replaces it with cas. A record that is an
// owner value means store.ErrLocked.
func (s *Store) lock(ctx context.Context, mi *memcache.Item) error {
	for range lockAttempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.c.Add(mi)
		if err != memcache.ErrNotStored {
			return err
		}
		cur, err := s.c.Get(mi.Key)
		switch {
		case err == memcache.ErrCacheMiss:
			continue // released since add: try again
		case err != nil:
			return err
		case validOwner(cur.Value):
			return store.ErrLocked
		}
		mi.CasID = cur.CasID
		if s.beforeWrite != nil {
			s.beforeWrite()
		}
		err = s.c.CompareAndSwap(mi)
		switch err {
		case memcache.ErrCASConflict, memcache.ErrCacheMiss, memcache.ErrNotStored:
			continue // rewritten or gone since gets: look again
		}
		return err
	}
	return store.ErrLocked
}

// validOwner reports whether v can be an owner value that Lock wrote:
// crypto/rand.Text's base32 (A-Z, 2-7), of the length it has (26) or
// thereabouts.
func validOwner(v []byte) bool {
	if len(v) < 16 || len(v) > 64 {
		return false
	}
	for _, c := range v {
		if (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// lease is a lease on one key, identified by its random owner value.
type lease struct {
	s       *Store
	key     string
	lockKey string
	owner   []byte
}

// Unlock releases the lease while memcached still holds this lease's owner
// value: gets, compare, then cas with a negative expiration, which expires
// the record at once. If another node took the lease in between, the cas
// fails and its lease stays. Releasing a lease that expired, was taken over
// or was already released returns nil.
func (l *lease) Unlock(ctx context.Context) error {
	if err := l.s.begin(ctx, "unlock", l.key); err != nil {
		return err
	}
	err := l.casOwned(ctx, -1)
	if err == store.ErrLeaseLost {
		return nil
	}
	if err != nil {
		return opErr("unlock", l.key, err)
	}
	return nil
}

// Extend sets the lease's remaining time to ttl (rounded up to whole seconds
// plus one) while it is still ours, by gets, compare and cas, or returns an
// error matching store.ErrLeaseLost.
func (l *lease) Extend(ctx context.Context, ttl time.Duration) error {
	if err := l.s.begin(ctx, "extend", l.key); err != nil {
		return err
	}
	if ttl <= 0 {
		return opErr("extend", l.key, fmt.Errorf("ttl %v must be positive", ttl))
	}
	if err := l.casOwned(ctx, expiration(ttl)); err != nil {
		return opErr("extend", l.key, err)
	}
	return nil
}

// casOwned rewrites the lease record with expiration exp if it still holds
// our owner value, or returns store.ErrLeaseLost.
func (l *lease) casOwned(ctx context.Context, exp int32) error {
	for range maxAttempts {
		if err := ctx.Err(); err != nil {
			return err
		}
		cur, err := l.s.c.Get(l.lockKey)
		if err == memcache.ErrCacheMiss {
			return store.ErrLeaseLost
		}
		if err != nil {
			return err
		}
		if string(cur.Value) != string(l.owner) {
			return store.ErrLeaseLost
		}
		if l.s.beforeWrite != nil {
			l.s.beforeWrite()
		}
		err = l.s.c.CompareAndSwap(&memcache.Item{Key: l.lockKey, Value: l.owner, Expiration: exp, CasID: cur.CasID})
		switch err {
		case nil:
			return nil
		case memcache.ErrCacheMiss, memcache.ErrNotStored:
			return store.ErrLeaseLost // expired or evicted since gets
		case memcache.ErrCASConflict:
			continue // rewritten since gets (by our own Extend, or a new holder): look again
		default:
			return err
		}
	}
	return ErrContention
}

// expiration turns a duration into memcached's expiration: whole seconds
// rounded up, plus one for memcached's once-a-second clock tick, and never
// more than the 30 days that memcached reads as relative.
func expiration(d time.Duration) int32 {
	sec := (d + time.Second - 1) / time.Second
	if sec >= maxRelative {
		return maxRelative
	}
	return int32(sec) + 1
}
