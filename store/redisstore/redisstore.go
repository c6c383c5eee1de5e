// Package redisstore keeps wechatconf's credentials in Redis, so that every
// node of a deployment shares one access token and one jsapi ticket, and one
// node at a time grants a new one.
//
// It takes the client the application already has: a redis.UniversalClient
// covers a single server, Sentinel and Cluster alike. The client stays the
// caller's, who closes it after the Store: New does not dial it, and
// Store.Close ends only the Store's own watches. (A Store from store.Open,
// redis://... and the like, made its client and closes it.)
//
// What is stored, and why:
//
//   - An item lives under prefix+key as one string: its expiry (Unix
//     nanoseconds, 19 zero-padded digits) followed by its value. Value and
//     expiry are read in one GET, so no reader sees one without the other.
//     The key carries a Redis TTL that ends at the item's expiry, so nothing
//     lingers after WeChat stops accepting it.
//   - Set is one Lua script that compares the stored expiry with the new one
//     and writes only if the new item does not expire earlier (newer wins),
//     then PUBLISHes on the key's channel so that waiting nodes wake at once
//     (see Store.Watch). Newer-wins protects only plausible items: the
//     script overwrites a stored record that internal/record.Decode rejects
//     (it checks the stamp byte for byte as Decode does), a key of another
//     type, a record with no value, and one whose expiry lies beyond the
//     writer's now plus store.MaxLifetime and store.ClockSlack. Get reports
//     a record it cannot decode (or a key of another type) with an error
//     matching store.ErrMalformed.
//   - A lease lives beside the item, under prefix+key+":lock", taken with
//     SET NX PX and a random owner value, in a Lua script that also takes
//     over a lock key without a TTL (every lease has one, so such a key is
//     another program's, and would block Lock for ever). Unlock and Extend
//     are Lua scripts that compare the owner before they act, so a holder
//     whose lease ran out never releases or extends the next holder's
//     lease.
//
// Since leases sit beside items, do not use a key that ends in ":lock": its
// item would share a name with another key's lease.
//
// In Redis Cluster every script touches a single key, and package conf puts
// the app's id in braces ("{wx123}:access_token"), so an app's item and lease
// hash to one slot: keep the braces if you choose your own keys.
//
// Times: item expiries are compared as stored, whatever the clocks. The TTL
// given to Redis is computed from this node's clock (the time left until the
// item expires), not as an absolute time on the server's clock, so skew
// between a node and the server does not shorten or stretch it. Lease TTLs
// are counted by the Redis server.
//
// # Failover
//
// Redis Cluster: when a master dies, go-redis keeps sending its slots to it
// until it reloads the slot map, by default once a minute
// (ClusterOptions.ClusterStateReloadInterval); MOVED and ASK redirects it
// follows at once, and they never reach the Store as errors. So on a
// *redis.ClusterClient the Store asks for a reload (ClusterClient.ReloadState)
// when a call fails as calls to a dead or unreachable node do: connection
// refused or reset, EOF, timeouts, CLUSTERDOWN, TRYAGAIN, MASTERDOWN,
// LOADING, READONLY, or a redirect go-redis gave up on. It asks at most once
// per 500 ms (see WithFailoverReload); the reload runs in go-redis's own
// goroutine, so no call waits for it. A call that failed is then repeated
// once, if its context leaves time and the reload sent the key's slot to
// another node within 300 ms: a script only when it certainly did not run,
// and a lease only after checking that the first attempt did not take it.
// The Store thus works again within about a second of the promotion, plus
// the time go-redis spends on the failing call (its retries: MaxRedirects
// attempts, each dial retried DialerRetries times): lower DialerRetries,
// DialTimeout and the per-call bound if that matters to you. Set
// ClusterOptions.Addrs to several nodes, so that a reload can reach a live
// one. MaxRedirects (keep it at least 1: with none, go-redis does not follow
// redirects and every one becomes a failed call), ReadOnly, RouteByLatency
// and RouteRandomly stay yours; note that the last three send Get to
// replicas, which may lag a Set by a moment, so that a node may see an old
// item where the master has a new one: leave them off unless you accept
// that. Leases and scripts always go to the master.
//
// Replication is asynchronous: an item or lease written just before the
// master died may be lost with it, so that another node may take the lease
// again. Newer-wins Set keeps the stored item right whatever order the two
// grants land in.
//
// Sentinel: redis.NewFailoverClient asks a sentinel for the master at every
// dial and drops its connections when a sentinel announces +switch-master,
// so the Store works again as soon as the sentinels have promoted the
// replica; it needs nothing more. redis.NewFailoverClusterClient is a
// ClusterClient whose slot map comes from the sentinels and is reloaded on
// +switch-master; the Store adds the reload on failure above, in case that
// message is missed. With either, give FailoverOptions.SentinelAddrs every
// sentinel.
//
// Watch subscribes through the same client, to the master of the key's
// slot in its slot map, so after a failover the subscription moves with the
// first reload that a failed call asks for.
package redisstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/record"
	"github.com/wechatconf/wechatconf/store"
)

