package conf

import (
	"context"
	"log/slog"
	"time"
)

// EventType says what happened in the refresh engine.
type EventType int

// The events a Conf reports to its observer (see WithObserver).
const (
	// EventGranted: this node called WeChat and got a new credential.
	EventGranted EventType = iota + 1
	// EventGrantFailed: a grant was attempted and failed (Err says why).
	EventGrantFailed
	// EventLoaded: a credential was taken from the store (or a refresh
	// function) instead of being granted here.
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

// Event is one thing the refresh engine did. It never carries a credential.
type Event struct {
	Type      EventType
	Kind      Kind
	Wait      time.Duration // EventLeaseWaited: time spent waiting
	ExpiresAt time.Time     // EventGranted, EventLoaded: the credential's expiry
	Err       error         // EventGrantFailed, EventStoreError
}

// emit reports e to the observer and the logger.
func (c *Conf) emit(e Event) {
	if c.cfg.observer != nil {
		c.cfg.observer(e)
	}
	l := c.cfg.logger
	ctx := context.Background()
	level := slog.LevelDebug
	if e.Err != nil {
		level = slog.LevelWarn
	}
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("kind", e.Kind.String()), slog.String("appid", c.AppID())}
	if !e.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", e.ExpiresAt))
	}
	if e.Wait > 0 {
		attrs = append(attrs, slog.Duration("wait", e.Wait))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	l.LogAttrs(ctx, level, "wechatconf: "+e.Type.String(), attrs...)
}
