package conf

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
//     WithForcedRefreshInterval (30 s by default) per credential, whatever
//     the number of callers, nodes or servers asking.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// leaselessRetry: how soon a lease-less stable token that WeChat rejected
// may be asked for again. Asking never invalidates anything; the bound
// only keeps a broken account from being asked on every call.
const leaselessRetry = 30 * time.Second

// leaselessGrant remembers this process's last grant without the lease.
type leaselessGrant struct {
	gen     uint64
	value   string    // "" when the attempt failed
	at      time.Time // when it was asked for
	staleAt time.Time // the next cycle begins
}

// grantLeaseless grants without the store's lease, within the limit.
func (cr *cred) grantLeaseless(ctx context.Context, s *settings, rejected string, storeErr error) (store.Item, any, error) {
	c := cr.c
	cr.mu.Lock()
	defer cr.mu.Unlock()
	now := c.now()
	if last := cr.leaseless; last.gen == s.gen && !last.at.IsZero() {
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
				ErrUnavailable, cr.kind, storeErr, now.Sub(last.at).Round(time.Millisecond), next.Sub(now).Round(time.Millisecond))
		}
	}
	gctx, cancel := context.WithTimeout(ctx, c.cfg.leaseTTL)
	defer cancel()
	item, raw, err := cr.grant(gctx, s, rejected, false, true)
	cr.leaseless = leaselessGrant{gen: s.gen, value: item.Value, at: now, staleAt: item.ExpiresAt.Add(-c.cfg.margin)}
	if err != nil {
		return store.Item{}, nil, fmt.Errorf("%w (granting without the store, which failed: %v)", err, storeErr)
	}
	p := cr.copyOf(item, s.gen, true, now)
	p.rereadAt = now.Add(min(retryAfterFailure, c.cfg.reread))
	cr.publish(p, now)
	cr.write(ctx, Key(s.appID, cr.kind), item) // best effort: it just failed
	return item, raw, nil
}

// ErrRefreshLimited matches the error of an Invalidate or Grant* call
// refused because a refresh of the same credential was forced less than
// WithForcedRefreshInterval ago, on any node sharing the store. The
// credential that was forced then is current; if WeChat still rejects it,
// try again after RefreshLimitedError.Next.
var ErrRefreshLimited = errors.New("conf: forced refresh limited")

// RefreshLimitedError is the error of a forced refresh refused by the
// cluster-wide limit. It matches ErrRefreshLimited.
type RefreshLimitedError struct {
	Kind Kind
	Next time.Time // the next forced refresh is allowed from here on
}

// Error implements error.
func (e *RefreshLimitedError) Error() string {
	return fmt.Sprintf("conf: %s: a refresh was forced less than the forced-refresh interval ago (WithForcedRefreshInterval); the next is allowed at %s",
		e.Kind, e.Next.UTC().Format(time.RFC3339))
}

// Is makes errors.Is match ErrRefreshLimited.
func (e *RefreshLimitedError) Is(target error) bool { return target == ErrRefreshLimited }

// limitKey is where the forced-refresh limit of key is kept: beside it, in
// the same Redis Cluster hash slot.
func limitKey(key string) string { return key + ":forced" }

// forcedLimited refuses a forced refresh this process already knows is too
// soon, without asking the store.
func (cr *cred) forcedLimited() error {
	if until := cr.forcedUntil.Load(); cr.c.now().UnixNano() < until {
		return &RefreshLimitedError{Kind: cr.kind, Next: time.Unix(0, until)}
	}
	return nil
}

// takeForced spends the forced-refresh allowance of key, or refuses. It
// runs under key's lease, so the read and the write do not race another
// node's. The limit is an item whose expiry is the moment the next forced
// refresh is allowed; each one moves it later, so newer-wins always keeps
// the latest. A limit item further ahead than the interval allows (plus
// clock slack) is not believed: a poisoned record must not block repairs.
func (cr *cred) takeForced(ctx context.Context, key string) error {
	c := cr.c
	if err := cr.forcedLimited(); err != nil {
		return err
	}
	now := c.now()
	interval := c.cfg.forcedInterval
	if interval <= 0 {
		return nil // WithForcedRefreshInterval(0): no limit
	}
	lk := limitKey(key)
	sctx, cancel := c.storeCtx(ctx)
	it, err := c.cfg.store.Get(sctx, lk)
	cancel()
	if err == nil && it.ExpiresAt.After(now) && !it.ExpiresAt.After(now.Add(interval+store.ClockSlack)) {
		cr.forcedUntil.Store(it.ExpiresAt.UnixNano())
		return &RefreshLimitedError{Kind: cr.kind, Next: it.ExpiresAt}
	}
	next := now.Add(interval)
	cr.forcedUntil.Store(next.UnixNano())
	cr.write(ctx, lk, store.Item{Value: "forced", ExpiresAt: next})
	return nil
}
