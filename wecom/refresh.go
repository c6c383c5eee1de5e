package wecom

// Credentials from somewhere other than WeCom: a business node fed by a
// token server (package tokenclient speaks its protocol), as conf's
// WithRefreshFunc and WithInvalidateFunc do for the Official Account.

import (
	"context"
	"fmt"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

// refreshFuncs are one kind's functions of WithRefreshFunc and
// WithInvalidateFunc.
type refreshFuncs struct {
	fetch      func(ctx context.Context) (store.Item, error)
	invalidate func(ctx context.Context, rejected string) (store.Item, error)
}

// apply sets them on the kind's Keeper configuration.
func (r refreshFuncs) apply(kc *credential.Config) {
	kc.Fetch, kc.Invalidate = r.fetch, r.invalidate
}

// WithRefreshFunc makes the App obtain credentials of kind from fn instead
// of asking WeCom: a business node that never holds the app's secret (with
// WithRefreshOnly and WithAgentID to name the app). What fn returns is kept
// in the store for the node's peers and served from the local copy until
// its refresh point, like a grant.
func WithRefreshFunc(kind Kind, fn func(ctx context.Context) (store.Item, error)) Option {
	return func(c *config) error {
		if !kind.valid() {
			return fmt.Errorf("wecom: WithRefreshFunc: unknown kind %d", int(kind))
		}
		if fn == nil {
			return fmt.Errorf("wecom: WithRefreshFunc: nil function for %s", kind)
		}
		c.refresh[kind].fetch = fn
		return nil
	}
}

// WithInvalidateFunc goes with WithRefreshFunc: when WeCom rejects a
// credential of kind (Invalidate, Do, Transport), fn is called with the
// rejected value instead of the refresh function, so that the source (a
// token server's POST /v1/invalidate) replaces it compare-then-refresh.
// Without WithRefreshFunc for kind, New fails.
func WithInvalidateFunc(kind Kind, fn func(ctx context.Context, rejected string) (store.Item, error)) Option {
	return func(c *config) error {
		if !kind.valid() {
			return fmt.Errorf("wecom: WithInvalidateFunc: unknown kind %d", int(kind))
		}
		if fn == nil {
			return fmt.Errorf("wecom: WithInvalidateFunc: nil function for %s", kind)
		}
		c.refresh[kind].invalidate = fn
		return nil
	}
}
