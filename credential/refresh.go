package credential

// The steps of a refresh, run by a flight (or by Grant): read the store,
// take the lease, grant, store.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// refresh reads the store and, when it holds nothing usable, obtains a new
// credential. The raw WeChat answer is returned when this call granted.
func (k *Keeper) refresh(ctx context.Context, rejected string) (store.Item, any, error) {
	prev := k.prev(rejected)
	if rejected != "" {
		k.emit(ctx, Event{Type: EventInvalidated})
	}
	item, err := k.read(ctx, k.key)
	switch {
	case err == nil && k.usable(item, rejected):
		if prev != nil && prev.item.Value != item.Value && prev.item.Newer(item) {
			// Ours is newer (granted while the store was down, or
			// seeded): put it back so that every node converges.
			return k.putBack(ctx, prev), nil, nil
		}
		if prev == nil || prev.item.Value != item.Value {
			k.emit(ctx, Event{Type: EventLoaded, ExpiresAt: item.ExpiresAt})
		}
		k.keep(item, false)
		return item, nil, nil
	case err == nil || errors.Is(err, store.ErrNotFound):
		if prev != nil && k.usable(prev.item, rejected) && (err != nil || !item.Newer(prev.item) || k.wasRejected(item.Value)) {
			// The store lost it (eviction, restart, a bad record), holds
			// an older one or one WeChat rejected: ours is still good.
			return k.putBack(ctx, prev), nil, nil
		}
		if err == nil && rejected != "" && k.isRejected(item.Value, rejected) {
			if err := k.forcedLimited(); err != nil {
				return store.Item{}, nil, err
			}
		}
	case ctx.Err() != nil:
		return store.Item{}, nil, ctx.Err()
	default:
		k.emit(ctx, Event{Type: EventStoreError, Err: err})
		return k.outage(ctx, prev, rejected, err)
	}
	return k.obtain(ctx, rejected, false)
}

// storeCtx bounds one store call.
func (k *Keeper) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, k.pol.StoreTimeout)
}

// boundErr says that a store call ran out of its own bound (not the
// flight's): that is an outage, not a cancellation.
func (k *Keeper) boundErr(ctx context.Context, op, key string, err error) error {
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("credential: store %s %q: no answer within %v (Policy.StoreTimeout): %w", op, key, k.pol.StoreTimeout, err)
	}
	return err
}

// read gets key from the store within the store-call bound. A record the
// store cannot decode, and an item that cannot be a WeChat credential (no
// value, an expiry further ahead than any WeChat grants), are reported and
// read as absent: never served, and replaced by the next grant.
func (k *Keeper) read(ctx context.Context, key string) (store.Item, error) {
	sctx, cancel := k.storeCtx(ctx)
	item, err := k.store.Get(sctx, key)
	cancel()
	switch {
	case errors.Is(err, store.ErrMalformed):
		k.emit(ctx, Event{Type: EventMalformed, Err: err})
		return store.Item{}, store.ErrNotFound
	case err == nil && !item.Plausible(k.now()):
		k.emit(ctx, Event{Type: EventMalformed, Err: fmt.Errorf(
			"credential: store holds an implausible %s under %q (%v: no value, or an expiry beyond %v from now): ignored, the next grant replaces it",
			k.name, key, item, store.MaxLifetime+store.ClockSlack)})
		return store.Item{}, store.ErrNotFound
	}
	return item, k.boundErr(ctx, "get", key, err)
}

// write sets key in the store within the store-call bound, reporting a
// failure (the caller goes on: the credential is good, peers will find the
// store without it).
func (k *Keeper) write(ctx context.Context, key string, item store.Item) {
	sctx, cancel := k.storeCtx(ctx)
	err := k.boundErr(ctx, "set", key, k.store.Set(sctx, key, item))
	cancel()
	if err != nil && ctx.Err() == nil {
		k.emit(ctx, Event{Type: EventStoreError, Err: err})
	}
}

// putBack writes the local copy back to the store and keeps serving it.
func (k *Keeper) putBack(ctx context.Context, prev *cached) store.Item {
	k.write(ctx, k.key, prev.item)
	k.keep(prev.item, false)
	return prev.item
}

// outage handles a store that failed. prev (see Keeper.prev) is the local
// copy, or nil. A local copy that is still valid is served (even past its
// margin) and the store is tried again soon. With no valid copy the node
// grants without the lease, within the limits of grantLeaseless.
func (k *Keeper) outage(ctx context.Context, prev *cached, rejected string, storeErr error) (store.Item, any, error) {
	now := k.now()
	if prev != nil && valid(prev.item, now) {
		k.hold(prev, now, retryAfterFailure)
		return prev.item, nil, nil
	}
	if k.fetch != nil {
		item, err := k.fromFetch(ctx, rejected)
		return item, nil, err
	}
	if k.grant == nil {
		return store.Item{}, nil, fmt.Errorf("%w: %s: the store failed and this node never grants: %w", ErrUnavailable, k.name, storeErr)
	}
	return k.grantLeaseless(ctx, rejected, storeErr)
}

