package credential

// The lease guard: a grant runs on a context that ends when the store's
// lease may have lapsed, counted from the moment Lock was called (not from
// the grant's start), and extended while the grant runs when the lease
// implements store.Extender.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// leaseSafety is how long before the lease's end (by this node's clock) a
// holder stops counting on it: clocks and round trips are not exact.
func leaseSafety(ttl time.Duration) time.Duration {
	return max(ttl/10, 50*time.Millisecond)
}

// leaseGuard watches one held lease.
type leaseGuard struct {
	k      *Keeper
	lease  store.Lease
	ctx    context.Context // ends when the lease may have lapsed
	cancel context.CancelFunc
	until  atomic.Int64 // Unix ns: the lease is ours before this
	lost   atomic.Bool  // Extend said another node holds it
	stop   chan struct{}
	done   chan struct{}
	parent context.Context
}

// guard starts watching lease, taken by a Lock call made at lockedAt.
func (k *Keeper) guard(parent context.Context, lease store.Lease, lockedAt time.Time) *leaseGuard {
	ttl := k.pol.LeaseTTL
	g := &leaseGuard{k: k, lease: lease, parent: parent, stop: make(chan struct{}), done: make(chan struct{})}
	g.ctx, g.cancel = context.WithCancel(parent)
	g.until.Store(lockedAt.Add(ttl - leaseSafety(ttl)).UnixNano())
	go g.watch()
	return g
}

// watch cancels the guard's context when the lease may have lapsed, and
// extends the lease every third of its TTL while it can.
func (g *leaseGuard) watch() {
	defer close(g.done)
	k := g.k
	ttl := k.pol.LeaseTTL
	ext, _ := g.lease.(store.Extender)
	every := ttl / 3
	next := k.now().Add(every)
	for {
		now := k.now()
		until := time.Unix(0, g.until.Load())
		if !now.Before(until) {
			g.cancel()
			return
		}
		wake := until
		if ext != nil && next.Before(wake) {
			wake = next
		}
		t := time.NewTimer(wake.Sub(now))
		select {
		case <-g.stop:
			t.Stop()
			return
		case <-g.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if ext == nil || k.now().Before(next) {
			continue
		}
		start := k.now()
		next = start.Add(every)
		ectx, cancel := context.WithTimeout(g.ctx, min(k.pol.StoreTimeout, every))
		err := ext.Extend(ectx, ttl)
		cancel()
		switch {
		case err == nil:
			g.until.Store(start.Add(ttl - leaseSafety(ttl)).UnixNano())
		case errors.Is(err, store.ErrLeaseLost):
			g.lost.Store(true)
			g.cancel()
			return
		case g.ctx.Err() == nil:
			// Keep trying until the lease runs out.
			k.emit(g.ctx, Event{Type: EventStoreError, Err: err})
		}
	}
}

// held reports whether the lease is still ours.
func (g *leaseGuard) held() bool {
	return g.ctx.Err() == nil && g.k.now().UnixNano() < g.until.Load()
}

// lapsed describes the end of the lease for an error.
func (g *leaseGuard) lapsed(parent context.Context) error {
	if err := parent.Err(); err != nil {
		return err
	}
	if g.lost.Load() {
		return fmt.Errorf("credential: %s: the store's lease was lost (another node holds it)", g.k.name)
	}
	return fmt.Errorf("credential: %s: the store's lease (Policy.LeaseTTL %v) ran out during the grant", g.k.name, g.k.pol.LeaseTTL)
}

// release stops watching and unlocks, within the store-call bound, even
// when the flight's context has ended: Close waits for it.
func (g *leaseGuard) release() {
	close(g.stop)
	<-g.done
	g.cancel()
	k := g.k
	uctx, cancel := k.storeCtx(context.WithoutCancel(g.parent))
	defer cancel()
	if err := g.lease.Unlock(uctx); err != nil {
		k.emit(g.parent, Event{Type: EventStoreError, Err: err})
	}
}
