package conf

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/wxapi"
	"github.com/wechatconf/wechatconf/store"
)

// Defaults. The margin and the re-read interval are chosen together; see
// WithMargin and WithReread for the reasons.
const (
	DefaultMargin      = credential.DefaultMargin
	DefaultReread      = credential.DefaultReread
	DefaultLeaseTTL    = credential.DefaultLeaseTTL
	DefaultHTTPTimeout = 10 * time.Second
	// DefaultStoreTimeout bounds each store call (see WithStoreTimeout).
	DefaultStoreTimeout = credential.DefaultStoreTimeout
	// DefaultForcedRefreshInterval is the least time between two forced
	// refreshes of one credential across the cluster (see
	// WithForcedRefreshInterval).
	DefaultForcedRefreshInterval = credential.DefaultForcedInterval
)

// Option configures a Conf in New.
type Option func(*config) error

// RefreshFunc returns a valid credential from somewhere other than WeChat:
// the Python seed's access_token_refreshfunc, for business nodes that must
// never grant. See WithRefreshFunc.
type RefreshFunc func(ctx context.Context) (store.Item, error)

// InvalidateFunc returns a valid replacement for a credential WeChat
// rejected, from somewhere other than WeChat: a token server's
// compare-then-refresh (its POST /v1/invalidate). See WithInvalidateFunc.
type InvalidateFunc func(ctx context.Context, rejected string) (store.Item, error)

type config struct {
	token, appID, appSecret string
	mode                    string
	aesKey                  string
	store                   store.Store
	client                  *http.Client
	bases                   []string
	stable                  bool
	margin, reread          time.Duration
	leaseTTL                time.Duration
	maxWait                 time.Duration
	storeTimeout            time.Duration
	forcedInterval          time.Duration
	spread                  float64
	logger                  *slog.Logger
	observer                func(Event)
	refreshOnly             bool
	refresh                 [numKinds]RefreshFunc
	invalidate              [numKinds]InvalidateFunc
	seeds                   *[numKinds]store.Item // nil without seeds: most Confs have none
	busyRetries             int
	busyBackoff             time.Duration
	rotationGrace           time.Duration
	replay                  replayWindow // WithReplayWindow, in replay.go
}

func defaults() config {
	return config{
		mode:           "safe",
		bases:          DefaultBaseURLs,
		margin:         DefaultMargin,
		reread:         DefaultReread,
		leaseTTL:       DefaultLeaseTTL,
		forcedInterval: DefaultForcedRefreshInterval,
		spread:         credential.DefaultSpread,
		logger:         slog.New(slog.DiscardHandler),
		busyRetries:    3,
		busyBackoff:    200 * time.Millisecond,
		rotationGrace:  10 * time.Minute,
	}
}

// WithToken sets the Token from the WeChat console's developer settings,
// used to sign server messages.
func WithToken(token string) Option {
	return func(c *config) error { c.token = token; return nil }
}

// WithAppID sets the AppID and AppSecret. Both are needed to grant an access
// token; the AppID alone also names the app's keys in the store, which is
// enough for a refresh-only node.
func WithAppID(appID, appSecret string) Option {
	return func(c *config) error { c.appID, c.appSecret = appID, appSecret; return nil }
}

// WithEncryptMode sets the message encryption mode: "normal" (plaintext),
// "compatible" or "safe" (the default, as in the Python seed).
func WithEncryptMode(mode string) Option {
	return func(c *config) error { c.mode = mode; return nil }
}

// WithEncodingAESKey sets the 43-character EncodingAESKey from the console.
func WithEncodingAESKey(key string) Option {
	return func(c *config) error { c.aesKey = key; return nil }
}

// WithStore shares credentials through s (Redis, Memcached, PostgreSQL,
// bbolt, or any store.Store). Without it a Conf keeps them in memory, which
// is right only for a single process.
func WithStore(s store.Store) Option {
	return func(c *config) error {
		if s == nil {
			return fmt.Errorf("conf: WithStore: nil store")
		}
		c.store = s
		return nil
	}
}

// WithHTTPClient sets the client used to call WeChat: for a proxy, custom
// TLS roots or tests. The default verifies TLS and times out after
// DefaultHTTPTimeout. Unlike the Python seed's checkssl=False default,
// certificate checks are never off unless the given client turns them off.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) error {
		if hc == nil {
			return fmt.Errorf("conf: WithHTTPClient: nil client")
		}
		c.client = hc
		return nil
	}
}

// WithBaseURLs sets the WeChat API hosts, tried in order: a network failure
// or HTTP 5xx on one moves to the next. The default is DefaultBaseURLs.
func WithBaseURLs(urls ...string) Option {
	return func(c *config) error {
		bases, err := wxapi.ParseBases("conf: WithBaseURLs", urls)
		if err != nil {
			return err
		}
		c.bases = bases
		return nil
	}
}