// fromFetch takes the credential from Config.Fetch, or from
// Config.Invalidate when it replaces a rejected value.
func (k *Keeper) fromFetch(ctx context.Context, rejected string) (store.Item, error) {
	var (
		item store.Item
		err  error
	)
	if rejected != "" && k.inval != nil {
		item, err = k.inval(ctx, rejected)
	} else {
		item, err = k.fetch(ctx)
	}
	if err != nil {
		return store.Item{}, fmt.Errorf("credential: %s refresh function: %w", k.name, err)
	}
	now := k.now()
	if !item.Fresh(now, 0) || !item.Plausible(now) || k.isRejected(item.Value, rejected) {
		return store.Item{}, fmt.Errorf("%w: %s refresh function returned %v, which is expired, implausible or the rejected one", ErrUnavailable, k.name, item)
	}
	k.write(ctx, k.key, item)
	k.emit(ctx, Event{Type: EventLoaded, ExpiresAt: item.ExpiresAt})
	k.keep(item, true)
	return item, nil
}

// obtain gets a new credential: from Fetch, by waiting for the store
// (refresh-only), or by a grant under the lease. With force it grants even
// if the store holds a fresh item (Grant). It returns WeChat's decoded
// answer when it granted.
func (k *Keeper) obtain(ctx context.Context, rejected string, force bool) (store.Item, any, error) {
	if k.fetch != nil && !force {
		item, err := k.fromFetch(ctx, rejected)
		return item, nil, err
	}
	grants := k.fetch == nil && k.grant != nil
	if !grants && force {
		return store.Item{}, nil, fmt.Errorf("credential: %s: this node is refresh-only and never grants", k.name)
	}
	if grants {
		if err := k.canGrant(); err != nil {
			return store.Item{}, nil, err
		}
	}

	// Waiting for another node is bounded by MaxWait, or longer while its
	// lease is still held: a holder that extends its lease is alive and
	// granting (a crashed one's lease lapses within its TTL). The flight's
	// own timeout bounds it all.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := k.now()
	deadline := start.Add(k.pol.MaxWait)
	// The watch is opened only once someone else turns out to hold the
	// lease: the usual refresh takes the lease at once and needs none.
	var notify <-chan struct{}
	watched := false
	backoff := pollMin
	for {
		if grants {
			lockedAt := k.now()
			lctx, lcancel := k.storeCtx(wctx)
			lease, err := k.store.Lock(lctx, k.key, k.pol.LeaseTTL)
			lcancel()
			if err == nil {
				if waited := k.now().Sub(start); waited > pollMin {
					k.emit(ctx, Event{Type: EventLeaseWaited, Wait: waited})
				}
				return k.underLease(ctx, lease, lockedAt, rejected, force)
			}
			if errors.Is(err, store.ErrLocked) {
				if d := k.now().Add(k.pol.LeaseTTL); d.After(deadline) {
					deadline = d
				}
			} else {
				if e := k.waitErr(ctx, deadline); e != nil {
					return store.Item{}, nil, e
				}
				err = k.boundErr(wctx, "lock", k.key, err)
				k.emit(ctx, Event{Type: EventStoreError, Err: err})
				if force {
					return store.Item{}, nil, fmt.Errorf("%w: granting %s needs the store's lease, and the store failed: %w", ErrUnavailable, k.name, err)
				}
				return k.outage(ctx, k.prev(rejected), rejected, err)
			}
		}
		// Someone else grants: wait for their item. Right after the
		// watch opens, read at once: the item may have been set before.
		if !watched {
			watched = true
			if w, ok := k.store.(store.Watcher); ok {
				if ch, err := w.Watch(wctx, k.key); err == nil {
					notify = ch
				}
			}
		} else {
			t := time.NewTimer(max(0, min(backoff, deadline.Sub(k.now()))))
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
		if e := k.waitErr(ctx, deadline); e != nil {
			return store.Item{}, nil, e
		}
		item, err := k.read(wctx, k.key)
		switch {
		case err == nil && k.usable(item, rejected) && !force:
			k.emit(ctx, Event{Type: EventLeaseWaited, Wait: k.now().Sub(start), ExpiresAt: item.ExpiresAt})
			k.keep(item, false)
			return item, nil, nil
		case err == nil || errors.Is(err, store.ErrNotFound):
		default:
			if e := k.waitErr(ctx, deadline); e != nil {
				return store.Item{}, nil, e
			}
			k.emit(ctx, Event{Type: EventStoreError, Err: err})
			if !grants {
				continue // keep polling until the wait bound
			}
			if force {
				return store.Item{}, nil, fmt.Errorf("%w: granting %s needs the store's lease, and the store failed: %w", ErrUnavailable, k.name, err)
			}
			return k.outage(ctx, k.prev(rejected), rejected, err)
		}
	}
}

// waitErr turns the end of a wait into the error to return, or nil while
// waiting may go on.
func (k *Keeper) waitErr(ctx context.Context, deadline time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !k.now().Before(deadline) {
		return fmt.Errorf("%w: %s: no fresh item after waiting %v (Policy.MaxWait) for another node", ErrUnavailable, k.name, k.pol.MaxWait)
	}
	return nil
}

// underLease runs with the lease held: read again, grant only if still
// needed, store the grant while the lease is still ours, release.
func (k *Keeper) underLease(ctx context.Context, lease store.Lease, lockedAt time.Time, rejected string, force bool) (store.Item, any, error) {
	g := k.guard(ctx, lease, lockedAt)
	defer g.release()
	forced := force
	if !force {
		item, err := k.read(g.ctx, k.key)
		switch {
		case err == nil && k.usable(item, rejected):
			k.emit(ctx, Event{Type: EventLoaded, ExpiresAt: item.ExpiresAt})
			k.keep(item, false)
			return item, nil, nil
		case err == nil:
			// A store that still holds a rejected value (this one, or one
			// reported lately) makes the grant a forced one.
			forced = rejected != "" && k.isRejected(item.Value, rejected)
		case errors.Is(err, store.ErrNotFound):
		case g.ctx.Err() != nil:
			return store.Item{}, nil, g.lapsed(ctx)
		default:
			// We hold the lease: granting is still safe.
			k.emit(ctx, Event{Type: EventStoreError, Err: err})
		}
	}
	if forced {
		if err := k.takeForced(g.ctx); err != nil {
			return store.Item{}, nil, err
		}
	}
	gr, err := k.callGrant(g.ctx, Request{Rejected: rejected, Forced: force})
	if err != nil {
		if g.ctx.Err() != nil && ctx.Err() == nil {
			return store.Item{}, nil, fmt.Errorf("%w (%w)", err, g.lapsed(ctx))
		}
		return store.Item{}, nil, err
	}
	if g.held() {
		k.write(g.ctx, k.key, gr.Item)
	} else {
		// Another node may hold the lease now and grant: storing ours
		// could only confuse it. This node serves its grant.
		k.emit(ctx, Event{Type: EventStoreError, Err: fmt.Errorf("%w: %s granted, not stored", g.lapsed(ctx), k.name)})
	}
	k.keep(gr.Item, true)
	return gr.Item, gr.Raw, nil
}

// canGrant is Config.Check, and the fatal-error backoff.
func (k *Keeper) canGrant() error {
	if k.check != nil {
		if err := k.check(); err != nil {
			return err
		}
	}
	return k.fatalBackoff()
}

// callGrant calls the GrantFunc and checks what it returns: a credential
// WeChat could have granted, with time left.
func (k *Keeper) callGrant(ctx context.Context, r Request) (Grant, error) {
	if err := k.canGrant(); err != nil {
		return Grant{}, err
	}
	gr, err := k.grant(ctx, r)
	if err == nil {
		now := k.now()
		switch {
		case !gr.Item.Fresh(now, 0) || !gr.Item.Plausible(now):
			err = fmt.Errorf("credential: %s: the grant returned %v: no value, expired, or an expiry further ahead than WeChat grants", k.name, gr.Item)
		case r.Rejected != "" && gr.Item.Value == r.Rejected:
			// The grant endpoint answered the very value a call was
			// refused with: it is the platform's current one (WeCom's
			// gettoken and the tickets repeat while valid; that
			// rejection was stray). Take the grant endpoint's word.
			k.forgetRejected(gr.Item.Value)
		}
	}
	if err != nil {
		k.noteFatal(ctx, err)
		k.emit(ctx, Event{Type: EventGrantFailed, Err: err})
		return Grant{}, err
	}
	k.emit(ctx, Event{Type: EventGranted, ExpiresAt: gr.Item.ExpiresAt})
	return gr, nil
}

// Grant grants a new credential now under the store's lease, whatever the
// store holds, stores it and returns the grant, with WeChat's decoded
// answer in Raw. It runs on the caller's context, bounded by Close, and
// Close waits for it. A grant sooner than Policy.ForcedInterval after the
// last forced one anywhere in the cluster fails with ErrRefreshLimited;
// with the store down it fails (it needs the lease).
func (k *Keeper) Grant(ctx context.Context) (Grant, error) {
	if !k.enter() {
		return Grant{}, ErrClosed
	}
	defer k.wg.Done()
	ctx, done := k.bind(ctx)
	defer done()
	item, raw, err := k.obtain(ctx, "", true)
	if err != nil {
		if k.closed.Load() {
			err = ErrClosed
		}
		return Grant{}, err
	}
	return Grant{Item: item, Raw: raw}, nil
}