// backend names this package in errors.
const backend = "redisstore"

// DefaultPrefix is prepended to every key unless WithPrefix says otherwise.
// It is exported so that operators can find the records (and, in Redis
// Cluster, compute their slot) of a store made without WithPrefix, such as
// one from store.Open.
const DefaultPrefix = "wechatconf:"

// lockSuffix names a key's lease record, beside the item.
const lockSuffix = ":lock"

// Store is a store.Store backed by Redis. It also implements store.Watcher
// and io.Closer, and its leases implement store.Extender. It is safe for
// concurrent use.
//
// The client is the caller's: New does not dial it and Close does not close
// it. Close ends only what the Store started, its Watch subscriptions.
type Store struct {
	c        redis.UniversalClient
	prefix   string
	chPrefix string

	closed atomic.Bool
	done   context.Context // cancelled by Close: ends every Watch
	stop   context.CancelFunc

	// closeClient, set when store.Open made the client, closes it.
	closeClient func() error
	closeOnce   sync.Once
	closeErr    error
}

// Option configures New.
type Option func(*config)

type config struct {
	prefix   string
	chPrefix string
	chSet    bool
	fo       failoverConfig // see failover.go
}

// WithPrefix sets the string prepended to every key, DefaultPrefix
// ("wechatconf:") unless set. Give each deployment sharing a server its own
// prefix. The empty prefix is allowed. Do not put braces in it: in Redis
// Cluster the braces in the key must decide the hash slot.
func WithPrefix(p string) Option {
	return func(c *config) { c.prefix = p }
}

// WithChannelPrefix sets the string prepended to a key to name its pub/sub
// channel, by default the key prefix (channels and keys are separate
// namespaces in Redis, so the channel may share the item key's name). Use it
// when Redis ACLs allow this client only certain channel patterns.
func WithChannelPrefix(p string) Option {
	return func(c *config) { c.chPrefix, c.chSet = p, true }
}

// New returns a Store that keeps items and leases in Redis through c. It
// does not talk to Redis: an unreachable server shows in the first
// operation's error. A nil c is an error.
func New(c redis.UniversalClient, opts ...Option) (*Store, error) {
	if nilClient(c) {
		return nil, errors.New("redisstore: New: client is nil")
	}
	cfg := config{prefix: DefaultPrefix}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if !cfg.chSet {
		cfg.chPrefix = cfg.prefix
	}
	done, stop := context.WithCancel(context.Background())
	return &Store{
		c:        cfg.fo.wrap(c), // failover.go: reload and repeat on a ClusterClient
		prefix:   cfg.prefix,
		chPrefix: cfg.chPrefix,
		done:     done,
		stop:     stop,
	}, nil
}

// nilClient reports whether c is nil, or a nil pointer of one of go-redis's
// client types in a non-nil interface, which would panic at the first call.
func nilClient(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case nil:
		return true
	case *redis.Client:
		return c == nil
	case *redis.ClusterClient:
		return c == nil
	case *redis.Ring:
		return c == nil
	}
	return false
}

// Close ends every Watch (their channels are closed) and makes every later
// operation, on the Store and on its leases, fail with an error matching
// store.ErrClosed. It does not close a client given to New, which stays the
// caller's; a Store from store.Open closes the client it made. Close is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
		if s.closeClient != nil {
			if err := s.closeClient(); err != nil {
				s.closeErr = fmt.Errorf("redisstore: close: %w", err)
			}
		}
	})
	return s.closeErr
}

// begin checks what every operation checks before it reaches Redis.
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

var (
	_ store.Store    = (*Store)(nil)
	_ store.Watcher  = (*Store)(nil)
	_ io.Closer      = (*Store)(nil)
	_ store.Extender = (*lease)(nil)
)

