// Package silenceper puts wechatconf's refresh engine behind
// github.com/silenceper/wechat/v2, so that code already written against
// silenceper's APIs keeps its calls and swaps only the token source:
//
//	h := silenceper.New(c) // c is a *conf.Conf
//	oa.SetAccessTokenHandle(h)
//	oa.GetJs().SetJsTicketHandle(h)
//
// silenceper's own cache has no lock across nodes, keeps a token WeChat has
// rejected until the cache entry expires, and treats a cache outage as a
// miss. With a Handle, every node asks the Conf instead: one grant per cycle
// for the whole cluster, a hot path with no I/O, and a rejected token
// replaced compare-then-refresh once the rejection is reported. silenceper
// returns WeChat's errcode to the caller but has no hook to report it, so
// this package offers two ways to report it: Transport, an
// http.RoundTripper for util.DefaultHTTPClient that sees every answer, and
// Do, a helper around one call.
//
// For a rolling migration, where nodes still on silenceper's own cache run
// beside nodes on a Handle, Legacy names silenceper's cache: its
// SeedOptions start the Conf from the token the old nodes use, and
// WithMirror writes the Conf's tokens back to that cache so that the old
// nodes use them instead of granting their own.
//
// The package lives in a module of its own so that wechatconf itself never
// depends on silenceper or its go-redis v8.
package silenceper

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/silenceper/wechat/v2/credential"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
)

// Credentials is what a Handle needs from a Conf. *conf.Conf has these
// methods, whether it grants itself or gets its credentials from a token
// server (tokenclient's ConfOptions); a test double can have them too.
type Credentials interface {
	// AccessToken returns a valid access token.
	AccessToken(ctx context.Context) (string, error)
	// JSAPITicket returns a valid JS-SDK ticket.
	JSAPITicket(ctx context.Context) (string, error)
	// Invalidate reports that WeChat rejected value and returns a valid
	// replacement, compare-then-refresh (conf.Conf.Invalidate).
	Invalidate(ctx context.Context, kind conf.Kind, value string) (string, error)
}

// Expiring is the optional part of Credentials that WithMirror uses: the
// credential with its expiry. *conf.Conf has it.
type Expiring interface {
	GetAccessToken(ctx context.Context) (store.Item, error)
	GetJSAPITicket(ctx context.Context) (store.Item, error)
}

// Handle is silenceper's token and ticket handle backed by Credentials. It
// implements credential.AccessTokenContextHandle (for
// officialaccount.SetAccessTokenHandle and
// miniprogram.SetAccessTokenContextHandle) and
// credential.JsTicketContextHandle (for js.Js.SetJsTicketHandle). It is safe
// for concurrent use.
type Handle struct {
	c      Credentials
	mirror *Legacy

	// The last two access tokens handed out, so that Transport knows a
	// rejected token is one of ours (and not, say, an OAuth user token).
	cur, prev atomic.Pointer[string]
	// The last ticket handed out, for the mirror.
	ticket atomic.Pointer[string]
}

// Handles are what silenceper asks for.
var (
	_ credential.AccessTokenContextHandle = (*Handle)(nil)
	_ credential.JsTicketContextHandle    = (*Handle)(nil)
)

// Option configures a Handle.
type Option func(*Handle)

// WithMirror makes the Handle write every new access token and ticket it
// hands out to silenceper's own cache, under the keys silenceper reads
// (Legacy.TokenKey, Legacy.TicketKey), with a lifetime that ends with the
// credential's. Nodes still on silenceper's cache then use the Conf's
// credentials and never find the key empty while the Conf keeps the
// credential fresh, so they make no grants of their own. The first write
// also covers a seeded credential (Legacy.SeedOptions): it rewrites the old
// entry to live as long as the seed, past the Conf's refresh. The write happens
// when the Handle first hands a new credential out, not at the grant itself:
// an app whose Handle is idle at the end of a token's life lets the old
// nodes grant once, which the Conf then meets as a rejection (one more
// grant), after which both agree again. Remove the option once no node runs
// silenceper's cache. It needs Credentials that are also Expiring (a
// *conf.Conf is); without that it does nothing.
func WithMirror(l Legacy) Option {
	return func(h *Handle) { h.mirror = &l }
}

// New returns a Handle on c.
func New(c Credentials, opts ...Option) *Handle {
	h := &Handle{c: c}
	for _, o := range opts {
		o(h)
	}
	return h
}

// GetAccessToken returns a valid access token. silenceper's calls that take
// no context use it.
func (h *Handle) GetAccessToken() (string, error) {
	return h.GetAccessTokenContext(context.Background())
}

// GetAccessTokenContext returns a valid access token. While the Conf's local
// copy is fresh it does no I/O and no allocation.
func (h *Handle) GetAccessTokenContext(ctx context.Context) (string, error) {
	tok, err := h.c.AccessToken(ctx)
	if err != nil {
		return "", err
	}
	if p := h.cur.Load(); p == nil || *p != tok {
		h.handedOut(ctx, tok)
	}
	return tok, nil
}

// handedOut records a new access token, off the hot path.
func (h *Handle) handedOut(ctx context.Context, tok string) {
	old := h.cur.Swap(&tok)
	if old != nil && *old != tok {
		h.prev.Store(old)
	}
	if h.mirror != nil {
		if e, ok := h.c.(Expiring); ok {
			if item, err := e.GetAccessToken(ctx); err == nil && item.Value == tok {
				h.mirror.put(ctx, h.mirror.TokenKey(), item)
			}
		}
	}
}

// issued reports whether tok is one of the last two access tokens h handed
// out.
func (h *Handle) issued(tok string) bool {
	for _, p := range [...]*string{h.cur.Load(), h.prev.Load()} {
		if p != nil && *p == tok {
			return true
		}
	}
	return false
}

// GetTicket returns a valid JS-SDK ticket. The access token silenceper
// passes is not needed: the Conf grants tickets with its own.
func (h *Handle) GetTicket(accessToken string) (string, error) {
	return h.GetTicketContext(context.Background(), accessToken)
}

// GetTicketContext returns a valid JS-SDK ticket, like GetTicket.
func (h *Handle) GetTicketContext(ctx context.Context, _ string) (string, error) {
	t, err := h.c.JSAPITicket(ctx)
	if err != nil {
		return "", err
	}
	if h.mirror != nil {
		if p := h.ticket.Load(); p == nil || *p != t {
			h.ticket.Store(&t)
			if e, ok := h.c.(Expiring); ok {
				if item, err := e.GetJSAPITicket(ctx); err == nil && item.Value == t {
					h.mirror.put(ctx, h.mirror.TicketKey(), item)
				}
			}
		}
	}
	return t, nil
}

// now is the package's clock.
var now = time.Now
