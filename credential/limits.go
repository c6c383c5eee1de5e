package credential

// Two limits that keep a bad day from spending WeChat's quota:
//
//   - Grants without the lease. When the store is down and no valid copy
//     is left, a process grants without the lease, at most once per cycle
//     per credential. The grant asks for the stable token without
//     force_refresh: WeChat returns the same stable token to every caller
//     while it is valid, and stable tokens are apart from classic ones, so
//     nodes cut off from the store all get one token and kill nobody's. A
//     rejection seen during the outage therefore cannot start a chain of
//     grants, each killing the token of the grant before last.
//   - Forced refreshes. A rejection (Invalidate) of the token the store
//     still holds forces a grant before its time; so does Grant*. Those are
//     limited across the cluster through the store: at most one every
//     Policy.ForcedInterval (30 s by default) per credential, whatever the
//     number of callers, nodes or servers asking.
//   - Fatal grant errors (Policy.Fatal: a wrong secret, an unknown app id)
//     are logged once at error level and returned for FatalBackoff without
//     asking WeChat again.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// leaselessRetry: how soon a lease-less stable token that WeChat rejected
// may be asked for again. Asking never invalidates anything; the bound
// only keeps a broken account from being asked on every call.
const leaselessRetry = 30 * time.Second

// limitState is what the limits remember of one Keeper. It is made on
// first use (Keeper.limits): a Keeper that never met a rejection, an
// outage or a fatal error holds none.
type limitState struct {
	mu        sync.Mutex
	leaseless leaselessGrant // guarded by mu, held across the grant
	rejMu     sync.Mutex
	rejected  [rejectedMemory]string // values WeChat rejected lately, guarded by rejMu
	rejNext   int
	fatalMu   sync.Mutex
	fatal     fatalError // guarded by fatalMu
}

// limits returns the Keeper's limitState, making it if needed.
func (k *Keeper) limits() *limitState {
	if l := k.lim.Load(); l != nil {
		return l
	}
	k.lim.CompareAndSwap(nil, new(limitState))
	return k.lim.Load()
}

// leaselessGrant remembers this process's last grant without the lease.
type leaselessGrant struct {
	value   string    // "" when the attempt failed
	at      time.Time // when it was asked for
	staleAt time.Time // the next cycle begins
}

// grantLeaseless grants without the store's lease, within the limit.
func (k *Keeper) grantLeaseless(ctx context.Context, rejected string, storeErr error) (store.Item, any, error) {
	if err := k.canGrant(); err != nil {
		return store.Item{}, nil, err
	}
	l := k.limits()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := k.now()
	if last := l.leaseless; !last.at.IsZero() {
		next := last.staleAt
		switch {
		case last.value == "":
			next = last.at.Add(retryAfterFailure) // the last attempt failed
		case rejected == last.value:
			if retry := last.at.Add(leaselessRetry); retry.Before(next) {
				next = retry
			}
		}
		if now.Before(next) {
			return store.Item{}, nil, fmt.Errorf("%w: %s: the store failed (%w); this process asked WeChat without the store's lease %v ago and asks again no sooner than in %v, so that an outage cannot start a grant storm",
				ErrUnavailable, k.name, storeErr, now.Sub(last.at).Round(time.Millisecond), next.Sub(now).Round(time.Millisecond))
		}
	}
	gctx, cancel := context.WithTimeout(ctx, k.pol.GrantTimeout)
	defer cancel()
	gr, err := k.callGrant(gctx, Request{Rejected: rejected, Leaseless: true})
	l.leaseless = leaselessGrant{value: gr.Item.Value, at: now, staleAt: k.staleAt(gr.Item)}
	if err != nil {
		return store.Item{}, nil, fmt.Errorf("%w (granting without the store, which failed: %v)", err, storeErr)
	}
	p := k.copyOf(gr.Item, true, now)
	p.rereadAt = now.Add(min(retryAfterFailure, k.pol.Reread))
	k.publish(p, now)
	k.write(ctx, k.key, gr.Item) // best effort: it just failed
	return gr.Item, gr.Raw, nil
}

// fatalError remembers a grant error that only a person can mend.
type fatalError struct {
	err error
	at  time.Time
}

