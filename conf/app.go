package conf

// The Official Account / Mini Program face of the refresh engine: one
// credential.Keeper per kind, and the grant functions that call WeChat.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/keeperset"
	"github.com/wechatconf/wechatconf/store"
)

// app is the set of Keepers of one AppID. SetAppIDAppSecret replaces it
// whole; a Conf without an AppID has no Keepers. The access token's Keeper
// is made with the app; a ticket's on its first use, since most apps never
// ask for tickets and a process may hold thousands of apps.
type app struct {
	id, secret string
	c          *Conf
	attrs      []slog.Attr // the log attributes of every Keeper of the app
	keepers    keeperset.Set
}

// A keeperset.Set holds every kind.
var _ [keeperset.Max - numKinds]struct{}

// newApp builds the app of appID with its access token's Keeper.
func (c *Conf) newApp(appID, secret string) (*app, error) {
	a := &app{id: appID, secret: secret, c: c}
	if appID == "" {
		return a, nil
	}
	a.attrs = []slog.Attr{slog.String("appid", appID)}
	if _, err := a.keeper(AccessToken); err != nil {
		return nil, err
	}
	return a, nil
}

// keeper returns the app's Keeper of kind, making it on first use. After
// close it fails with ErrClosed.
func (a *app) keeper(kind Kind) (*credential.Keeper, error) {
	if k := a.keepers.Load(int(kind)); k != nil {
		return k, nil
	}
	if a.id == "" {
		return nil, fmt.Errorf("%w: %s needs an AppID (WithAppID)", ErrNeedParam, kind)
	}
	return a.keepers.Get(int(kind), func() (*credential.Keeper, error) { return a.newKeeper(kind) })
}

// newKeeper makes the Keeper of kind. It starts nothing.
func (a *app) newKeeper(kind Kind) (*credential.Keeper, error) {
	c := a.c
	cfg := credential.Config{
		Name:     kind.String(),
		Key:      Key(a.id, kind),
		Store:    c.cfg.store,
		Check:    a.check(kind),
		Policy:   c.policy(),
		Observer: c.observer(kind),
		Logger:   c.cfg.logger,
		LogAttrs: a.attrs,
	}
	if fn := c.cfg.refresh[kind]; fn != nil {
		cfg.Fetch = fn
	}
	if fn := c.cfg.invalidate[kind]; fn != nil {
		cfg.Invalidate = fn
	}
	if !c.cfg.refreshOnly {
		if kind == AccessToken {
			cfg.Grant = c.grantToken(a)
		} else {
			cfg.Grant = c.grantTicket(a, kind)
		}
	}
	k, err := credential.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("conf: %w", err)
	}
	return k, nil
}

// close closes the app's Keepers: their refreshes end and release their
// leases. No Keeper is made after it.
func (a *app) close() { a.keepers.Close() }

// check is what a grant needs, as the seed's NeedParamError says.
func (a *app) check(kind Kind) func() error {
	return func() error {
		if a.secret == "" {
			return fmt.Errorf("%w: granting %s needs the AppID and AppSecret (WithAppID)", ErrNeedParam, kind)
		}
		return nil
	}
}

// policy is the engine's behaviour as the options set it.
func (c *Conf) policy() credential.Policy {
	forced := c.cfg.forcedInterval
	if forced == 0 {
		forced = -1 // WithForcedRefreshInterval(0): no limit
	}
	grant := c.cfg.client.Timeout
	if grant <= 0 {
		grant = DefaultHTTPTimeout
	}
	return credential.Policy{
		Margin:         c.cfg.margin,
		Reread:         c.cfg.reread,
		LeaseTTL:       c.cfg.leaseTTL,
		MaxWait:        c.cfg.maxWait,
		StoreTimeout:   c.cfg.storeTimeout,
		GrantTimeout:   grant,
		ForcedInterval: forced,
		Spread:         c.cfg.spread,
		Invalid:        func(err error) bool { return errors.Is(err, ErrTokenInvalid) },
		Fatal:          isFatal,
	}
}

// isFatal: grant errors only a person can mend (a wrong AppSecret, an
// unknown AppID, a server IP missing from the whitelist, a frozen secret)
// or that every retry makes worse (the daily quota): the engine reports
// them once and does not ask again for credential.FatalBackoff.
func isFatal(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case 45009, 40164:
		return true
	case 40001, 40125, 40013, 40243, 41002, 41004:
		// On the grant endpoints 40001 means a wrong AppSecret.
		return ae.Endpoint == pathToken || ae.Endpoint == pathStableToken
	}
	return false
}

