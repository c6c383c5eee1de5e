package credential

import (
	"context"
	"log/slog"
	"time"
)

// EventType says what happened in the engine.
type EventType int

// The events a Keeper reports to its observer (Config.Observer).
const (
	// EventGranted: this node called WeChat and got a new credential.
	EventGranted EventType = iota + 1
	// EventGrantFailed: a grant was attempted and failed (Err says why).
	EventGrantFailed
	// EventLoaded: a credential was taken from the store (or Fetch)
	// instead of being granted here.
	EventLoaded
	// EventLeaseWaited: another node held the lease; Wait says how long
	// this node waited for its grant.
	EventLeaseWaited
	// EventInvalidated: a credential was reported rejected by WeChat.
	EventInvalidated
	// EventStoreError: the store failed (Err says how); the node kept
	// serving its local copy where it could.
	EventStoreError
	// EventMalformed: the store held a record that cannot be decoded or an
	// item that cannot be a WeChat credential (no value, or an expiry
	// further ahead than any WeChat grants); it was not served, and the
	// next grant replaces it. Err says what was found, never the value.
	EventMalformed
)

// String returns a short name for metrics labels: granted, grant_failed,
// loaded, lease_waited, invalidated, store_error, malformed.
func (t EventType) String() string {
	switch t {
	case EventGranted:
		return "granted"
	case EventGrantFailed:
		return "grant_failed"
	case EventLoaded:
		return "loaded"
	case EventLeaseWaited:
		return "lease_waited"
	case EventInvalidated:
		return "invalidated"
	case EventStoreError:
		return "store_error"
	case EventMalformed:
		return "malformed"
	}
	return "unknown"
}

// Event is one thing the engine did. It never carries a credential.
type Event struct {
	Type EventType
	// Name and Key are the credential's (Config.Name, Config.Key).
	Name, Key string
	Wait      time.Duration // EventLeaseWaited: time spent waiting
	ExpiresAt time.Time     // EventGranted, EventLoaded: the credential's expiry
	Err       error         // EventGrantFailed, EventStoreError, EventMalformed
	// Context carries the values (a trace span, say) of the call that
	// started the refresh; it is never cancelled by that caller.
	Context context.Context
}

// emit reports e to the observer and the logger.
func (k *Keeper) emit(ctx context.Context, e Event) {
	e.Name, e.Key, e.Context = k.name, k.key, ctx
	if k.obs != nil {
		k.obs(e)
	}
	level := slog.LevelDebug
	if e.Err != nil {
		level = slog.LevelWarn
	}
	if !k.log.Enabled(ctx, level) {
		return
	}
	attrs := append([]slog.Attr{slog.String("credential", k.name)}, k.attrs...)
	if !e.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", e.ExpiresAt))
	}
	if e.Wait > 0 {
		attrs = append(attrs, slog.Duration("wait", e.Wait))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	k.log.LogAttrs(ctx, level, "wechatconf: "+e.Type.String(), attrs...)
}
