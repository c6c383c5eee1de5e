package conf

import (
	"context"
	"fmt"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

// AccessToken returns a valid access token (the seed's .access_token),
// granting or loading one if needed. When the local copy is fresh it costs
// no lock, no allocation and no I/O.
func (c *Conf) AccessToken(ctx context.Context) (string, error) {
	if item, ok := c.app.Load().keepers.Load(int(AccessToken)).Fresh(); ok {
		return item.Value, nil
	}
	item, err := c.getSlow(ctx, AccessToken)
	return item.Value, err
}

// JSAPITicket returns a valid JS-SDK ticket (the seed's .jsapi_ticket).
func (c *Conf) JSAPITicket(ctx context.Context) (string, error) {
	item, err := c.get(ctx, JSAPITicket)
	return item.Value, err
}

// WXCardTicket returns a valid card ticket (getticket?type=wx_card).
func (c *Conf) WXCardTicket(ctx context.Context) (string, error) {
	item, err := c.get(ctx, WXCardTicket)
	return item.Value, err
}

// GetAccessToken returns a valid access token with its expiry, for callers
// that cache it themselves (the seed's get_access_token).
func (c *Conf) GetAccessToken(ctx context.Context) (store.Item, error) {
	return c.get(ctx, AccessToken)
}

// GetJSAPITicket returns a valid jsapi ticket with its expiry (the seed's
// get_jsapi_ticket).
func (c *Conf) GetJSAPITicket(ctx context.Context) (store.Item, error) {
	return c.get(ctx, JSAPITicket)
}

// GetWXCardTicket returns a valid card ticket with its expiry.
func (c *Conf) GetWXCardTicket(ctx context.Context) (store.Item, error) {
	return c.get(ctx, WXCardTicket)
}

// Credential returns a valid credential of kind with its expiry: the
// getters above, for code that picks the kind at run time.
func (c *Conf) Credential(ctx context.Context, kind Kind) (store.Item, error) {
	if !kind.valid() {
		return store.Item{}, fmt.Errorf("conf: unknown kind %d", int(kind))
	}
	return c.get(ctx, kind)
}

// Source returns credentials of kind as a credential.Source (and
// credential.Invalidator), the one-method view that adapters, test doubles
// and credential.NewTransport compose with. It follows SetAppIDAppSecret.
func (c *Conf) Source(kind Kind) credential.Source {
	return source{c: c, kind: kind}
}

// GrantAccessToken grants a new access token now, whatever the store holds,
// stores it and returns WeChat's decoded answer (the seed's
// grant_access_token). It still takes the store's lease, so it never races
// another node's grant, and it counts as a forced refresh
// (WithForcedRefreshInterval). Day to day there is no need to call it: the
// Conf refreshes by itself. With WithStableToken it asks for the stable
// token without force_refresh, which returns the current one while it is
// valid.
func (c *Conf) GrantAccessToken(ctx context.Context) (*TokenResponse, error) {
	r, err := grant[*TokenResponse](c, ctx, AccessToken)
	return r, err
}

// GrantJSAPITicket grants a new jsapi ticket now, stores it and returns
// WeChat's decoded answer (the seed's grant_jsapi_ticket).
func (c *Conf) GrantJSAPITicket(ctx context.Context) (*TicketResponse, error) {
	return grant[*TicketResponse](c, ctx, JSAPITicket)
}

// GrantWXCardTicket grants a new card ticket now, like GrantJSAPITicket.
func (c *Conf) GrantWXCardTicket(ctx context.Context) (*TicketResponse, error) {
	return grant[*TicketResponse](c, ctx, WXCardTicket)
}

// grant runs Keeper.Grant for kind and returns WeChat's answer as R.
func grant[R any](c *Conf, ctx context.Context, kind Kind) (R, error) {
	var zero R
	_, k, err := c.keeper(kind)
	if err != nil {
		return zero, err
	}
	g, err := k.Grant(ctx)
	if err != nil {
		return zero, err
	}
	r, ok := g.Raw.(R)
	if !ok {
		return zero, fmt.Errorf("conf: Grant %s: no grant was made", kind)
	}
	return r, nil
}

// Invalidate reports that WeChat rejected value, a credential of kind
// (errcode 40001, 40014 or 42001), and returns a valid replacement. It is
// compare-then-refresh: under the store's lease, a new credential is granted
// only if the store still holds the rejected one; if another node already
// replaced it, theirs is used. Concurrent reports of the same value make one
// refresh. A refresh forced sooner than WithForcedRefreshInterval after the
// last one anywhere in the cluster fails with ErrRefreshLimited.
func (c *Conf) Invalidate(ctx context.Context, kind Kind, value string) (string, error) {
	if !kind.valid() {
		return "", fmt.Errorf("conf: unknown kind %d", int(kind))
	}
	if value == "" {
		return "", fmt.Errorf("conf: Invalidate %s: empty value", kind)
	}
	item, err := c.invalidate(ctx, kind, value)
	return item.Value, err
}