// observer turns the engine's events into conf's.
func (c *Conf) observer(kind Kind) func(credential.Event) {
	if c.cfg.observer == nil {
		return nil
	}
	return func(e credential.Event) {
		c.cfg.observer(Event{Type: e.Type, Kind: kind, Wait: e.Wait, ExpiresAt: e.ExpiresAt, Err: e.Err, Context: e.Context})
	}
}

// grantToken asks for an access token: classic, or the stable token with
// WithStableToken. Without the lease it asks for the stable token without
// force_refresh, which every node gets alike and which invalidates no
// classic token: an outage cannot start a chain of grants.
func (c *Conf) grantToken(a *app) credential.GrantFunc {
	return func(ctx context.Context, r credential.Request) (credential.Grant, error) {
		start := c.now()
		var (
			resp *TokenResponse
			err  error
		)
		switch {
		case r.Leaseless:
			resp, err = c.api.grantStableToken(ctx, a.id, a.secret, false)
			if err == nil && r.Rejected != "" && resp.AccessToken == r.Rejected {
				err = fmt.Errorf("%w: access_token: the stable token WeChat returns is the one it rejected; without the store's lease it is not forced", ErrUnavailable)
			}
		case !c.cfg.stable:
			resp, err = c.api.grantToken(ctx, a.id, a.secret)
		default:
			resp, err = c.api.grantStableToken(ctx, a.id, a.secret, false)
			if err == nil && r.Rejected != "" && resp.AccessToken == r.Rejected {
				// WeChat keeps returning the token it rejected: the
				// one case for a forced refresh.
				resp, err = c.api.grantStableToken(ctx, a.id, a.secret, true)
			}
		}
		if err != nil {
			return credential.Grant{}, err
		}
		return credential.Grant{Item: store.Item{Value: resp.AccessToken, ExpiresAt: start.Add(time.Duration(resp.ExpiresIn) * time.Second)}, Raw: resp}, nil
	}
}

// grantTicket asks for a ticket with the app's current access token; a
// token WeChat rejects is replaced there (compare-then-refresh) and the
// call made once more.
func (c *Conf) grantTicket(a *app, kind Kind) credential.GrantFunc {
	return func(ctx context.Context, _ credential.Request) (credential.Grant, error) {
		tok := a.keepers.Load(int(AccessToken)) // made with the app
		start := c.now()
		var resp *TicketResponse
		err := credential.Do(ctx, tok, tok.Policy().Invalid, func(token string) error {
			var err error
			resp, err = c.api.grantTicket(ctx, token, kind.ticketType())
			return err
		})
		if err != nil {
			return credential.Grant{}, err
		}
		return credential.Grant{Item: store.Item{Value: resp.Ticket, ExpiresAt: start.Add(time.Duration(resp.ExpiresIn) * time.Second)}, Raw: resp}, nil
	}
}

// keeper returns the current app's Keeper of kind.
func (c *Conf) keeper(kind Kind) (*app, *credential.Keeper, error) {
	a := c.app.Load()
	if c.closed.Load() {
		return a, nil, ErrClosed
	}
	k, err := a.keeper(kind)
	return a, k, err
}

// get returns a valid credential of kind: the hot path of every getter.
// A call that meets the Keeper of an app just switched away from goes on
// with the new app's.
func (c *Conf) get(ctx context.Context, kind Kind) (store.Item, error) {
	if item, ok := c.app.Load().keepers.Load(int(kind)).Fresh(); ok {
		return *item, nil
	}
	return c.getSlow(ctx, kind)
}

// getSlow is get past a fresh local copy.
func (c *Conf) getSlow(ctx context.Context, kind Kind) (store.Item, error) {
	for {
		a, k, err := c.keeper(kind)
		var item store.Item
		if err == nil {
			item, err = k.Get(ctx)
		}
		if err != nil && errors.Is(err, credential.ErrClosed) && !c.closed.Load() && c.app.Load() != a {
			continue
		}
		return item, err
	}
}

// invalidate is Keeper.Invalidate on the current app's Keeper.
func (c *Conf) invalidate(ctx context.Context, kind Kind, value string) (store.Item, error) {
	for {
		a, k, err := c.keeper(kind)
		var item store.Item
		if err == nil {
			item, err = k.Invalidate(ctx, value)
		}
		if err != nil && errors.Is(err, credential.ErrClosed) && !c.closed.Load() && c.app.Load() != a {
			continue
		}
		return item, err
	}
}

// source is a credential.Source (and Invalidator) that follows the Conf's
// current app.
type source struct {
	c    *Conf
	kind Kind
}

func (s source) Get(ctx context.Context) (store.Item, error) { return s.c.get(ctx, s.kind) }

func (s source) Invalidate(ctx context.Context, rejected string) (store.Item, error) {
	return s.c.invalidate(ctx, s.kind, rejected)
}
