// Package boltstore keeps wechatconf's credentials in a bbolt file: the
// embedded, persistent store for a single process. A restart (Close, then
// Open again) finds the token where it left it, so it does not spend one of
// WeChat's daily grants.
//
// One process at a time. bbolt holds an exclusive lock on its file while a
// DB is open read-write, so a second process, or a second Open of the same
// file in this process, cannot share it: Open waits for the lock at most the
// WithTimeout duration and then fails with ErrFileLocked. Short-lived
// processes (such as the wechatconf command) can take turns on the file that
// way; deployments with several processes or nodes need a networked backend
// instead: redisstore, pgstore or memcachestore.
//
// Within the process, many Conf values share one Store (or one *bbolt.DB
// passed to several New calls): each app uses its own keys. The lease is a
// record in the same file, taken and released inside db.Update, so it is
// exclusive between the goroutines of this process; it also survives a
// restart until its ttl runs out.
//
// Who closes the file: a Store from Open (or store.Open with bolt:PATH)
// owns it and closes it in Close; a *bbolt.DB given to New stays the
// caller's, who closes it after the Store.
//
// Items and leases live in two nested buckets, "items" and "leases", under
// the bucket chosen with WithBucket. Expired items are dropped lazily, when a
// Set on the same key finds them.
package boltstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// backend names this package in every *store.OpError it returns.
const backend = "boltstore"

// DefaultBucket is the top-level bucket used when WithBucket is not given.
// It is exported for programs that read the file with bbolt directly (a
// backup check, another bucket beside ours).
const DefaultBucket = "wechatconf"

// DefaultTimeout is how long Open waits for bbolt's file lock when
// WithTimeout is not given: long enough for another short-lived process to
// finish its turn, short enough that a misconfigured deployment fails fast.
const DefaultTimeout = 3 * time.Second

// ErrFileLocked is returned (wrapped, together with bbolt's own timeout
// error) by Open when another process, or another Open in this process,
// holds the file. bbolt serves one process at a time; share credentials
// between processes with a networked backend instead.
var ErrFileLocked = errors.New("database file is in use by another process or another Open in this process " +
	"(bbolt allows one process at a time; for several processes use a networked backend: redisstore, pgstore or memcachestore)")

var (
	itemsBucket  = []byte("items")
	leasesBucket = []byte("leases")
)

// Option configures New and Open.
type Option func(*config)

type config struct {
	bucket  string
	timeout time.Duration
}

// WithBucket sets the top-level bucket that holds this store's items and
// leases (default DefaultBucket). Use distinct buckets to keep unrelated
// deployments apart in one file.
func WithBucket(name string) Option { return func(c *config) { c.bucket = name } }

// WithTimeout bounds how long Open waits for the file lock held by another
// process or another Open (default DefaultTimeout). It must be positive:
// bbolt would wait forever with zero. New ignores it, since the DB it is
// given is already open.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

func buildConfig(opts []Option) (config, error) {
	c := config{bucket: DefaultBucket, timeout: DefaultTimeout}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.bucket == "" {
		return c, errors.New("boltstore: WithBucket: bucket name is empty")
	}
	if c.timeout <= 0 {
		return c, fmt.Errorf("boltstore: WithTimeout: %v is not positive (bbolt would wait for the file lock forever)", c.timeout)
	}
	return c, nil
}

// Store is a store.Store backed by a bbolt database. It also implements
// store.Watcher (for Sets made in this process) and its leases implement
// store.Extender. It is safe for concurrent use.
type Store struct {
	db     *bbolt.DB
	bucket []byte
	owns   bool // Close closes db
	hub    *hub
	closed atomic.Bool
	once   sync.Once
	err    error // from Close
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Watcher = (*Store)(nil)
	_ io.Closer     = (*Store)(nil)
)

// New returns a Store that keeps its records in db, creating its bucket if
// needed. The caller keeps ownership of db: Close does not close it. Use New
// when the application already has a bbolt database for other data.
func New(db *bbolt.DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, errors.New("boltstore: New: db is nil")
	}
	c, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	return newStore(db, c, false)
}

// Open opens (or creates) the bbolt file at path and returns a Store that
// owns it: Close closes the file. When another process or another Open in
// this process holds the file, Open gives up after the WithTimeout duration
// with an error matching ErrFileLocked (and berrors.ErrTimeout).
func Open(path string, opts ...Option) (*Store, error) {
	if path == "" {
		return nil, errors.New("boltstore: Open: path is empty")
	}
	c, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: c.timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("boltstore: open %q: no lock after %v: %w: %w", path, c.timeout, ErrFileLocked, err)
		}
		return nil, fmt.Errorf("boltstore: open %q: %w", path, err)
	}
	s, err := newStore(db, c, true)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func newStore(db *bbolt.DB, c config, owns bool) (*Store, error) {
	bucket := []byte(c.bucket)
	err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if _, err := b.CreateBucketIfNotExists(itemsBucket); err != nil {
			return err
		}
		_, err = b.CreateBucketIfNotExists(leasesBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: create bucket %q: %w", c.bucket, err)
	}
	return &Store{db: db, bucket: bucket, owns: owns, hub: acquireHub(db, c.bucket)}, nil
}

// Close ends every Watch (their channels are closed) and, when the Store
// came from Open, closes the database file so that another process may open
// it (the caller closes a db given to New). Operations after Close, on the
// Store and on its leases, fail with an error matching store.ErrClosed.
// Close is idempotent.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		releaseHub(s.hub, s)
		if s.owns {
			if err := s.db.Close(); err != nil {
				s.err = fmt.Errorf("boltstore: close: %w", err)
			}
		}
	})
	return s.err
}

// DB returns the underlying database. It stays exported because a Store
// from Open is the only handle on its file: DB is how a user takes a backup
// (bbolt's Tx.WriteTo) or keeps other buckets in the same file. Do not close
// it when the Store came from Open.
func (s *Store) DB() *bbolt.DB { return s.db }

func opErr(op, key string, err error) error {
	return &store.OpError{Backend: backend, Op: op, Key: key, Err: err}
}

// begin checks what every operation checks before its transaction.
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
	if key == "" {
		return opErr(op, key, errors.New("key is empty"))
	}
	return nil
}

// buckets returns the items and leases buckets of tx. They exist once
// newStore has run, unless someone deleted them behind our back.
func (s *Store) buckets(tx *bbolt.Tx) (items, leases *bbolt.Bucket, err error) {
	b := tx.Bucket(s.bucket)
	if b != nil {
		items, leases = b.Bucket(itemsBucket), b.Bucket(leasesBucket)
	}
	if items == nil || leases == nil {
		return nil, nil, fmt.Errorf("bucket %q is missing (deleted while the store was open?)", s.bucket)
	}
	return items, leases, nil
}

// Item records are: 8 bytes of Unix seconds, 4 bytes of nanoseconds (both
// big-endian), then the value. Seconds and nanoseconds rather than
// UnixNano, so that every time.Time (the zero one included) survives.
//
// A record shorter than the header, or with nanoseconds of a second or
// more, was not written by this package: Get reports it with an error
// matching store.ErrMalformed, and Set overwrites it (so does Set a stored
// item that is not store.Item.Plausible), so that a bad record heals at the
// next grant instead of failing every Set for ever.
const itemHeader = 12

func encodeItem(it store.Item) []byte {
	buf := make([]byte, itemHeader+len(it.Value))
	binary.BigEndian.PutUint64(buf[0:8], uint64(it.ExpiresAt.Unix()))
	binary.BigEndian.PutUint32(buf[8:12], uint32(it.ExpiresAt.Nanosecond()))
	copy(buf[itemHeader:], it.Value)
	return buf
}

// decodeExpiry reads the expiry of an item record. Its errors match
// store.ErrMalformed and never quote the record (it holds a credential).
func decodeExpiry(buf []byte) (time.Time, error) {
	if len(buf) < itemHeader {
		return time.Time{}, fmt.Errorf("corrupt record: %w: %d bytes, want at least %d", store.ErrMalformed, len(buf), itemHeader)
	}
	sec := int64(binary.BigEndian.Uint64(buf[0:8]))
	nsec := int64(binary.BigEndian.Uint32(buf[8:12]))
	if nsec >= 1e9 {
		return time.Time{}, fmt.Errorf("corrupt record: %w: nanoseconds %d out of range", store.ErrMalformed, nsec)
	}
	return time.Unix(sec, nsec), nil
}