// WithStableToken grants access tokens through /cgi-bin/stable_token instead
// of /cgi-bin/token. Stable tokens are a family apart: a grant does not
// invalidate the classic token other systems may use, and repeated calls
// return the same token while it is valid. A forced refresh (which WeChat
// limits to 20 a day, 30 s apart) is made only when WeChat rejected the
// token the platform keeps returning.
func WithStableToken() Option {
	return func(c *config) error { c.stable = true; return nil }
}

// WithMargin sets how long before its expiry a credential counts as stale
// and is refreshed. The Python seed uses 60 s, which suits one process. With
// many nodes the default, DefaultMargin (3 min), is longer so that (a) every
// node re-reads the store (DefaultReread, 1 min) and sees the new grant
// before its own copy goes stale, so only the lease holder grants; (b) a slow
// grant or a lease held by a crashed node (DefaultLeaseTTL, 30 s) still
// finishes before the old token dies; and it stays under 5 min so that a
// stable token, which WeChat rolls 5 min before its expiry, is never stale
// on arrival.
func WithMargin(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("conf: WithMargin: negative margin %v", d)
		}
		c.margin = d
		return nil
	}
}

// WithReread sets how often a node re-reads the store even when its local
// copy looks fresh. WeChat keeps the previous token valid about five minutes
// after a new grant; a node must notice a grant made elsewhere (another
// node, an operator, a forced refresh) within that window. The default is
// DefaultReread (1 min). Each app's credentials are re-read at a phase of
// their own within the interval, so that a process holding many apps reads
// the store evenly (about apps/interval a second), not all at once.
func WithReread(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("conf: WithReread: interval must be positive, got %v", d)
		}
		c.reread = d
		return nil
	}
}

// WithLeaseTTL sets how long the store lease that guards a grant lasts,
// counted from the Lock call. A crashed holder blocks other nodes for at
// most this long. A grant that runs longer extends the lease (every third
// of the TTL) when the store's leases implement store.Extender, as every
// backend of this module does; otherwise the grant is cancelled when the
// lease may have lapsed. A grant is stored only while the lease is ours.
func WithLeaseTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < time.Second {
			return fmt.Errorf("conf: WithLeaseTTL: %v is under one second", d)
		}
		c.leaseTTL = d
		return nil
	}
}

// WithMaxWait bounds how long a refresh waits for another node's grant, or
// a refresh-only node for a credential to appear in the store. While the
// other node still holds the lease (it extends it while its grant runs
// long), waiting goes on until the lease lapses: a crashed holder's lease
// lapses within its TTL. Callers wait no longer than their own context
// allows in any case. The default is twice the lease TTL.
func WithMaxWait(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("conf: WithMaxWait: must be positive, got %v", d)
		}
		c.maxWait = d
		return nil
	}
}

// WithStoreTimeout bounds each store call (Get, Set, Lock, Extend, Unlock)
// on its own, so a hung store holds a refresh for that long at most while
// callers keep getting their valid local copy. A call past the bound counts
// as a store failure. The default is DefaultStoreTimeout (2 s). A lease
// extension is bounded by a third of the lease TTL if that is shorter.
func WithStoreTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("conf: WithStoreTimeout: must be positive, got %v", d)
		}
		c.storeTimeout = d
		return nil
	}
}

// WithForcedRefreshInterval sets the least time between two forced
// refreshes of one credential, across every node sharing the store. A
// refresh is forced when WeChat rejects the credential the store still holds
// (Invalidate, Do, Transport, the server's /v1/invalidate) and by Grant*.
// Without a limit, one buggy client or anyone holding a server key could
// spend the day's grant quota (2000 for an Official Account) in minutes, and
// WeChat itself answers a stray 40001 now and then. A refused refresh fails
// with ErrRefreshLimited; a genuine revocation is repaired within one
// interval. The default, DefaultForcedRefreshInterval (30 s), allows at most
// 3 forced grants in any minute, and matches the interval WeChat itself
// imposes on stable_token's force_refresh. 0 turns the limit off.
func WithForcedRefreshInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("conf: WithForcedRefreshInterval: negative interval %v", d)
		}
		c.forcedInterval = d
		return nil
	}
}

// WithRefreshSpread sets the part of the margin over which refresh points
// are spread: each credential is refreshed somewhere between its expiry less
// the margin and that point plus fraction × margin, the place picked from
// the credential's value so that every node agrees on it. Credentials
// granted in the same second (a cold start of many apps, a token server for
// a whole company) then do not all come due in the same second of the next
// cycle. The default is credential.DefaultSpread (a third); 0 turns it off.
func WithRefreshSpread(fraction float64) Option {
	return func(c *config) error {
		if fraction < 0 || fraction > 1 {
			return fmt.Errorf("conf: WithRefreshSpread: %v is outside 0..1", fraction)
		}
		c.spread = fraction
		if fraction == 0 {
			c.spread = -1
		}
		return nil
	}
}

// WithBusyRetries sets how many times a "system busy" (errcode -1) answer is
// retried, with exponential backoff from initial. The default is 3 retries
// from 200 ms.
func WithBusyRetries(n int, initial time.Duration) Option {
	return func(c *config) error {
		if n < 0 || initial <= 0 {
			return fmt.Errorf("conf: WithBusyRetries: need n >= 0 and a positive backoff, got %d, %v", n, initial)
		}
		c.busyRetries, c.busyBackoff = n, initial
		return nil
	}
}

// WithLogger sets the logger. The default discards everything. Secrets are
// never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return fmt.Errorf("conf: WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithObserver calls fn for every Event, synchronously: keep it fast (count,
// do not block). Use it to wire metrics.
func WithObserver(fn func(Event)) Option {
	return func(c *config) error { c.observer = fn; return nil }
}

// WithRefreshOnly makes this node a business node that never calls WeChat
// to grant anything: it only reads the store, which a token server or
// another node keeps fresh. This is the Python seed's refreshfunc setup
// without a function; see WithRefreshFunc for one with.
func WithRefreshOnly() Option {
	return func(c *config) error { c.refreshOnly = true; return nil }
}

// WithRefreshFunc makes this node obtain credentials of kind from fn instead
// of granting them at WeChat (the Python seed's access_token_refreshfunc and
// jsapi_ticket_refreshfunc). What fn returns is kept in the store for the
// node's peers. Pair it with WithInvalidateFunc so that WeChat's rejections
// reach the source; package tokenclient's ConfOptions sets both for a
// token server.
func WithRefreshFunc(kind Kind, fn RefreshFunc) Option {
	return func(c *config) error {
		if !kind.valid() {
			return fmt.Errorf("conf: WithRefreshFunc: unknown kind %d", int(kind))
		}
		if fn == nil {
			return fmt.Errorf("conf: WithRefreshFunc: nil function for %s", kind)
		}
		c.refresh[kind] = fn
		return nil
	}
}

// WithInvalidateFunc goes with WithRefreshFunc: when WeChat rejects a
// credential of kind (Invalidate, Do, Transport, a ticket's grant), fn is
// called with the rejected value instead of the refresh function, so that
// the source can replace it compare-then-refresh on its side; a refresh
// function alone cannot know of the rejection and would hand the same value
// back. It needs WithRefreshFunc for the same kind: without it, building
// the app's credentials fails (in New, or SetAppIDAppSecret).
func WithInvalidateFunc(kind Kind, fn InvalidateFunc) Option {
	return func(c *config) error {
		if !kind.valid() {
			return fmt.Errorf("conf: WithInvalidateFunc: unknown kind %d", int(kind))
		}
		if fn == nil {
			return fmt.Errorf("conf: WithInvalidateFunc: nil function for %s", kind)
		}
		c.invalidate[kind] = fn
		return nil
	}
}

// WithAccessToken seeds a known access token and its expiry (the Python
// seed's access_token and access_token_expires_at parameters). It is written
// to the store in New, where the newer item wins, so an old seed never
// replaces a newer token.
func WithAccessToken(value string, expiresAt time.Time) Option {
	return withSeed(AccessToken, value, expiresAt)
}

// WithJSAPITicket seeds a known jsapi ticket and its expiry, like
// WithAccessToken.
func WithJSAPITicket(value string, expiresAt time.Time) Option {
	return withSeed(JSAPITicket, value, expiresAt)
}

func withSeed(k Kind, value string, expiresAt time.Time) Option {
	return func(c *config) error {
		if value == "" || expiresAt.IsZero() {
			return fmt.Errorf("conf: seed %s: need both a value and an expiry", k)
		}
		if c.seeds == nil {
			c.seeds = new([numKinds]store.Item)
		}
		c.seeds[k] = store.Item{Value: value, ExpiresAt: expiresAt}
		return nil
	}
}

// WithKeyRotationGrace sets how long, after SetToken or SetEncodingAESKey,
// messages signed or encrypted with the previous Token and key are still
// accepted, so that a rotation in the WeChat console loses no message. The
// default is 10 minutes; 0 turns it off.
func WithKeyRotationGrace(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("conf: WithKeyRotationGrace: negative duration %v", d)
		}
		c.rotationGrace = d
		return nil
	}
}
