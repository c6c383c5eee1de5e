package conf

// Steps 3 to 5 of the engine for one credential, run by a flight (or by a
// Grant* call): read the store, take the lease, grant, store.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// refresh reads the store and, when it holds nothing usable, obtains a new
// credential. The raw WeChat answer is returned when this call granted.
func (cr *cred) refresh(ctx context.Context, s *settings, rejected string) (store.Item, any, error) {
	c := cr.c
	if s.appID == "" {
		return store.Item{}, nil, fmt.Errorf("%w: %s needs an AppID (WithAppID)", ErrNeedParam, cr.kind)
	}
	key := Key(s.appID, cr.kind)
	prev := cr.prev(s.gen, rejected)
	if rejected != "" {
		c.emit(Event{Type: EventInvalidated, Kind: cr.kind})
	}

	item, err := cr.read(ctx, key)
	switch {
	case err == nil && cr.usable(item, rejected):
		if prev != nil && prev.item.Value != item.Value && prev.item.Newer(item) {
			// Ours is newer (granted while the store was down, or
			// seeded): put it back so that every node converges.
			return cr.putBack(ctx, key, prev, s.gen), nil, nil
		}
		if prev == nil || prev.item.Value != item.Value {
			c.emit(Event{Type: EventLoaded, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
		}
		cr.keep(item, s.gen, false)
		return item, nil, nil
	case err == nil || errors.Is(err, store.ErrNotFound):
		if prev != nil && cr.usable(prev.item, rejected) && (err != nil || !item.Newer(prev.item)) {
			// The store lost it (eviction, restart, a bad record) or
			// holds an older one: ours is still good.
			return cr.putBack(ctx, key, prev, s.gen), nil, nil
		}
		if err == nil && rejected != "" && item.Value == rejected {
			if err := cr.forcedLimited(); err != nil {
				return store.Item{}, nil, err
			}
		}
	case ctx.Err() != nil:
		return store.Item{}, nil, ctx.Err()
	default:
		c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
		return cr.outage(ctx, s, prev, rejected, err)
	}
	return cr.obtain(ctx, s, key, rejected, false)
}

// storeCtx bounds one store call.
func (c *Conf) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.storeTimeout)
}

// boundErr says that a store call ran out of its own bound (not the
// flight's): that is an outage, not a cancellation.
func (c *Conf) boundErr(ctx context.Context, op, key string, err error) error {
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("conf: store %s %q: no answer within %v (WithStoreTimeout): %w", op, key, c.cfg.storeTimeout, err)
	}
	return err
}

// read gets key from the store within the store-call bound. A record the
// store cannot decode, and an item that cannot be a WeChat credential (no
// value, an expiry further ahead than any WeChat grants), are reported and
// read as absent: never served, and replaced by the next grant.
func (cr *cred) read(ctx context.Context, key string) (store.Item, error) {
	c := cr.c
	sctx, cancel := c.storeCtx(ctx)
	item, err := c.cfg.store.Get(sctx, key)
	cancel()
	switch {
	case errors.Is(err, store.ErrMalformed):
		c.emit(Event{Type: EventMalformed, Kind: cr.kind, Err: err})
		return store.Item{}, store.ErrNotFound
	case err == nil && !item.Plausible(c.now()):
		c.emit(Event{Type: EventMalformed, Kind: cr.kind, Err: fmt.Errorf(
			"conf: store holds an implausible %s under %q (%v: no value, or an expiry beyond %v from now): ignored, the next grant replaces it",
			cr.kind, key, item, store.MaxLifetime+store.ClockSlack)})
		return store.Item{}, store.ErrNotFound
	}
	return item, c.boundErr(ctx, "get", key, err)
}

// write sets key in the store within the store-call bound, reporting a
// failure (the caller goes on: the credential is good, peers will find the
// store without it).
func (cr *cred) write(ctx context.Context, key string, item store.Item) error {
	c := cr.c
	sctx, cancel := c.storeCtx(ctx)
	err := c.boundErr(ctx, "set", key, c.cfg.store.Set(sctx, key, item))
	cancel()
	if err != nil && ctx.Err() == nil {
		c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
	}
	return err
}

// putBack writes the local copy back to the store and keeps serving it.
func (cr *cred) putBack(ctx context.Context, key string, prev *cached, gen uint64) store.Item {
	cr.write(ctx, key, prev.item)
	cr.keep(prev.item, gen, false)
	return prev.item
}

