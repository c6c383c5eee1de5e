package conf

// The refresh engine. One cred per credential kind; see the package doc for
// the steps, and refresh.go, lease.go and limits.go for the parts. The
// invariants it keeps:
//   - The hot path (cred.get) is four atomic loads: no lock, no allocation,
//     no I/O, and no clock read (on virtual machines time.Now alone can
//     cost 200 ns). A timer marks each local copy due when it needs a
//     refresh or a re-read; the slow path checks times directly.
//   - A refresh belongs to no caller: it runs in a goroutine of its own (the
//     flight, at most one per cred per process), bounded by its own timeout
//     and by Close. Callers wait on their own context; one caller's short
//     deadline never cancels the work others wait for.
//   - Stale while revalidating: while the local copy is still valid (its
//     expiry less expirySafety), callers get it at once, whether a refresh
//     is in flight, the store is slow or WeChat is failing. Only callers
//     with no valid copy wait.
//   - Every store call has its own bound (WithStoreTimeout), so a hung store
//     holds a flight for that long at most.
//   - A grant happens under the store's lease, after a second read of the
//     store; the lease covers the whole grant (deadline from Lock, extended
//     while the grant runs) and the result is stored only while the lease
//     is ours. Without the lease (the store is down and no valid copy is
//     left) a process grants at most once per cycle (limits.go).
//   - A store error is never taken for a miss; what the store holds is
//     never trusted beyond what WeChat can mean (store.Item.Plausible).

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

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
	gen      uint64
	rejected string
	item     store.Item
	err      error
}

// cred keeps one kind of credential.
type cred struct {
	kind Kind
	c    *Conf
	cur  atomic.Pointer[cached]
	fl   atomic.Pointer[flight]

	// What the limits of limits.go remember.
	mu          sync.Mutex
	leaseless   leaselessGrant // guarded by mu
	forcedUntil atomic.Int64   // Unix ns: no forced refresh before, as last learned
}

// get is the hot path: a fresh local copy, or the slow path.
func (cr *cred) get(ctx context.Context) (store.Item, error) {
	if p := cr.cur.Load(); p != nil && !p.due.Load() && p.gen == cr.c.settings.Load().gen && !cr.c.closed.Load() {
		return p.item, nil
	}
	return cr.slow(ctx, "")
}

// slow makes sure a flight is under way and serves the local copy while it
// is valid; with no valid copy it waits for the flight or ctx. rejected,
// when not empty, is a value WeChat refused: it is never returned.
func (cr *cred) slow(ctx context.Context, rejected string) (store.Item, error) {
	c := cr.c
	for {
		if c.closed.Load() {
			return store.Item{}, ErrClosed
		}
		s := c.settings.Load()
		p := cr.prev(s.gen, rejected)
		now := c.now()
		if p != nil && p.fresh(now) {
			return p.item, nil // the timer has not fired yet
		}
		f, err := cr.start(ctx, s, rejected)
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
		case <-c.done:
			return store.Item{}, ErrClosed
		}
		switch {
		case f.gen != c.settings.Load().gen:
			continue // the app changed meanwhile: never serve the old one
		case f.err != nil:
			return store.Item{}, f.err
		case rejected != "" && f.item.Value == rejected:
			continue // that flight did not know of our rejection
		}
		return f.item, nil
	}
}

// start returns the flight in progress, or starts one on a goroutine of its
// own. The flight keeps ctx's values (for tracing) but not its deadline or
// cancellation: it is bounded by refreshTimeout and by Close.
func (cr *cred) start(ctx context.Context, s *settings, rejected string) (*flight, error) {
	if f := cr.fl.Load(); f != nil {
		return f, nil
	}
	c := cr.c
	c.flMu.Lock()
	defer c.flMu.Unlock()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if f := cr.fl.Load(); f != nil {
		return f, nil
	}
	f := &flight{done: make(chan struct{}), gen: s.gen, rejected: rejected}
	cr.fl.Store(f)
	c.wg.Add(1)
	go cr.run(context.WithoutCancel(ctx), s, f)
	return f, nil
}

// run is a flight's goroutine.
func (cr *cred) run(base context.Context, s *settings, f *flight) {
	c := cr.c
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(base, c.refreshTimeout())
	stop := context.AfterFunc(closedContext{c.done}, cancel)
	item, _, err := cr.refresh(ctx, s, f.rejected)
	stop()
	cancel()
	if err != nil {
		if c.closed.Load() {
			err = ErrClosed
		} else {
			cr.holdAfterFailure(s.gen, f.rejected)
		}
	}
	f.item, f.err = item, err
	cr.fl.CompareAndSwap(f, nil)
	close(f.done)
}

// refreshTimeout bounds a whole flight: waiting for another node, then one
// grant of our own (as long as the HTTP client allows, or the lease TTL),
// with a few store calls around it.
func (c *Conf) refreshTimeout() time.Duration {
	grant := c.cfg.leaseTTL
	if t := c.cfg.client.Timeout; t > grant {
		grant = t
	}
	return c.cfg.maxWait + grant + 4*c.cfg.storeTimeout
}

// enter registers work that Close must wait for; it fails once Close has
// begun.
func (c *Conf) enter() bool {
	c.flMu.Lock()
	defer c.flMu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	return true
}

// bind returns a context that also ends when the Conf is closed.
func (c *Conf) bind(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(closedContext{c.done}, cancel)
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

// hold republishes p's item so that it is served without a refresh until
// retry (never past its expiry less expirySafety): the copy a node keeps
// serving while the store or WeChat fails.
func (cr *cred) hold(p *cached, now time.Time, retry time.Duration) {
	np := &cached{item: p.item, gen: p.gen, staleAt: p.staleAt, rereadAt: now.Add(min(retry, cr.c.cfg.reread))}
	if !now.Before(np.staleAt) {
		np.staleAt = now.Add(retry)
	}
	if last := p.item.ExpiresAt.Add(-expirySafety); np.staleAt.After(last) {
		np.staleAt = last
	}
	cr.publish(np, now)
}

// holdAfterFailure keeps serving the local copy, if it is still valid, for
// retryAfterFailure after a failed refresh, instead of starting another
// refresh on every call.
func (cr *cred) holdAfterFailure(gen uint64, rejected string) {
	now := cr.c.now()
	if p := cr.prev(gen, rejected); p != nil && valid(p.item, now) {
		cr.hold(p, now, retryAfterFailure)
	}
}

// prev returns the local copy if it belongs to generation gen and is not
// the rejected value.
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