// setScript writes ARGV[1] under KEYS[1] with a TTL of ARGV[2] milliseconds
// unless the stored record is plausible and its stamp is later than the new
// one, then publishes on channel ARGV[3]. It returns 1 when it wrote.
//
// Plausible means: a record that internal/record.Decode accepts, with a
// value, whose stamp is no later than the writer's now (ARGV[4], a record
// stamp) plus ARGV[5] whole seconds (store.MaxLifetime+store.ClockSlack).
// Anything else is overwritten: a key of another type, a record that is not
// ours, a poisoned expiry.
//
// The record format is defined once, in internal/record (record.Encode,
// record.Decode); stamp() below is the only other reader of it and must
// change with it. It accepts exactly what Decode accepts: at least 19 bytes,
// the first 19 ASCII digits, at most math.MaxInt64 nanoseconds. It reads the
// stamp as its first ten digits (seconds) and next nine (nanoseconds), so
// that Lua's doubles, exact only to 2^53, compare them exactly; tonumber
// alone would take hexadecimal, signs, exponents, "inf" and spaces.
var setScript = redis.NewScript(`
local function stamp(r)
  if type(r) ~= 'string' or string.len(r) < 19 then return nil end
  if string.find(string.sub(r, 1, 19), '^[0-9]+$') == nil then return nil end
  local s = tonumber(string.sub(r, 1, 10))
  local n = tonumber(string.sub(r, 11, 19))
  if s > 9223372036 or (s == 9223372036 and n > 854775807) then return nil end
  return s, n
end
local ns, nn = stamp(ARGV[1])
local ls, ln = stamp(ARGV[4])
ls = ls + tonumber(ARGV[5])
local cur = redis.pcall('GET', KEYS[1])
local cs, cn = stamp(cur)
if cs ~= nil and string.len(cur) > 19
  and not (cs > ls or (cs == ls and cn > ln))
  and (cs > ns or (cs == ns and cn > nn)) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], '1')
return 1
`)

// lockScript takes lease KEYS[1] for owner ARGV[1] for ARGV[2] milliseconds
// when it is free, or when what is there has no TTL: every lease has one,
// so such a key (of any type) was left by another program and would
// otherwise block every Lock for ever. It returns 1 when it took the lease.
var lockScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// unlockScript deletes KEYS[1] only while it still holds owner ARGV[1]. A
// key of another type holds no owner (pcall: GET fails on it).
var unlockScript = redis.NewScript(`
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// extendScript resets KEYS[1]'s TTL to ARGV[2] milliseconds only while it
// still holds owner ARGV[1]. It returns 1 when it did.
var extendScript = redis.NewScript(`
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

func opErr(op, key string, err error) error {
	return &store.OpError{Backend: backend, Op: op, Key: key, Err: err}
}

// Get returns the item under key, or store.ErrNotFound when there is none or
// the stored one has expired by this node's clock. A record that cannot be
// decoded, or a key of another type, gives a *store.OpError matching
// store.ErrMalformed. Any other error means Redis could not be read; it is
// a *store.OpError.
func (s *Store) Get(ctx context.Context, key string) (store.Item, error) {
	if err := s.begin(ctx, "get", key); err != nil {
		return store.Item{}, err
	}
	rec, err := s.c.Get(ctx, s.prefix+key).Result()
	if err == redis.Nil {
		return store.Item{}, opErr("get", key, store.ErrNotFound)
	}
	if wrongType(err) {
		return store.Item{}, opErr("get", key, fmt.Errorf("%w: %w", store.ErrMalformed, err))
	}
	if err != nil {
		return store.Item{}, opErr("get", key, err)
	}
	it, err := record.Decode(rec)
	if err != nil {
		return store.Item{}, opErr("get", key, err)
	}
	if !it.ExpiresAt.After(time.Now()) {
		return store.Item{}, opErr("get", key, store.ErrNotFound)
	}
	return it, nil
}

// wrongType reports whether err is Redis's answer to a command on a key of
// another type: something other than this package wrote there.
func wrongType(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "WRONGTYPE")
}

// Set stores item under key unless the stored item expires later (newer
// wins), in one Lua script, and then notifies watchers. An item that has
// already expired is dropped without error, and so is one that loses. A
// stored record that cannot be decoded, or that is not Plausible at this
// node's clock, is overwritten whatever its expiry.
func (s *Store) Set(ctx context.Context, key string, item store.Item) error {
	if err := s.begin(ctx, "set", key); err != nil {
		return err
	}
	now := time.Now()
	left := item.ExpiresAt.Sub(now)
	if left <= 0 {
		return nil
	}
	rec, err := record.Encode(item)
	if err != nil {
		return opErr("set", key, err)
	}
	_, err = runSet(ctx, s.c, s.prefix+key, rec, ceilMillis(left), s.chPrefix+key, now, store.MaxLifetime+store.ClockSlack)
	if err != nil {
		return opErr("set", key, err)
	}
	return nil
}