// outage handles a store that failed. prev (see cred.prev) is the local
// copy, or nil. A local copy that is still valid is served (even past its
// margin) and the store is tried again soon. With no valid copy the node
// grants without the lease, within the limits of grantLeaseless.
func (cr *cred) outage(ctx context.Context, s *settings, prev *cached, rejected string, storeErr error) (store.Item, any, error) {
	c := cr.c
	now := c.now()
	if prev != nil && valid(prev.item, now) {
		cr.hold(prev, now, retryAfterFailure)
		return prev.item, nil, nil
	}
	if fn := c.cfg.refresh[cr.kind]; fn != nil {
		item, err := cr.fromFunc(ctx, s, Key(s.appID, cr.kind), fn, rejected)
		return item, nil, err
	}
	if c.cfg.refreshOnly {
		return store.Item{}, nil, fmt.Errorf("%w: %s: store failed and this node never grants: %w", ErrUnavailable, cr.kind, storeErr)
	}
	return cr.grantLeaseless(ctx, s, rejected, storeErr)
}

// fromFunc takes the credential from the user's refresh function.
func (cr *cred) fromFunc(ctx context.Context, s *settings, key string, fn RefreshFunc, rejected string) (store.Item, error) {
	c := cr.c
	item, err := fn(ctx)
	if err != nil {
		return store.Item{}, fmt.Errorf("conf: %s refresh function: %w", cr.kind, err)
	}
	now := c.now()
	if !item.Fresh(now, 0) || !item.Plausible(now) || (rejected != "" && item.Value == rejected) {
		return store.Item{}, fmt.Errorf("%w: %s refresh function returned %v, which is expired, implausible or the rejected one", ErrUnavailable, cr.kind, item)
	}
	cr.write(ctx, key, item)
	c.emit(Event{Type: EventLoaded, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
	cr.keep(item, s.gen, true)
	return item, nil
}

// obtain gets a new credential: from the refresh function, by waiting for
// the store (refresh-only), or by a grant under the lease. With force it
// grants even if the store holds a fresh item (GrantAccessToken and
// friends). It returns WeChat's decoded answer when it granted.
func (cr *cred) obtain(ctx context.Context, s *settings, key, rejected string, force bool) (store.Item, any, error) {
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

	// Waiting for another node is bounded by maxWait, or longer while its
	// lease is still held: a holder that extends its lease is alive and
	// granting (a crashed one's lease lapses within its TTL). The flight's
	// own timeout bounds it all.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := c.now().Add(c.cfg.maxWait)
	// The watch is opened only once someone else turns out to hold the
	// lease: the usual refresh takes the lease at once and needs none.
	var notify <-chan struct{}
	watched := false
	start := c.now()
	backoff := pollMin
	for {
		if grants {
			lockedAt := c.now()
			lctx, lcancel := c.storeCtx(wctx)
			lease, err := c.cfg.store.Lock(lctx, key, c.cfg.leaseTTL)
			lcancel()
			if err == nil {
				if waited := c.now().Sub(start); waited > pollMin {
					c.emit(Event{Type: EventLeaseWaited, Kind: cr.kind, Wait: waited})
				}
				return cr.underLease(ctx, s, key, lease, lockedAt, rejected, force)
			}
			if errors.Is(err, store.ErrLocked) {
				if d := c.now().Add(c.cfg.leaseTTL); d.After(deadline) {
					deadline = d
				}
			} else {
				if e := cr.waitErr(ctx, deadline); e != nil {
					return store.Item{}, nil, e
				}
				err = c.boundErr(wctx, "lock", key, err)
				c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
				if force {
					return store.Item{}, nil, fmt.Errorf("%w: granting %s needs the store's lease, and the store failed: %w", ErrUnavailable, cr.kind, err)
				}
				return cr.outage(ctx, s, cr.prev(s.gen, rejected), rejected, err)
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
			t := time.NewTimer(max(0, min(backoff, deadline.Sub(c.now()))))
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
		if e := cr.waitErr(ctx, deadline); e != nil {
			return store.Item{}, nil, e
		}
		item, err := cr.read(wctx, key)
		switch {
		case err == nil && cr.usable(item, rejected) && !force:
			c.emit(Event{Type: EventLeaseWaited, Kind: cr.kind, Wait: c.now().Sub(start), ExpiresAt: item.ExpiresAt})
			cr.keep(item, s.gen, false)
			return item, nil, nil
		case err == nil || errors.Is(err, store.ErrNotFound):
		default:
			if e := cr.waitErr(ctx, deadline); e != nil {
				return store.Item{}, nil, e
			}
			c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
			if !grants {
				continue // keep polling until the wait bound
			}
			if force {
				return store.Item{}, nil, fmt.Errorf("%w: granting %s needs the store's lease, and the store failed: %w", ErrUnavailable, cr.kind, err)
			}
			return cr.outage(ctx, s, cr.prev(s.gen, rejected), rejected, err)
		}
	}
}

// waitErr turns the end of a wait into the error to return, or nil while
// waiting may go on.
func (cr *cred) waitErr(ctx context.Context, deadline time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !cr.c.now().Before(deadline) {
		return fmt.Errorf("%w: %s: no fresh item after waiting %v (WithMaxWait) for another node", ErrUnavailable, cr.kind, cr.c.cfg.maxWait)
	}
	return nil
}

// underLease is step 4 with the lease held: read again, grant only if still
// needed, store the grant while the lease is still ours, release.
func (cr *cred) underLease(ctx context.Context, s *settings, key string, lease store.Lease, lockedAt time.Time, rejected string, force bool) (store.Item, any, error) {
	c := cr.c
	g := cr.guard(ctx, lease, lockedAt)
	defer g.release()
	forced := force
	if !force {
		item, err := cr.read(g.ctx, key)
		switch {
		case err == nil && cr.usable(item, rejected):
			c.emit(Event{Type: EventLoaded, Kind: cr.kind, ExpiresAt: item.ExpiresAt})
			cr.keep(item, s.gen, false)
			return item, nil, nil
		case err == nil:
			forced = rejected != "" && item.Value == rejected
		case errors.Is(err, store.ErrNotFound):
		case g.ctx.Err() != nil:
			return store.Item{}, nil, g.lapsed(ctx)
		default:
			// We hold the lease: granting is still safe.
			c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: err})
		}
	}
	if forced {
		if err := cr.takeForced(g.ctx, key); err != nil {
			return store.Item{}, nil, err
		}
	}
	item, raw, err := cr.grant(g.ctx, s, rejected, force, false)
	if err != nil {
		if g.ctx.Err() != nil && ctx.Err() == nil {
			return store.Item{}, nil, fmt.Errorf("%w (%w)", err, g.lapsed(ctx))
		}
		return store.Item{}, nil, err
	}
	if g.held() {
		cr.write(g.ctx, key, item)
	} else {
		// Another node may hold the lease now and grant: storing ours
		// could only confuse it. This node serves its grant.
		c.emit(Event{Type: EventStoreError, Kind: cr.kind, Err: fmt.Errorf("%w: %s granted, not stored", g.lapsed(ctx), cr.kind)})
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

// grant calls WeChat; ctx bounds it (the lease guard's context under the
// lease). leaseless asks for the stable token without force_refresh, which
// every caller gets alike and which invalidates nobody's token.
func (cr *cred) grant(ctx context.Context, s *settings, rejected string, force, leaseless bool) (store.Item, any, error) {
	c := cr.c
	if err := cr.canGrant(s); err != nil {
		return store.Item{}, nil, err
	}
	start := c.now()
	var (
		item store.Item
		raw  any
		err  error
	)
	if cr.kind == AccessToken {
		var r *TokenResponse
		switch {
		case leaseless:
			r, err = c.api.grantStableToken(ctx, s.appID, s.appSecret, false)
			if err == nil && rejected != "" && r.AccessToken == rejected {
				err = fmt.Errorf("%w: %s: the stable token WeChat returns is the one it rejected; without the store's lease it is not forced", ErrUnavailable, cr.kind)
			}
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

// force grants now under the lease, whatever the store holds. It runs on
// the caller's context (an explicit call), bound to Close, and Close waits
// for it.
func (cr *cred) force(ctx context.Context) (store.Item, any, error) {
	c := cr.c
	if !c.enter() {
		return store.Item{}, nil, ErrClosed
	}
	defer c.wg.Done()
	s := c.settings.Load()
	if s.appID == "" {
		return store.Item{}, nil, fmt.Errorf("%w: %s needs an AppID (WithAppID)", ErrNeedParam, cr.kind)
	}
	ctx, done := c.bind(ctx)
	defer done()
	item, raw, err := cr.obtain(ctx, s, Key(s.appID, cr.kind), "", true)
	if err != nil && c.closed.Load() {
		err = ErrClosed
	}
	return item, raw, err
}
