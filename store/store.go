// Package store is the contract between wechatconf's refresh engine and the
// places where credentials are shared between nodes: Redis, Memcached,
// PostgreSQL, bbolt, memory, or a user's own functions.
//
// A Store is deliberately small, in the spirit of database/sql/driver: Get,
// Set and Lock. Extra powers (Watcher, Extender) are optional interfaces that
// callers discover with a type assertion; package conf works, only slower,
// without them.
//
// Keys are chosen by the caller (package conf uses "{appid}:access_token" and
// the like, the braces keeping one app in one Redis Cluster hash slot).
// Backends may prepend a prefix of their own and keep their lease records
// beside the items, under a name derived from the key.
//
// # The shape of a backend
//
// Every backend in this module (redisstore, memcachestore, pgstore,
// boltstore) looks the same, and a third-party one should too:
//
//	func New(client C, opts ...Option) (*Store, error) // a nil client is an error naming the package
//	type Option func(*config)                          // functional options, config unexported
//	func (s *Store) Close() error                      // io.Closer: idempotent
//
// The client belongs to the caller, who closes it: New does not dial and
// Close does not close it; Close ends only what the Store itself started
// (watch subscriptions, a LISTEN connection, a file Open opened, a client
// that Open made). After Close every operation, on the Store and on its
// leases, fails with an error matching ErrClosed. Lease types are
// unexported: a Lease is used through the Lease and Extender interfaces.
//
// Every error is an *OpError whose message starts with the package's name
// and says the op and the key (redisstore: get "{wx1}:access_token": ...),
// and a miss, a held lease, a closed store and an undecodable record still
// match ErrNotFound, ErrLocked, ErrClosed and ErrMalformed with errors.Is.
//
// # Opening a store by URL
//
// Backends register their URL schemes with Register when imported, and Open
// opens a store by URL, the way database/sql drivers and sql.Open do; the
// wechatconf command takes any registered scheme in --store.
//
// Every Store must pass storetest.Run, which checks the shape above as far
// as the Store interface lets it see.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wechatconf/wechatconf/internal/secret"
)

// ErrNotFound is matched (with errors.Is) by the error Get returns when no item is stored under the key (or the
// stored one has expired). Any other error from Get means the store could not
// be read and must not be treated as a miss: callers that grant a new
// credential on every outage burn WeChat's daily quota.
var ErrNotFound = errors.New("store: not found")

// ErrClosed is matched (with errors.Is) by the error of every operation on a
// Store, and on its leases, after the Store's Close. Every backend in this
// module uses it; a third-party store with a Close should too.
var ErrClosed = errors.New("store: closed")

// ErrLocked is matched (with errors.Is) by the error Lock returns, at once and without waiting, when someone
// else holds a live lease on the key.
var ErrLocked = errors.New("store: locked")

// ErrMalformed is matched (with errors.Is) by Get's error when the record
// stored under the key cannot be decoded: garbage written by another
// program, a non-finite time (PostgreSQL's 'infinity'), an expiry no time
// type holds. It is not an outage: the caller treats the key as empty (and
// reports it), and the next Set overwrites the record whatever newer-wins
// would say, so a bad record heals at the next grant.
var ErrMalformed = errors.New("store: malformed record")

// MaxLifetime is the longest lifetime WeChat grants any credential: access
// tokens (classic and stable), jsapi and card tickets, WeCom tokens and
// tickets, Open Platform component and authorizer tokens all last 7200 s.
// It is exported for backends, ours and third parties', which bound what
// Set trusts with it (see Item.Plausible).
const MaxLifetime = 2 * time.Hour

// ClockSlack is how far ahead of a reader's clock a writer's clock may run
// before the writer's items look implausible to the reader. Like
// MaxLifetime, it is exported for backends that check plausibility in the
// server (a Lua script, a SQL WHERE clause).
const ClockSlack = 5 * time.Minute

// ErrLeaseLost is matched (with errors.Is) by the error of Extender.Extend when the lease expired and is
// no longer ours (it may now belong to someone else).
var ErrLeaseLost = errors.New("store: lease lost")

// Item is a credential with the moment WeChat stops accepting it. Value and
// expiry travel together so that no reader ever sees one without the other.
//
// Item redacts Value in String, GoString and LogValue: tokens must not reach
// logs by accident.
type Item struct {
	// Value is the credential itself: an access token or a ticket.
	Value string
	// ExpiresAt is when WeChat stops accepting Value.
	ExpiresAt time.Time
}

// IsZero reports whether the item holds no value.
func (i Item) IsZero() bool { return i.Value == "" && i.ExpiresAt.IsZero() }

