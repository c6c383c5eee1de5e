package conf

import (
	"context"
	"time"

	"github.com/wechatconf/wechatconf/credential"
)

// EventType says what happened in the refresh engine (see package
// credential, which reports the same events).
type EventType = credential.EventType

// The events a Conf reports to its observer (see WithObserver).
const (
	// EventGranted: this node called WeChat and got a new credential.
	EventGranted = credential.EventGranted
	// EventGrantFailed: a grant was attempted and failed (Err says why).
	EventGrantFailed = credential.EventGrantFailed
	// EventLoaded: a credential was taken from the store (or a refresh
	// function) instead of being granted here.
	EventLoaded = credential.EventLoaded
	// EventLeaseWaited: another node held the lease; Wait says how long
	// this node waited for its grant.
	EventLeaseWaited = credential.EventLeaseWaited
	// EventInvalidated: a credential was reported rejected by WeChat.
	EventInvalidated = credential.EventInvalidated
	// EventStoreError: the store failed (Err says how); the node kept
	// serving its local copy where it could.
	EventStoreError = credential.EventStoreError
	// EventMalformed: the store held a record that cannot be decoded or an
	// item that cannot be a WeChat credential; it was not served, and the
	// next grant replaces it.
	EventMalformed = credential.EventMalformed
)

// Event is one thing the refresh engine did. It never carries a credential.
type Event struct {
	Type      EventType
	Kind      Kind
	Wait      time.Duration // EventLeaseWaited: time spent waiting
	ExpiresAt time.Time     // EventGranted, EventLoaded: the credential's expiry
	Err       error         // EventGrantFailed, EventStoreError, EventMalformed
	// Context carries the values (a trace span, say) of the call that
	// started the refresh; that caller's cancellation does not reach it.
	Context context.Context
}