// runSet runs setScript on full with the writer's clock now and the
// plausibility bound (whole seconds: store.MaxLifetime+store.ClockSlack in
// Set), and reports whether the script wrote rec.
func runSet(ctx context.Context, c redis.Scripter, full string, rec []byte, ttlMillis int64, channel string, now time.Time, bound time.Duration) (bool, error) {
	nowRec, err := record.Encode(store.Item{ExpiresAt: now})
	if err != nil {
		return false, fmt.Errorf("clock: %w", err)
	}
	n, err := setScript.Run(ctx, c, []string{full},
		rec, ttlMillis, channel, nowRec, int64(bound/time.Second)).Int64()
	return n == 1, err
}

// Lock takes the lease on key for ttl (rounded up to a whole millisecond)
// with SET NX PX and a random owner, or returns store.ErrLocked at once when
// another holder's lease is live. A lock key without a TTL is no lease and
// is taken over. The lease implements store.Extender.
func (s *Store) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	if err := s.begin(ctx, "lock", key); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, opErr("lock", key, fmt.Errorf("ttl %v must be positive", ttl))
	}
	l := &lease{s: s, key: key, lockKey: s.prefix + key + lockSuffix, owner: rand.Text()}
	n, err := lockScript.Run(ctx, s.c, []string{l.lockKey}, l.owner, ceilMillis(ttl)).Int64()
	if err != nil {
		return nil, opErr("lock", key, err)
	}
	if n != 1 {
		return nil, opErr("lock", key, store.ErrLocked)
	}
	return l, nil
}

// Watch implements store.Watcher with Redis pub/sub: the returned channel
// receives a value each time Set writes an item under key, from any node
// sharing the server and prefix. Watch returns once the subscription is
// confirmed, so a Set that starts after Watch returns is seen.
//
// When the connection drops, go-redis subscribes again, and the channel
// receives a value then too, since a Set may have been missed meanwhile.
// Notifications are hints: waiters should still bound their wait and read
// the store again. The subscription is closed, its goroutines end and the
// channel is closed when ctx is done.
func (s *Store) Watch(ctx context.Context, key string) (<-chan struct{}, error) {
	if err := s.begin(ctx, "watch", key); err != nil {
		return nil, err
	}
	// The watch ends with ctx or with Close, whichever comes first.
	ctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(s.done, cancel)
	release := func() { unhook(); cancel() }
	sub := s.c.Subscribe(ctx, s.chPrefix+key)
	// Closing the subscription when ctx ends unblocks Receive below and,
	// later, ends the message pump.
	stop := context.AfterFunc(ctx, func() { _ = sub.Close() })
	msg, err := sub.Receive(ctx)
	if err == nil {
		if _, ok := msg.(*redis.Subscription); !ok {
			err = fmt.Errorf("unexpected reply %T to SUBSCRIBE", msg)
		}
	}
	if err != nil {
		if stop() {
			_ = sub.Close()
		}
		if s.closed.Load() {
			err = store.ErrClosed
		} else if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		release()
		return nil, opErr("watch", key, err)
	}
	in := sub.ChannelWithSubscriptions()
	out := make(chan struct{}, 1)
	go func() {
		defer release()
		defer close(out)
		// Drain until go-redis closes in, after sub.Close: its pump
		// must not stay blocked on a full channel.
		for range in {
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, nil
}

// lease is a lease on one key, identified by its random owner value.
type lease struct {
	s       *Store
	key     string
	lockKey string
	owner   string
}

// Unlock releases the lease only while Redis still holds this lease's owner
// value under the lock key (a Lua compare-then-delete). Releasing a lease
// that expired, was taken over or was already released returns nil.
func (l *lease) Unlock(ctx context.Context) error {
	if err := l.s.begin(ctx, "unlock", l.key); err != nil {
		return err
	}
	if err := unlockScript.Run(ctx, l.s.c, []string{l.lockKey}, l.owner).Err(); err != nil {
		return opErr("unlock", l.key, err)
	}
	return nil
}

// Extend sets the lease's remaining time to ttl (rounded up to a whole
// millisecond) while it is still ours, or returns an error matching
// store.ErrLeaseLost.
func (l *lease) Extend(ctx context.Context, ttl time.Duration) error {
	if err := l.s.begin(ctx, "extend", l.key); err != nil {
		return err
	}
	if ttl <= 0 {
		return opErr("extend", l.key, fmt.Errorf("ttl %v must be positive", ttl))
	}
	n, err := extendScript.Run(ctx, l.s.c, []string{l.lockKey}, l.owner, ceilMillis(ttl)).Int64()
	if err != nil {
		return opErr("extend", l.key, err)
	}
	if n != 1 {
		return opErr("extend", l.key, store.ErrLeaseLost)
	}
	return nil
}

// ceilMillis rounds d up to whole milliseconds, at least one.
func ceilMillis(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms < 1 {
		ms = 1
	}
	return ms
}
