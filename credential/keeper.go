package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// Source yields a valid credential with its expiry. Keeper implements it;
// so can adapters and test doubles. Unlike oauth2.TokenSource it takes a
// context: a call may have to wait for another node's grant.
type Source interface {
	Get(ctx context.Context) (store.Item, error)
}

// Invalidator is a Source that can be told that WeChat rejected a value it
// gave (see Keeper.Invalidate). Do and Transport use it when the Source has
// it.
type Invalidator interface {
	Source
	Invalidate(ctx context.Context, rejected string) (store.Item, error)
}

// GrantFunc asks WeChat for a new credential. It returns the item (value
// and the moment WeChat stops accepting it) and, optionally, WeChat's
// decoded answer, which Keeper.Grant hands back to its caller.
type GrantFunc func(ctx context.Context, r Request) (Grant, error)

// Request says why a grant is asked for.
type Request struct {
	// Rejected, when not empty, is the value WeChat refused; the grant
	// replaces it (a grant that answers with it again may force one).
	Rejected string
	// Forced: an explicit Keeper.Grant call.
	Forced bool
	// Leaseless: the store failed and this process holds no lease. Grant
	// only what harms no other node's credential (the Official Account's
	// stable token without force_refresh, a WeCom token, which a repeat
	// call returns unchanged), or return an error.
	Leaseless bool
}

// Grant is what a GrantFunc got from WeChat.
type Grant struct {
	Item store.Item
	// Raw is WeChat's decoded answer, for Keeper.Grant's caller; the
	// engine never looks at it.
	Raw any
}

// Policy is the part of the engine's behaviour that is a choice; the zero
// value of each field takes the default named beside it. One Policy is
// usually shared by every Keeper of a process.
type Policy struct {
	// Margin: a credential is refreshed this long before its expiry
	// (DefaultMargin).
	Margin time.Duration
	// Reread: a fresh local copy is re-read from the store this often, to
	// notice grants made elsewhere (DefaultReread). Each key is re-read at
	// a phase of its own within the interval (a hash of the key), so that
	// many credentials loaded together do not all re-read at once; the
	// first re-read after a load may therefore come sooner.
	Reread time.Duration
	// LeaseTTL: how long the store's lease lasts, counted from Lock
	// (DefaultLeaseTTL).
	LeaseTTL time.Duration
	// MaxWait bounds the wait for another node's grant, or longer while
	// that node still holds its lease (2 × LeaseTTL).
	MaxWait time.Duration
	// StoreTimeout bounds each store call (DefaultStoreTimeout).
	StoreTimeout time.Duration
	// GrantTimeout bounds a grant made without the lease, and with
	// MaxWait and LeaseTTL a whole refresh (DefaultGrantTimeout).
	GrantTimeout time.Duration
	// ForcedInterval is the least time between two forced refreshes of one
	// credential across the cluster (DefaultForcedInterval); negative
	// turns the limit off.
	ForcedInterval time.Duration
	// Spread is the part of the margin over which refresh points are
	// spread (DefaultSpread); negative turns spreading off.
	Spread float64
	// Invalid reports whether an error of a call made with the credential
	// means WeChat rejected it (refresh it, compare-then-refresh, and try
	// once more). Nil: nothing is taken for a rejection.
	Invalid func(error) bool
	// Fatal reports whether a grant's error can only be mended by a
	// person (a wrong secret, an unknown app id): such an error is logged
	// once at error level and returned to callers without asking WeChat
	// again for FatalBackoff.
	Fatal func(error) bool
}

// Defaults of Policy.
const (
	DefaultMargin         = 3 * time.Minute
	DefaultReread         = time.Minute
	DefaultLeaseTTL       = 30 * time.Second
	DefaultStoreTimeout   = 2 * time.Second
	DefaultGrantTimeout   = 10 * time.Second
	DefaultForcedInterval = 30 * time.Second
	DefaultSpread         = 1.0 / 3
	// FatalBackoff is how long a fatal grant error is returned without
	// asking WeChat again.
	FatalBackoff = time.Minute
)

// withDefaults fills the zero fields.
func (p Policy) withDefaults() Policy {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&p.Margin, DefaultMargin)
	def(&p.Reread, DefaultReread)
	def(&p.LeaseTTL, DefaultLeaseTTL)
	def(&p.MaxWait, 2*p.LeaseTTL)
	def(&p.StoreTimeout, DefaultStoreTimeout)
	def(&p.GrantTimeout, DefaultGrantTimeout)
	def(&p.ForcedInterval, DefaultForcedInterval)
	if p.Spread == 0 {
		p.Spread = DefaultSpread
	}
	return p
}