// Fresh reports whether the item is usable at now with margin to spare: it
// has a value and now is before ExpiresAt minus margin.
func (i Item) Fresh(now time.Time, margin time.Duration) bool {
	return i.Value != "" && now.Before(i.ExpiresAt.Add(-margin))
}

// Plausible reports whether i could be a credential WeChat granted, seen at
// now: it has a value, and its expiry lies no further ahead than
// MaxLifetime plus ClockSlack. An implausible item (a poisoned record, one
// written by a node whose clock runs far ahead) is never served, and Set
// replaces it whatever its expiry.
func (i Item) Plausible(now time.Time) bool {
	return i.Value != "" && !i.ExpiresAt.After(now.Add(MaxLifetime+ClockSlack))
}

// Newer reports whether i expires strictly later than other. It is the order
// that Set uses: the item that expires later wins.
func (i Item) Newer(other Item) bool { return i.ExpiresAt.After(other.ExpiresAt) }

// String describes the item without revealing its value.
func (i Item) String() string {
	return fmt.Sprintf("store.Item{Value:%s ExpiresAt:%s}", secret.Redact(i.Value), i.ExpiresAt.UTC().Format(time.RFC3339))
}

// GoString is like String, so that %#v does not reveal the value either.
func (i Item) GoString() string { return i.String() }

// LogValue implements slog.LogValuer without revealing the value.
func (i Item) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("value", secret.Redact(i.Value)),
		slog.Time("expires_at", i.ExpiresAt),
	)
}

// Store shares credentials between nodes. Implementations must be safe for
// concurrent use.
type Store interface {
	// Get returns the item under key, or an error matching ErrNotFound (an
	// *OpError) when there is none or the stored one has expired. Any
	// other error is an outage.
	Get(ctx context.Context, key string) (Item, error)

	// Set stores item under key unless the stored item expires later (the
	// newer item wins), atomically: a slow node whose lease ran out can
	// never put an older grant over a newer one. Setting an item that loses
	// is not an error. Of two items with the same expiry either may be kept
	// (backends differ; WeChat does not grant two tokens that expire in the
	// same instant). Expired items may be dropped.
	//
	// Newer-wins protects only plausible items: Set replaces, whatever its
	// expiry, a stored item that is not Plausible at the writer's clock
	// (no value, or an expiry further ahead than MaxLifetime+ClockSlack)
	// and a stored record that cannot be decoded (see ErrMalformed).
	Set(ctx context.Context, key string, item Item) error

	// Lock takes a lease on key for ttl, or returns an error matching
	// ErrLocked (an *OpError) at once when someone else holds a live
	// lease. The lease lives apart from the item under the same key. A
	// holder that crashes blocks no one past ttl.
	Lock(ctx context.Context, key string, ttl time.Duration) (Lease, error)
}

// Lease is a lock held on a key until Unlock or until its ttl runs out.
type Lease interface {
	// Unlock releases the lease if, and only if, it is still ours: a holder
	// whose lease expired and was taken over by someone else does not
	// release the new holder's lease. Unlock is idempotent and returns nil
	// when there was nothing of ours to release.
	Unlock(ctx context.Context) error
}

// Extender is implemented by leases that can be extended while still held.
type Extender interface {
	// Extend sets the lease's remaining time to ttl if it is still ours, or
	// returns ErrLeaseLost.
	Extend(ctx context.Context, ttl time.Duration) error
}

// Watcher is implemented by stores that can tell waiters at once when an item
// is set (Redis pub/sub, PostgreSQL LISTEN/NOTIFY, the memory store). Without
// it, waiters poll.
type Watcher interface {
	// Watch returns a channel that receives a value (without blocking the
	// setter: notifications may be coalesced) each time an item is set
	// under key, by this process or another, until ctx is done; then the
	// channel is closed. A notification means "read again", nothing more:
	// the item it announces may already have lost to a newer one.
	Watch(ctx context.Context, key string) (<-chan struct{}, error)
}

// OpError describes a failed store operation. Backends wrap the cause so that
// errors read as "redisstore: get "{wx1}:access_token": connection refused"
// and still match with errors.Is.
type OpError struct {
	Backend string // the package that failed, e.g. "redisstore"
	Op      string // get, set, lock, unlock, extend, watch (pgstore: migrate)
	Key     string
	Err     error
}

// Error implements error.
func (e *OpError) Error() string {
	return fmt.Sprintf("%s: %s %q: %v", e.Backend, e.Op, e.Key, e.Err)
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }
