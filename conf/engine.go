package conf

// The refresh engine. One cred per credential kind; see the package doc for
// the steps. The invariants it keeps:
//   - The hot path (cred.get) is four atomic loads: no lock, no allocation,
//     no I/O, and no clock read (on virtual machines time.Now alone can
//     cost 200 ns). A timer marks each local copy stale when it is due for
//     a refresh or a re-read; the slow path checks times directly.
//   - At most one goroutine per cred per process works on a refresh (the
//     flight); the others wait for it, or keep serving a copy that is still
//     within its margin while it re-reads the store.
//   - A grant happens only under the store's lease, after a second read of
//     the store, except when the store itself is down and no usable copy is
//     left: then once per cycle without it (the quota guard).
//   - A store error is never taken for a miss.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

const (
	// expirySafety: a copy this close to its expiry is not served even
	// during a store outage; the call might reach WeChat after it died.
	expirySafety = 10 * time.Second
	// outageRetry: how soon the store is tried again after it failed
	// while a usable copy was served.
	outageRetry = 5 * time.Second
	// Poll backoff while another node holds the lease (a Watcher wakes the
	// waiter sooner).
	pollMin = 20 * time.Millisecond
	pollMax = 500 * time.Millisecond
)

// cached is a local copy of a credential. It is never modified after it is
// published; a change publishes a new one.
type cached struct {
	item     store.Item
	gen      uint64    // the settings generation (app) it belongs to
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

// flight is one refresh in progress; done is closed when it ends.
type flight struct {
	done chan struct{}
	err  error
}

// cred keeps one kind of credential.
type cred struct {
	kind Kind
	c    *Conf
	cur  atomic.Pointer[cached]

	mu sync.Mutex
	fl *flight
}

// get is the hot path: a fresh local copy, or the slow path.
func (cr *cred) get(ctx context.Context) (store.Item, error) {
	if p := cr.cur.Load(); p != nil && !p.due.Load() && p.gen == cr.c.settings.Load().gen && !cr.c.closed.Load() {
		return p.item, nil
	}
	return cr.slow(ctx, "")
}

// local returns the local copy if it belongs to generation gen, is within
// its margin and is not the rejected value. With reread, the copy must also
// not be due for a re-read.
func (cr *cred) local(gen uint64, rejected string, reread bool) (store.Item, bool) {
	p := cr.prev(gen, rejected)
	if p == nil {
		return store.Item{}, false
	}
	now := cr.c.now()
	if !now.Before(p.staleAt) || (reread && !now.Before(p.rereadAt)) {
		return store.Item{}, false
	}
	return p.item, true
}

// slow makes sure one goroutine refreshes while the others wait or, when
// their copy is merely due for a re-read, go on with it. rejected, when not
// empty, is a value WeChat refused: it is never returned.
func (cr *cred) slow(ctx context.Context, rejected string) (store.Item, error) {
	c := cr.c
	for {
		if c.closed.Load() {
			return store.Item{}, ErrClosed
		}
		s := c.settings.Load()
		if item, ok := cr.local(s.gen, rejected, true); ok {
			return item, nil
		}
		cr.mu.Lock()
		if f := cr.fl; f != nil {
			cr.mu.Unlock()
			// Someone is refreshing. A copy still within its margin
			// is good while they re-read the store.
			if item, ok := cr.local(s.gen, rejected, false); ok {
				return item, nil
			}
			select {
			case <-f.done:
				if f.err != nil && !isContextErr(f.err) {
					return store.Item{}, f.err
				}
				continue // look again; lead if the leader's ctx ended
			case <-ctx.Done():
				return store.Item{}, ctx.Err()
			case <-c.done:
				return store.Item{}, ErrClosed
			}
		}
		f := &flight{done: make(chan struct{})}
		cr.fl = f
		cr.mu.Unlock()

		item, err := cr.lead(ctx, s, rejected)
		f.err = err
		cr.mu.Lock()
		cr.fl = nil
		cr.mu.Unlock()
		close(f.done)
		if err == nil && c.settings.Load().gen != s.gen {
			continue // the app changed meanwhile: never serve the old one
		}
		return item, err
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// bind returns a context that also ends when the Conf is closed.
func (c *Conf) bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(closedContext{c.done}, cancel)
	return ctx, func() { stop(); cancel() }
}

// lead runs the refresh, bound to the Conf's lifetime.
func (cr *cred) lead(ctx context.Context, s *settings, rejected string) (store.Item, error) {
	ctx, done := cr.c.bind(ctx)
	defer done()
	item, err := cr.refresh(ctx, s, rejected)
	if err != nil && cr.c.closed.Load() {
		return store.Item{}, ErrClosed
	}
	return item, err
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

// keep publishes item as the local copy. A copy this node just granted is
// held for at least half its remaining life, so that a grant answering with
// less time than the margin (a stable token near its roll-over) does not
// start a grant loop.
func (cr *cred) keep(item store.Item, gen uint64, granted bool) {
	now := cr.c.now()
	cr.publish(cr.copyOf(item, gen, granted, now), now)
}

// copyOf makes the local copy keep publishes, unarmed.
func (cr *cred) copyOf(item store.Item, gen uint64, granted bool, now time.Time) *cached {
	c := cr.c
	p := &cached{item: item, gen: gen, staleAt: item.ExpiresAt.Add(-c.cfg.margin), rereadAt: now.Add(c.cfg.reread)}
	if granted {
		if hold := now.Add(item.ExpiresAt.Sub(now) / 2); p.staleAt.Before(hold) {
			p.staleAt = hold
		}
	}
	return p
}

// prev returns the local copy if it belongs to generation gen and is not
// the rejected value: the copy an outage may keep serving.
func (cr *cred) prev(gen uint64, rejected string) *cached {
	p := cr.cur.Load()
	if p == nil || p.gen != gen || (rejected != "" && p.item.Value == rejected) {
		return nil
	}
	return p
}

// publish arms p and makes it the local copy, stopping its predecessor's
// timer. After Close nothing is armed.
func (cr *cred) publish(p *cached, now time.Time) {
	if cr.c.closed.Load() {
		p.due.Store(true)
	} else {
		p.arm(now)
	}
	if old := cr.cur.Swap(p); old != nil {
		old.stopTimer()
	}
}

// usable reports whether item can be handed out now: within its margin and
// not the rejected value.
func (cr *cred) usable(item store.Item, rejected string) bool {
	return item.Fresh(cr.c.now(), cr.c.cfg.margin) && (rejected == "" || item.Value != rejected)
}

// refresh is steps 3 to 5 of the engine for one kind.
func (cr *cred) refresh(ctx context.Context, s *settings, rejected string) (store.Item, error) {
	c := cr.c
	if s.appID == "" {
		return store.Item{}, fmt.Errorf("%w: %s needs an AppID (WithAppID)", ErrNeedParam, cr.kind)
	}
	key := Key(s.appID, cr.kind)
	prev := cr.prev(s.gen, rejected)
	if rejected != "" {
		c.emit(Event{Type: EventInvalidated, Kind: cr.kind})
	}

	item, err := c.cfg.store.Get(ctx, key)
	switch {
	case err == nil && cr.usable(item, rejected):
		if prev != nil && prev.item.Value != item.Value && prev.item.Newer(item) {
			// Ours is newer (granted while the store was down, or
			// seeded): put it back so that every node converges.
			return cr.putBack(ctx, key, prev, s.gen), nil
		}
		if prev == nil || prev.item.Value != item.Value {
			c.emit(Event{Type: EventLoaded, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
		}
		cr.keep(item, s.gen, false)
		return item, nil
	case err == nil || errors.Is(err, store.ErrNotFound):
		if errors.Is(err, store.ErrNotFound) && prev != nil && cr.usable(prev.item, rejected) {
			// The store lost it (eviction, restart): ours is still good.
			return cr.putBack(ctx, key, prev, s.gen), nil
		}
	case isContextErr(err):
		return store.Item{}, err
	default:
		c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
		return cr.outage(ctx, s, prev, rejected, err)
	}
	return cr.obtain(ctx, s, key, rejected, false)
}

// putBack writes the local copy back to the store and keeps serving it.
func (cr *cred) putBack(ctx context.Context, key string, prev *cached, gen uint64) store.Item {
	if err := cr.c.cfg.store.Set(ctx, key, prev.item); err != nil && !isContextErr(err) {
		cr.c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
	}
	cr.keep(prev.item, gen, false)
	return prev.item
}

// outage handles a store that failed. prev (see cred.prev) is the local
// copy, or nil. A local copy that is still valid is
// served (even past its margin) and the store is tried again soon. With no
// usable copy the node grants once without the lease: that copy then serves
// the whole cycle, so an outage costs at most one grant per cycle per
// process.
func (cr *cred) outage(ctx context.Context, s *settings, prev *cached, rejected string, storeErr error) (store.Item, error) {
	c := cr.c
	now := c.now()
	if prev != nil && now.Before(prev.item.ExpiresAt.Add(-expirySafety)) {
		p := &cached{item: prev.item, gen: s.gen, staleAt: prev.item.ExpiresAt.Add(-expirySafety), rereadAt: now.Add(min(outageRetry, c.cfg.reread))}
		if prev.staleAt.After(p.staleAt) {
			p.staleAt = prev.staleAt
		}
		cr.publish(p, now)
		return prev.item, nil
	}
	if fn := c.cfg.refresh[cr.kind]; fn != nil {
		return cr.fromFunc(ctx, s, Key(s.appID, cr.kind), fn, rejected)
	}
	if c.cfg.refreshOnly {
		return store.Item{}, fmt.Errorf("%w: %s: store failed and this node never grants: %w", ErrUnavailable, cr.kind, storeErr)
	}
	item, _, err := cr.grant(ctx, s, rejected, false)
	if err != nil {
		return store.Item{}, fmt.Errorf("%w (granting without the store, which failed: %v)", err, storeErr)
	}
	p := cr.copyOf(item, s.gen, true, now)
	p.rereadAt = now.Add(min(outageRetry, c.cfg.reread))
	cr.publish(p, now)
	_ = c.cfg.store.Set(ctx, Key(s.appID, cr.kind), item) // best effort: it just failed
	return item, nil
}

// fromFunc takes the credential from the user's refresh function.
func (cr *cred) fromFunc(ctx context.Context, s *settings, key string, fn RefreshFunc, rejected string) (store.Item, error) {
	c := cr.c
	item, err := fn(ctx)
	if err != nil {
		return store.Item{}, fmt.Errorf("conf: %s refresh function: %w", cr.kind, err)
	}
	if !item.Fresh(c.now(), 0) || (rejected != "" && item.Value == rejected) {
		return store.Item{}, fmt.Errorf("%w: %s refresh function returned %v, which is expired or the rejected one", ErrUnavailable, cr.kind, item)
	}
	if err := c.cfg.store.Set(ctx, key, item); err != nil && !isContextErr(err) {
		c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
	}
	c.emit(Event{Type: EventLoaded, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
	cr.keep(item, s.gen, true)
	return item, nil
}

// obtain gets a new credential: from the refresh function, by waiting for
// the store (refresh-only), or by a grant under the lease. With force it
// grants even if the store holds a fresh item (GrantAccessToken and
// friends), and returns WeChat's decoded answer.
func (cr *cred) obtain(ctx context.Context, s *settings, key, rejected string, force bool) (store.Item, error) {
	item, _, err := cr.obtainRaw(ctx, s, key, rejected, force)
	return item, err
}

func (cr *cred) obtainRaw(ctx context.Context, s *settings, key, rejected string, force bool) (store.Item, any, error) {
	c := cr.c
	fn := c.cfg.refresh[cr.kind]
	if fn != nil && !force {
		item, err := cr.fromFunc(ctx, s, key, fn, rejected)
		return item, nil, err
	}
	grants := fn == nil && !c.cfg.refreshOnly
	if !grants && force {
		return store.Item{}, nil, fmt.Errorf("conf: %s: this node is refresh-only and never grants", cr.kind)
	}
	if grants {
		if err := cr.canGrant(s); err != nil {
			return store.Item{}, nil, err
		}
	}

	// Waiting for another node is bounded by ctx, or by maxWait when
	// ctx has no deadline.
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		wctx, cancel = context.WithTimeout(ctx, c.cfg.maxWait)
	}
	defer cancel()
	// The watch is opened only once someone else turns out to hold the
	// lease: the usual refresh takes the lease at once and needs none.
	var notify <-chan struct{}
	watched := false
	start := time.Now()
	backoff := pollMin
	for {
		if grants {
			lease, err := c.cfg.store.Lock(wctx, key, c.cfg.leaseTTL)
			if err == nil {
				if waited := time.Since(start); waited > pollMin {
					c.emit(Event{Type: EventLeaseWaited, Kind: cr.kind, Wait: waited})
				}
				return cr.underLease(ctx, s, key, lease, rejected, force)
			}
			if !errors.Is(err, store.ErrLocked) {
				if e := cr.waitErr(ctx, wctx); e != nil {
					return store.Item{}, nil, e
				}
				c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
				item, err := cr.outage(ctx, s, cr.prev(s.gen, rejected), rejected, err)
				return item, nil, err
			}
		}
		// Someone else grants: wait for their item. Right after the
		// watch opens, read at once: the item may have been set before.
		if !watched {
			watched = true
			if w, ok := c.cfg.store.(store.Watcher); ok {
				if ch, err := w.Watch(wctx, key); err == nil {
					notify = ch
				}
			}
		} else {
			t := time.NewTimer(backoff)
			select {
			case _, ok := <-notify:
				if !ok {
					notify = nil
				}
			case <-t.C:
			case <-wctx.Done():
			}
			t.Stop()
			backoff = min(2*backoff, pollMax)
		}
		if e := cr.waitErr(ctx, wctx); e != nil {
			return store.Item{}, nil, e
		}
		item, err := c.cfg.store.Get(wctx, key)
		switch {
		case err == nil && cr.usable(item, rejected) && !force:
			c.emit(Event{Type: EventLeaseWaited, Kind: cr.kind, Wait: time.Since(start), ExpiresAt: item.ExpiresAt})
			cr.keep(item, s.gen, false)
			return item, nil, nil
		case err == nil || errors.Is(err, store.ErrNotFound):
		default:
			if e := cr.waitErr(ctx, wctx); e != nil {
				return store.Item{}, nil, e
			}
			c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
			if !grants {
				continue // keep polling until the wait bound
			}
			item, err := cr.outage(ctx, s, cr.prev(s.gen, rejected), rejected, err)
			return item, nil, err
		}
	}
}

// waitErr turns the end of a wait into the error to return, or nil while
// waiting may go on.
func (cr *cred) waitErr(ctx, wctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if wctx.Err() != nil {
		return fmt.Errorf("%w: %s: no fresh item after waiting %v for another node", ErrUnavailable, cr.kind, cr.c.cfg.maxWait)
	}
	return nil
}

// underLease is step 4 with the lease held: read again, grant only if still
// needed, store the grant, release.
func (cr *cred) underLease(ctx context.Context, s *settings, key string, lease store.Lease, rejected string, force bool) (store.Item, any, error) {
	c := cr.c
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Unlock(uctx); err != nil {
			c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
		}
	}()
	if !force {
		item, err := c.cfg.store.Get(ctx, key)
		switch {
		case err == nil && cr.usable(item, rejected):
			c.emit(Event{Type: EventLoaded, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
			cr.keep(item, s.gen, false)
			return item, nil, nil
		case err == nil || errors.Is(err, store.ErrNotFound):
		case isContextErr(err):
			return store.Item{}, nil, err
		default:
			// We hold the lease: granting is still safe.
			c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
		}
	}
	item, raw, err := cr.grant(ctx, s, rejected, force)
	if err != nil {
		return store.Item{}, nil, err
	}
	if err := c.cfg.store.Set(ctx, key, item); err != nil {
		// The grant is good; peers will find the store without it and
		// this node serves it for the cycle.
		c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
	}
	cr.keep(item, s.gen, true)
	return item, raw, nil
}

// canGrant checks what a grant needs, as the seed's NeedParamError does.
func (cr *cred) canGrant(s *settings) error {
	if s.appID == "" || s.appSecret == "" {
		return fmt.Errorf("%w: granting %s needs the AppID and AppSecret (WithAppID)", ErrNeedParam, cr.kind)
	}
	return nil
}

// grant calls WeChat. Its context is bounded by the lease TTL so a grant
// never outlives the lease that guards it.
func (cr *cred) grant(ctx context.Context, s *settings, rejected string, force bool) (store.Item, any, error) {
	c := cr.c
	if err := cr.canGrant(s); err != nil {
		return store.Item{}, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.leaseTTL)
	defer cancel()
	start := c.now()
	var (
		item store.Item
		raw  any
		err  error
	)
	if cr.kind == AccessToken {
		var r *TokenResponse
		switch {
		case !c.cfg.stable:
			r, err = c.api.grantToken(ctx, s.appID, s.appSecret)
		default:
			r, err = c.api.grantStableToken(ctx, s.appID, s.appSecret, false)
			if err == nil && rejected != "" && r.AccessToken == rejected {
				// WeChat keeps returning the token it rejected:
				// the one case for a forced refresh.
				r, err = c.api.grantStableToken(ctx, s.appID, s.appSecret, true)
			}
		}
		if err == nil {
			item, raw = store.Item{Value: r.AccessToken, ExpiresAt: start.Add(time.Duration(r.ExpiresIn) * time.Second)}, r
		}
	} else {
		var r *TicketResponse
		r, err = cr.grantTicket(ctx)
		if err == nil {
			item, raw = store.Item{Value: r.Ticket, ExpiresAt: start.Add(time.Duration(r.ExpiresIn) * time.Second)}, r
		}
	}
	if err != nil {
		c.emit(Event{Type: EventGrantFailed, Kind: cr.kind, Err: err})
		return store.Item{}, nil, err
	}
	c.emit(Event{Type: EventGranted, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
	return item, raw, nil
}

// grantTicket asks for a ticket with the current access token; a token
// WeChat rejects is replaced (compare-then-refresh) and the call made once
// more.
func (cr *cred) grantTicket(ctx context.Context) (*TicketResponse, error) {
	c := cr.c
	tok, err := c.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.api.grantTicket(ctx, tok, cr.kind.ticketType())
	if errors.Is(err, ErrTokenInvalid) {
		if tok, err = c.Invalidate(ctx, AccessToken, tok); err != nil {
			return nil, err
		}
		r, err = c.api.grantTicket(ctx, tok, cr.kind.ticketType())
	}
	return r, err
}

// force grants now under the lease, whatever the store holds.
func (cr *cred) force(ctx context.Context) (store.Item, any, error) {
	c := cr.c
	if c.closed.Load() {
		return store.Item{}, nil, ErrClosed
	}
	s := c.settings.Load()
	if s.appID == "" {
		return store.Item{}, nil, fmt.Errorf("%w: %s needs an AppID (WithAppID)", ErrNeedParam, cr.kind)
	}
	ctx, done := c.bind(ctx)
	defer done()
	return cr.obtainRaw(ctx, s, Key(s.appID, cr.kind), "", true)
}