// Get returns the item under key, or an error matching store.ErrNotFound
// when there is none or it has expired, or one matching store.ErrMalformed
// when the record under key cannot be decoded.
func (s *Store) Get(ctx context.Context, key string) (store.Item, error) {
	if err := s.begin(ctx, "get", key); err != nil {
		return store.Item{}, err
	}
	var it store.Item
	err := s.db.View(func(tx *bbolt.Tx) error {
		items, _, err := s.buckets(tx)
		if err != nil {
			return err
		}
		v := items.Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		exp, err := decodeExpiry(v)
		if err != nil {
			return err
		}
		// v is only valid inside the transaction: string() copies it.
		it = store.Item{Value: string(v[itemHeader:]), ExpiresAt: exp}
		return nil
	})
	if err != nil {
		return store.Item{}, opErr("get", key, err)
	}
	if !time.Now().Before(it.ExpiresAt) {
		return store.Item{}, opErr("get", key, store.ErrNotFound)
	}
	return it, nil
}

// Set stores item under key unless the stored item expires later; the
// comparison and the write happen in one bbolt transaction. A stored item
// that has expired and loses to nothing newer is dropped. A stored record
// that cannot be decoded, and a stored item that is not Plausible at this
// node's clock, are overwritten whatever their expiry. Watchers of key in
// this process are woken when the item is stored.
func (s *Store) Set(ctx context.Context, key string, item store.Item) error {
	if err := s.begin(ctx, "set", key); err != nil {
		return err
	}
	stored := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		items, _, err := s.buckets(tx)
		if err != nil {
			return err
		}
		k := []byte(key)
		now := time.Now()
		if v := items.Get(k); v != nil {
			exp, err := decodeExpiry(v)
			// Undecodable or implausible: nothing newer-wins protects.
			keep := err == nil && (store.Item{Value: string(v[itemHeader:]), ExpiresAt: exp}).Plausible(now)
			if keep && !item.ExpiresAt.After(exp) {
				// The stored item wins. Drop it if it is dead anyway.
				if !now.Before(exp) {
					return items.Delete(k)
				}
				return nil
			}
		}
		stored = true
		return items.Put(k, encodeItem(item))
	})
	if err != nil {
		return opErr("set", key, err)
	}
	if stored {
		s.hub.notify(key)
	}
	return nil
}

// Lease records are 16 bytes of random owner followed by the expiry as 8
// bytes of big-endian Unix nanoseconds (a lease's expiry is always a recent
// wall-clock time, well inside UnixNano's range).
const (
	ownerLen = 16
	leaseLen = ownerLen + 8
)

func encodeLease(owner [ownerLen]byte, exp time.Time) []byte {
	buf := make([]byte, leaseLen)
	copy(buf, owner[:])
	binary.BigEndian.PutUint64(buf[ownerLen:], uint64(exp.UnixNano()))
	return buf
}

// decodeLease reads a lease record. A record of the wrong length was not
// written by this package; its error matches store.ErrMalformed, and Lock
// takes such a lease as free (a lease is only ever held for its ttl, and a
// record nobody can read belongs to no holder), Unlock and Extend as not
// ours.
func decodeLease(buf []byte) (owner [ownerLen]byte, exp time.Time, err error) {
	if len(buf) != leaseLen {
		return owner, exp, fmt.Errorf("corrupt lease record: %w: %d bytes, want %d", store.ErrMalformed, len(buf), leaseLen)
	}
	copy(owner[:], buf)
	return owner, time.Unix(0, int64(binary.BigEndian.Uint64(buf[ownerLen:]))), nil
}