func (p Policy) validate() error {
	switch {
	case p.Margin < 0:
		return fmt.Errorf("credential: Policy.Margin is negative (%v)", p.Margin)
	case p.Reread < 0, p.MaxWait < 0, p.StoreTimeout < 0, p.GrantTimeout < 0:
		return errors.New("credential: Policy durations must not be negative")
	case p.LeaseTTL < 0 || (p.LeaseTTL > 0 && p.LeaseTTL < time.Second):
		return fmt.Errorf("credential: Policy.LeaseTTL %v is under one second", p.LeaseTTL)
	case p.Spread > 1:
		return fmt.Errorf("credential: Policy.Spread %v is more than the whole margin", p.Spread)
	}
	return nil
}

// Config describes one credential.
type Config struct {
	// Name names the credential in errors, events and logs, e.g.
	// "access_token". Required.
	Name string
	// Key is the store key, e.g. "{wx123}:access_token"; the braces keep
	// one app's keys in one Redis Cluster hash slot. Required.
	Key string
	// Store is shared by every node. Required.
	Store store.Store
	// Grant asks WeChat for a new credential. Nil: this node never grants
	// (a refresh-only business node); it waits for the store, or Fetch.
	Grant GrantFunc
	// Check, when not nil, is called before a grant would be made and its
	// error returned instead (the seed's NeedParamError: no AppSecret).
	Check func() error
	// Fetch, when not nil, gets the credential from somewhere other than
	// WeChat (the seed's refreshfunc): it replaces Grant.
	Fetch func(ctx context.Context) (store.Item, error)
	// Invalidate, when not nil, is Fetch for a refresh that replaces a
	// value WeChat rejected (Keeper.Invalidate, Do, Transport): it is told
	// the rejected value, so that the source (a token server) can refresh
	// compare-then-refresh on its side. It needs Fetch. Nil: such a
	// refresh calls Fetch, which cannot know of the rejection.
	Invalidate func(ctx context.Context, rejected string) (store.Item, error)
	// Policy is the behaviour shared by the process's Keepers.
	Policy Policy
	// Observer is called for every Event, synchronously: keep it fast.
	Observer func(Event)
	// Logger receives the events too (warnings for errors); nil: silent.
	Logger *slog.Logger
	// LogAttrs are added to every log record (an app id, say).
	LogAttrs []slog.Attr
}

// Keeper keeps one credential valid. Create it with New; Close it when
// done. It is safe for concurrent use.
type Keeper struct {
	name  string
	key   string
	store store.Store
	grant GrantFunc
	check func() error
	fetch func(ctx context.Context) (store.Item, error)
	inval func(ctx context.Context, rejected string) (store.Item, error)
	pol   Policy
	obs   func(Event)
	log   *slog.Logger
	attrs []slog.Attr

	cur atomic.Pointer[cached]
	fl  atomic.Pointer[flight]

	// What the limits of limits.go remember, made on first use: most
	// Keepers never need it, and a process may hold thousands.
	lim         atomic.Pointer[limitState]
	forcedUntil atomic.Int64 // Unix ns: no forced refresh before, as last learned

	closed atomic.Bool
	done   chan struct{} // closed by Close: ends every wait
	once   sync.Once
	flMu   sync.Mutex     // orders wg.Add before Close's wg.Wait
	wg     sync.WaitGroup // flights and Grant calls in progress
}

// New returns a Keeper for cfg. It starts no goroutine.
func New(cfg Config) (*Keeper, error) {
	switch {
	case cfg.Name == "":
		return nil, errors.New("credential: Config.Name is empty")
	case cfg.Key == "":
		return nil, fmt.Errorf("credential: %s: Config.Key is empty", cfg.Name)
	case cfg.Store == nil:
		return nil, fmt.Errorf("credential: %s: Config.Store is nil", cfg.Name)
	case cfg.Invalidate != nil && cfg.Fetch == nil:
		return nil, fmt.Errorf("credential: %s: Config.Invalidate needs Config.Fetch", cfg.Name)
	}
	if err := cfg.Policy.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{
		name: cfg.Name, key: cfg.Key, store: cfg.Store,
		grant: cfg.Grant, check: cfg.Check, fetch: cfg.Fetch, inval: cfg.Invalidate,
		pol: cfg.Policy.withDefaults(), obs: cfg.Observer, log: log, attrs: cfg.LogAttrs,
		done: make(chan struct{}),
	}, nil
}

// Name returns the credential's name (Config.Name).
func (k *Keeper) Name() string { return k.name }

// Key returns the credential's store key (Config.Key).
func (k *Keeper) Key() string { return k.key }

// Policy returns the Keeper's policy, defaults filled in.
func (k *Keeper) Policy() Policy { return k.pol }

// now is the engine's clock. Tests move it with testing/synctest.
func (k *Keeper) now() time.Time { return time.Now() }

const (
	// expirySafety: a copy this close to its expiry is not served, even
	// while a refresh runs or the store is down; the call might reach
	// WeChat after it died.
	expirySafety = 10 * time.Second
	// retryAfterFailure: how soon a refresh is tried again after one
	// failed (store down, WeChat failing) while a valid copy is served.
	retryAfterFailure = 5 * time.Second
	// Poll backoff while another node holds the lease (a Watcher wakes the
	// waiter sooner).
	pollMin = 20 * time.Millisecond
	pollMax = 500 * time.Millisecond
)

// cached is a local copy of a credential. It is never modified after it is
// published; a change publishes a new one.
type cached struct {
	item     store.Item
	staleAt  time.Time // refresh from here on
	rereadAt time.Time // re-read the store from here on
	due      atomic.Bool
	timer    *time.Timer // sets due at min(staleAt, rereadAt)
}

// arm sets due now or schedules it for the earlier of staleAt and rereadAt.
// The timer holds no goroutine while it waits.
func (p *cached) arm(now time.Time) {
	d := min(p.staleAt.Sub(now), p.rereadAt.Sub(now))
	if d <= 0 {
		p.due.Store(true)
		return
	}
	p.timer = time.AfterFunc(d, func() { p.due.Store(true) })
}

func (p *cached) stopTimer() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// fresh reports whether p needs neither a refresh nor a re-read at now.
func (p *cached) fresh(now time.Time) bool {
	return now.Before(p.staleAt) && now.Before(p.rereadAt)
}

// valid reports whether item may still be handed out at now: WeChat accepts
// it for longer than expirySafety.
func valid(item store.Item, now time.Time) bool {
	return item.Value != "" && now.Before(item.ExpiresAt.Add(-expirySafety))
}

// flight is one refresh in progress. done is closed when it ends; item and
// err are set before that.
type flight struct {
	done     chan struct{}
	rejected string
	item     store.Item
	err      error
}

// Get returns a valid credential with its expiry, granting or loading one
// if needed. When the local copy is fresh it costs no lock, no allocation
// and no I/O.
func (k *Keeper) Get(ctx context.Context) (store.Item, error) {
	if item, ok := k.Fresh(); ok {
		return *item, nil
	}
	return k.slow(ctx, "")
}

// Fresh returns the local copy if it needs neither a refresh nor a re-read:
// Get's hot path alone, three atomic loads, for faces that wrap a Keeper.
// It is nil-safe: a nil Keeper has nothing fresh.
func (k *Keeper) Fresh() (*store.Item, bool) {
	if k == nil {
		return nil, false
	}
	if p := k.cur.Load(); p != nil && !p.due.Load() && !k.closed.Load() {
		return &p.item, true
	}
	return nil, false
}

// Invalidate reports that WeChat rejected value and returns a valid
// replacement. It is compare-then-refresh: under the store's lease, a new
// credential is granted only if the store still holds the rejected one; if
// another node already replaced it, theirs is used. Concurrent reports of
// one value make one refresh. A refresh it would force sooner than
// Policy.ForcedInterval after the last one anywhere in the cluster fails
// with ErrRefreshLimited.
func (k *Keeper) Invalidate(ctx context.Context, value string) (store.Item, error) {
	if value == "" {
		return store.Item{}, fmt.Errorf("credential: %s: Invalidate: empty value", k.name)
	}
	k.noteRejected(value)
	return k.slow(ctx, value)
}

// slow makes sure a flight is under way and serves the local copy while it
// is valid; with no valid copy it waits for the flight or ctx. rejected,
// when not empty, is a value WeChat refused: it is never returned.
func (k *Keeper) slow(ctx context.Context, rejected string) (store.Item, error) {
	for {
		if k.closed.Load() {
			return store.Item{}, ErrClosed
		}
		p := k.prev(rejected)
		now := k.now()
		if p != nil && p.fresh(now) {
			return p.item, nil // the timer has not fired yet
		}
		f, err := k.start(ctx, rejected)
		if err != nil {
			return store.Item{}, err
		}
		if p != nil && valid(p.item, now) {
			return p.item, nil // stale while revalidating
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return store.Item{}, ctx.Err()
		case <-k.done:
			return store.Item{}, ErrClosed
		}
		switch {
		case f.err != nil:
			return store.Item{}, f.err
		case rejected != "" && f.item.Value == rejected && f.rejected != rejected:
			continue // that flight did not know of our rejection
		}
		return f.item, nil
	}
}

// start returns the flight in progress, or starts one on a goroutine of its
// own. The flight keeps ctx's values (for tracing) but not its deadline or
// cancellation: it is bounded by refreshTimeout and by Close.
func (k *Keeper) start(ctx context.Context, rejected string) (*flight, error) {
	if f := k.fl.Load(); f != nil {
		return f, nil
	}
	k.flMu.Lock()
	defer k.flMu.Unlock()
	if k.closed.Load() {
		return nil, ErrClosed
	}
	if f := k.fl.Load(); f != nil {
		return f, nil
	}
	f := &flight{done: make(chan struct{}), rejected: rejected}
	k.fl.Store(f)
	k.wg.Add(1)
	go k.run(context.WithoutCancel(ctx), f)
	return f, nil
}

// run is a flight's goroutine.
func (k *Keeper) run(base context.Context, f *flight) {
	defer k.wg.Done()
	ctx, cancel := context.WithTimeout(base, k.refreshTimeout())
	stop := context.AfterFunc(closedContext{k.done}, cancel)
	item, _, err := k.refresh(ctx, f.rejected)
	stop()
	cancel()
	if err != nil {
		if k.closed.Load() {
			err = ErrClosed
		} else {
			k.holdAfterFailure(f.rejected)
		}
	}
	f.item, f.err = item, err
	k.fl.CompareAndSwap(f, nil)
	close(f.done)
}

// refreshTimeout bounds a whole flight: waiting for another node, then one
// grant of our own, with a few store calls around it.
func (k *Keeper) refreshTimeout() time.Duration {
	return k.pol.MaxWait + max(k.pol.LeaseTTL, k.pol.GrantTimeout) + 4*k.pol.StoreTimeout
}

// enter registers work that Close must wait for; it fails once Close has
// begun.
func (k *Keeper) enter() bool {
	k.flMu.Lock()
	defer k.flMu.Unlock()
	if k.closed.Load() {
		return false
	}
	k.wg.Add(1)
	return true
}

// bind returns a context that also ends when the Keeper is closed.
func (k *Keeper) bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(closedContext{k.done}, cancel)
	return ctx, func() { stop(); cancel() }
}

// closedContext is a context that is done when ch is closed; it lets
// context.AfterFunc watch Close without a goroutine of our own.
type closedContext struct{ ch chan struct{} }

func (closedContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c closedContext) Done() <-chan struct{}     { return c.ch }
func (c closedContext) Err() error {
	select {
	case <-c.ch:
		return context.Canceled
	default:
		return nil
	}
}
func (closedContext) Value(any) any { return nil }

// Close ends every wait in progress and makes further calls fail with
// ErrClosed. It waits for the refreshes in flight to end (they are
// cancelled) and for their store leases to be released, so the store may
// be closed as soon as Close returns. It does not close the store. Close is
// idempotent.
func (k *Keeper) Close() error {
	k.once.Do(func() {
		k.flMu.Lock()
		k.closed.Store(true)
		k.flMu.Unlock()
		close(k.done)
		if p := k.cur.Load(); p != nil {
			p.stopTimer()
		}
	})
	k.wg.Wait()
	return nil
}

// keep publishes item as the local copy. A copy this node just granted is
// held for at least half its remaining life, so that a grant answering with
// less time than the margin (a stable token near its roll-over) does not
// start a grant loop.
func (k *Keeper) keep(item store.Item, granted bool) {
	now := k.now()
	k.publish(k.copyOf(item, granted, now), now)
}

// copyOf makes the local copy keep publishes, unarmed.
func (k *Keeper) copyOf(item store.Item, granted bool, now time.Time) *cached {
	p := &cached{item: item, staleAt: k.staleAt(item), rereadAt: k.rereadAt(now)}
	if granted {
		if hold := now.Add(item.ExpiresAt.Sub(now) / 2); p.staleAt.Before(hold) {
			p.staleAt = hold
		}
	}
	return p
}

// rereadAt is when a copy loaded at now is next re-read from the store: at
// the key's own phase of the Reread cycle (a hash of the key picks it), the
// first such instant after now. A copy is thus re-read at most Reread after
// it was loaded, and copies loaded together (a process starting with many
// credentials) spread their re-reads over the whole cycle instead of all
// coming due in the same instant, every Reread.
func (k *Keeper) rereadAt(now time.Time) time.Time {
	r := int64(k.pol.Reread)
	if r <= 0 {
		return now
	}
	off := now.UnixNano() % r
	if off < 0 {
		off += r
	}
	d := int64(hash64(k.key)%uint64(r)) - off
	if d <= 0 {
		d += r
	}
	return now.Add(time.Duration(d))
}