// noteFatal remembers err if the policy says it is fatal, logging it once
// at error level.
func (k *Keeper) noteFatal(ctx context.Context, err error) {
	if k.pol.Fatal == nil || !k.pol.Fatal(err) {
		return
	}
	l := k.limits()
	l.fatalMu.Lock()
	first := l.fatal.err == nil
	l.fatal = fatalError{err: err, at: k.now()}
	l.fatalMu.Unlock()
	if first {
		attrs := append([]slog.Attr{slog.String("credential", k.name), slog.String("err", err.Error())}, k.attrs...)
		k.log.LogAttrs(ctx, slog.LevelError,
			"wechatconf: WeChat refused to grant: check the app's id and secret in the WeChat console; not asking again for "+FatalBackoff.String(), attrs...)
	}
}

// fatalBackoff returns the remembered fatal error while its backoff lasts.
func (k *Keeper) fatalBackoff() error {
	l := k.lim.Load()
	if l == nil {
		return nil // no fatal error yet
	}
	l.fatalMu.Lock()
	defer l.fatalMu.Unlock()
	if f := l.fatal; f.err != nil && k.now().Before(f.at.Add(FatalBackoff)) {
		return fmt.Errorf("%w (not asking WeChat again until %s)", f.err, f.at.Add(FatalBackoff).UTC().Format(time.RFC3339))
	}
	return nil
}

// ErrRefreshLimited matches the error of an Invalidate or Grant call
// refused because a refresh of the same credential was forced less than
// Policy.ForcedInterval ago, on any node sharing the store. The
// credential that was forced then is current; if WeChat still rejects it,
// try again after RefreshLimitedError.Next.
var ErrRefreshLimited = errors.New("credential: forced refresh limited")

// RefreshLimitedError is the error of a forced refresh refused by the
// cluster-wide limit. It matches ErrRefreshLimited.
type RefreshLimitedError struct {
	Name string    // the credential's name
	Next time.Time // the next forced refresh is allowed from here on
}

// Error implements error.
func (e *RefreshLimitedError) Error() string {
	return fmt.Sprintf("credential: %s: a refresh was forced less than the forced-refresh interval ago; the next is allowed at %s",
		e.Name, e.Next.UTC().Format(time.RFC3339))
}

// Is makes errors.Is match ErrRefreshLimited.
func (e *RefreshLimitedError) Is(target error) bool { return target == ErrRefreshLimited }

// limitKey is where the forced-refresh limit of key is kept: beside it, in
// the same Redis Cluster hash slot.
func limitKey(key string) string { return key + ":forced" }

// forcedLimited refuses a forced refresh this process already knows is too
// soon, without asking the store.
func (k *Keeper) forcedLimited() error {
	if until := k.forcedUntil.Load(); k.now().UnixNano() < until {
		return &RefreshLimitedError{Name: k.name, Next: time.Unix(0, until)}
	}
	return nil
}

// takeForced spends the forced-refresh allowance of key, or refuses. It
// runs under key's lease, so the read and the write do not race another
// node's. The limit is an item whose expiry is the moment the next forced
// refresh is allowed; each one moves it later, so newer-wins always keeps
// the latest. A limit item further ahead than the interval allows (plus
// clock slack) is not believed: a poisoned record must not block repairs.
func (k *Keeper) takeForced(ctx context.Context) error {
	if err := k.forcedLimited(); err != nil {
		return err
	}
	now := k.now()
	interval := k.pol.ForcedInterval
	if interval <= 0 {
		return nil // no limit
	}
	lk := limitKey(k.key)
	sctx, cancel := k.storeCtx(ctx)
	it, err := k.store.Get(sctx, lk)
	cancel()
	if err == nil && it.ExpiresAt.After(now) && !it.ExpiresAt.After(now.Add(interval+store.ClockSlack)) {
		k.forcedUntil.Store(it.ExpiresAt.UnixNano())
		return &RefreshLimitedError{Name: k.name, Next: it.ExpiresAt}
	}
	next := now.Add(interval)
	k.forcedUntil.Store(next.UnixNano())
	k.write(ctx, lk, store.Item{Value: "forced", ExpiresAt: next})
	return nil
}