// Lock takes the lease on key for ttl, or returns an error matching
// store.ErrLocked at once when a live lease is held, by this process or by
// an earlier run of it that has not reached its ttl. A lease record that
// cannot be decoded is taken over as free.
func (s *Store) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	if err := s.begin(ctx, "lock", key); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, opErr("lock", key, fmt.Errorf("ttl %v is not positive", ttl))
	}
	l := &lease{s: s, key: key}
	if _, err := rand.Read(l.owner[:]); err != nil {
		return nil, opErr("lock", key, fmt.Errorf("random owner: %w", err))
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		_, leases, err := s.buckets(tx)
		if err != nil {
			return err
		}
		k := []byte(key)
		now := time.Now()
		if v := leases.Get(k); v != nil {
			// An undecodable record holds no live lease: take it over.
			if _, exp, err := decodeLease(v); err == nil && now.Before(exp) {
				return store.ErrLocked
			}
		}
		return leases.Put(k, encodeLease(l.owner, now.Add(ttl)))
	})
	if err != nil {
		return nil, opErr("lock", key, err)
	}
	return l, nil
}

// lease is a lease taken by Store.Lock. It implements store.Lease and
// store.Extender.
type lease struct {
	s     *Store
	key   string
	owner [ownerLen]byte
}

var (
	_ store.Lease    = (*lease)(nil)
	_ store.Extender = (*lease)(nil)
)

// Unlock deletes the lease record if it is still ours (same owner), inside
// one transaction; a lease that expired and was taken over by someone else
// is left alone. Unlock is idempotent.
func (l *lease) Unlock(ctx context.Context) error {
	if err := l.s.begin(ctx, "unlock", l.key); err != nil {
		return err
	}
	err := l.s.db.Update(func(tx *bbolt.Tx) error {
		leases, ours, _, err := l.current(tx)
		if err != nil || !ours {
			return err
		}
		return leases.Delete([]byte(l.key))
	})
	if err != nil {
		return opErr("unlock", l.key, err)
	}
	return nil
}

// Extend gives the lease ttl more time from now if it is still ours and has
// not expired, or returns an error matching store.ErrLeaseLost.
func (l *lease) Extend(ctx context.Context, ttl time.Duration) error {
	if err := l.s.begin(ctx, "extend", l.key); err != nil {
		return err
	}
	if ttl <= 0 {
		return opErr("extend", l.key, fmt.Errorf("ttl %v is not positive", ttl))
	}
	err := l.s.db.Update(func(tx *bbolt.Tx) error {
		leases, ours, exp, err := l.current(tx)
		if err != nil {
			return err
		}
		now := time.Now()
		if !ours || !now.Before(exp) {
			return store.ErrLeaseLost
		}
		return leases.Put([]byte(l.key), encodeLease(l.owner, now.Add(ttl)))
	})
	if err != nil {
		return opErr("extend", l.key, err)
	}
	return nil
}

// current reads the lease record of l's key in tx: whether it holds our
// owner value (false when there is none, or it cannot be decoded) and when
// it expires. It also returns the leases bucket, for the caller's write.
func (l *lease) current(tx *bbolt.Tx) (leases *bbolt.Bucket, ours bool, exp time.Time, err error) {
	_, leases, err = l.s.buckets(tx)
	if err != nil {
		return nil, false, time.Time{}, err
	}
	v := leases.Get([]byte(l.key))
	if v == nil {
		return leases, false, time.Time{}, nil
	}
	owner, exp, err := decodeLease(v)
	if err != nil {
		return leases, false, time.Time{}, nil // not ours, whoever wrote it
	}
	return leases, owner == l.owner, exp, nil
}

// String describes the lease without its owner value.
func (l *lease) String() string { return fmt.Sprintf("boltstore.lease{key:%q}", l.key) }

// Watch returns a channel that receives a value each time Set stores an item
// under key through any Store on the same database and bucket in this
// process, until ctx is done or the Store is closed; then the channel is
// closed. Other processes cannot share the file, so there is nothing else to
// hear. Notifications are coalesced: a slow reader sees at least one.
func (s *Store) Watch(ctx context.Context, key string) (<-chan struct{}, error) {
	if err := s.begin(ctx, "watch", key); err != nil {
		return nil, err
	}
	ch, ok := s.hub.watch(ctx, s, key)
	if !ok {
		return nil, opErr("watch", key, store.ErrClosed)
	}
	return ch, nil
}