// hash64 is FNV-1a of s, without the allocation of hash/fnv's interface.
func hash64(s string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

// staleAt is item's refresh point: its expiry less the margin, moved later
// by a part of Policy.Spread × margin that a hash of the value picks, so
// that every node agrees on it and credentials granted together spread out.
func (k *Keeper) staleAt(item store.Item) time.Time {
	at := item.ExpiresAt.Add(-k.pol.Margin)
	if k.pol.Spread <= 0 || k.pol.Margin <= 0 {
		return at
	}
	window := uint64(float64(k.pol.Margin) * k.pol.Spread)
	if window == 0 {
		return at
	}
	return at.Add(time.Duration(hash64(item.Value) % window))
}

// hold republishes p's item so that it is served without a refresh until
// retry (never past its expiry less expirySafety): the copy a node keeps
// serving while the store or WeChat fails.
func (k *Keeper) hold(p *cached, now time.Time, retry time.Duration) {
	np := &cached{item: p.item, staleAt: p.staleAt, rereadAt: now.Add(min(retry, k.pol.Reread))}
	if !now.Before(np.staleAt) {
		np.staleAt = now.Add(retry)
	}
	if last := p.item.ExpiresAt.Add(-expirySafety); np.staleAt.After(last) {
		np.staleAt = last
	}
	k.publish(np, now)
}

// holdAfterFailure keeps serving the local copy, if it is still valid, for
// retryAfterFailure after a failed refresh, instead of starting another
// refresh on every call.
func (k *Keeper) holdAfterFailure(rejected string) {
	now := k.now()
	if p := k.prev(rejected); p != nil && valid(p.item, now) {
		k.hold(p, now, retryAfterFailure)
	}
}

// prev returns the local copy unless it is the rejected value.
func (k *Keeper) prev(rejected string) *cached {
	p := k.cur.Load()
	if p == nil || (rejected != "" && p.item.Value == rejected) || k.wasRejected(p.item.Value) {
		return nil
	}
	return p
}

// publish arms p and makes it the local copy, stopping its predecessor's
// timer. After Close nothing is armed.
func (k *Keeper) publish(p *cached, now time.Time) {
	if k.closed.Load() {
		p.due.Store(true)
	} else {
		p.arm(now)
	}
	if old := k.cur.Swap(p); old != nil {
		old.stopTimer()
	}
}

// usable reports whether item can be handed out now without a refresh:
// before its refresh point (every node computes the same one) and not the
// rejected value.
func (k *Keeper) usable(item store.Item, rejected string) bool {
	return item.Value != "" && k.now().Before(k.staleAt(item)) && (rejected == "" || item.Value != rejected) && !k.wasRejected(item.Value)
}

// rejectedMemory is how many values WeChat rejected a Keeper remembers.
const rejectedMemory = 4

// noteRejected remembers that WeChat rejected value: it is never served
// again from the store. Newer-wins alone cannot promise that: expiries are
// counted from whole-second lifetimes, so a replacement may look older than
// the value it replaced, and a store that keeps the older-looking one would
// hand a dead credential back at the next read.
func (k *Keeper) noteRejected(value string) {
	l := k.limits()
	l.rejMu.Lock()
	defer l.rejMu.Unlock()
	for _, v := range l.rejected {
		if v == value {
			return
		}
	}
	l.rejected[l.rejNext] = value
	l.rejNext = (l.rejNext + 1) % rejectedMemory
}

// forgetRejected drops value from the rejected ones: the grant endpoint
// says it is current.
func (k *Keeper) forgetRejected(value string) {
	l := k.lim.Load()
	if l == nil {
		return
	}
	l.rejMu.Lock()
	defer l.rejMu.Unlock()
	for i, v := range l.rejected {
		if v == value {
			l.rejected[i] = ""
		}
	}
}

// isRejected reports whether value is rejected, or was rejected lately.
func (k *Keeper) isRejected(value, rejected string) bool {
	return value == rejected || k.wasRejected(value)
}

// wasRejected reports whether WeChat rejected value lately.
func (k *Keeper) wasRejected(value string) bool {
	l := k.lim.Load()
	if l == nil {
		return false // nothing was ever rejected
	}
	l.rejMu.Lock()
	defer l.rejMu.Unlock()
	for _, v := range l.rejected {
		if v != "" && v == value {
			return true
		}
	}
	return false
}
