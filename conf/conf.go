// Package conf holds a WeChat Official Account's configuration (Token,
// AppID, AppSecret, EncodingAESKey, encrypt mode) and keeps its access token
// and tickets valid for every node of a deployment. It is the Go successor
// of the Python wechat-sdk's WechatConf.
//
// Which method to use when:
//
//   - A token or ticket to call an API with: AccessToken, JSAPITicket,
//     WXCardTicket (the seed's attributes). With its expiry, to cache it
//     yourself: GetAccessToken, GetJSAPITicket, GetWXCardTicket (the seed's
//     get_*), or Credential for a kind chosen at run time.
//   - A call that WeChat may answer with 40001/40014/42001: Do (or DoWith
//     for a ticket) refreshes compare-then-refresh and retries once; for an
//     http.Client, Transport does the same for WeChat's hosts only. Code
//     that makes the call itself reports a rejection with Invalidate.
//   - Code that wants the one-method view (an adapter, a test double):
//     Source(kind), a credential.Source.
//   - GrantAccessToken, GrantJSAPITicket, GrantWXCardTicket (the seed's
//     grant_*): a grant now, whatever the store holds. Rarely needed: the
//     Conf refreshes by itself, and they count as forced refreshes.
//
// Credentials are shared through a store.Store (Redis, Memcached,
// PostgreSQL, bbolt, memory or the user's own functions). The refresh engine
// (package credential, one Keeper per kind) makes sure that exactly one node
// grants each new credential:
//
//  1. A fresh local copy is returned with no lock, no allocation, no I/O.
//  2. Otherwise one goroutine per process (a flight, bounded by its own
//     timeout, belonging to no caller) does the work. While the local copy
//     is still valid, callers get it at once; callers with none wait for
//     the flight, each on its own context.
//  3. It reads the store; a fresh item there is kept and returned.
//  4. Stale or absent: it takes the store's lease, reads again, and only
//     then calls WeChat, stores the grant (the newer item wins) and
//     releases. A node that finds the lease held waits for the new item.
//  5. A credential WeChat rejects (40001, 40014, 42001) is replaced only if
//     the store still holds that same one (see Invalidate, Do, Transport).
//
// Even a fresh local copy is re-read from the store every minute (see
// WithReread), because WeChat keeps a replaced token alive only about five
// minutes.
//
// On bad days:
//   - A store that fails or hangs is never taken for a miss; each store call
//     is bounded (WithStoreTimeout) and a valid local copy keeps being
//     served. With no valid copy left, a process grants without the lease at
//     most once per cycle, asking for the stable token without
//     force_refresh, which every node gets alike and which invalidates
//     nobody's token: an outage cannot start a grant storm.
//   - The lease covers the whole grant: its deadline counts from Lock, it is
//     extended while a grant runs long, and a grant is stored only while the
//     lease is ours.
//   - What the store holds is not trusted beyond what WeChat can mean
//     (store.Item.Plausible): a poisoned or undecodable record is never
//     served (EventMalformed) and the next grant replaces it. WeChat answers
//     with no token or an expires_in outside 1..7200 s are errors.
//   - Forced refreshes (a rejection of the stored credential, Grant*) are
//     limited across the cluster to one per WithForcedRefreshInterval (30 s)
//     per credential; a refused one fails with ErrRefreshLimited.
//   - Close waits for refreshes in flight and releases their leases.
package conf

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/internal/secret"
	"github.com/wechatconf/wechatconf/internal/wxapi"
	"github.com/wechatconf/wechatconf/store"
)

// Kind names a credential that a Conf keeps valid.
type Kind int

// The credentials a Conf keeps.
const (
	// AccessToken is the account's access_token.
	AccessToken Kind = iota
	// JSAPITicket is the JS-SDK ticket (getticket?type=jsapi).
	JSAPITicket
	// WXCardTicket is the card ticket (getticket?type=wx_card).
	WXCardTicket
	numKinds
)

// String returns the kind's name as used in store keys: access_token,
// jsapi_ticket or wx_card_ticket.
func (k Kind) String() string {
	switch k {
	case AccessToken:
		return "access_token"
	case JSAPITicket:
		return "jsapi_ticket"
	case WXCardTicket:
		return "wx_card_ticket"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

func (k Kind) valid() bool { return k >= 0 && k < numKinds }

// ticketType is the getticket type parameter for a ticket kind.
func (k Kind) ticketType() string {
	if k == WXCardTicket {
		return "wx_card"
	}
	return "jsapi"
}

// Key returns the store key under which a Conf keeps credential kind of the
// app appID: "{appID}:access_token" and so on. The braces keep an app's keys
// in one Redis Cluster hash slot; backends add their own prefix.
func Key(appID string, kind Kind) string {
	return "{" + appID + "}:" + kind.String()
}

// settings is an immutable snapshot of what the setters change. A setter
// swaps in a new snapshot; readers load it atomically.
type settings struct {
	token, appID, appSecret string
	mode                    string
	aesKey                  string
	// The pair replaced by the last SetToken/SetEncodingAESKey, accepted
	// by Crypto until rotatedAt plus the rotation grace.
	prevToken, prevAESKey string
	rotatedAt             time.Time
	crypto                cryptoCache
}

// Conf is a WeChat Official Account's configuration and the keeper of its
// credentials. It is safe for concurrent use. Create it with New; Close it
// when done.
//
// Conf redacts the AppSecret, the EncodingAESKey and the Token when printed
// or logged.
type Conf struct {
	cfg      config
	api      *api
	settings atomic.Pointer[settings]
	setMu    sync.Mutex          // serialises setters
	app      atomic.Pointer[app] // the Keepers of the current AppID
	closed   atomic.Bool
	once     sync.Once
}

// New returns a Conf configured by opts. It validates everything it can
// without network access: an unknown encrypt mode, an EncodingAESKey that is
// not 43 characters of base64 for 32 bytes, or a bad option is an error
// here. If seeds were given (WithAccessToken, WithJSAPITicket) they are
// written to the store, bounded by a few seconds; a store that fails then
// is logged, not fatal.
func New(opts ...Option) (*Conf, error) {
	cfg := defaults()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	for k, fn := range cfg.invalidate {
		// Checked here for every kind: a ticket's Keeper is made on
		// first use, too late for a configuration error.
		if fn != nil && cfg.refresh[k] == nil {
			return nil, fmt.Errorf("conf: WithInvalidateFunc(%s): Invalidate needs a refresh function for the same kind (WithRefreshFunc)", Kind(k))
		}
	}
	if cfg.store == nil {
		cfg.store = store.NewMemory()
	}
	if cfg.client == nil {
		cfg.client = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if cfg.maxWait == 0 {
		cfg.maxWait = 2 * cfg.leaseTTL
	}
	if cfg.storeTimeout == 0 {
		cfg.storeTimeout = DefaultStoreTimeout
	}
	warnInsecure(&cfg) // insecure.go
	s := &settings{token: cfg.token, appID: cfg.appID, appSecret: cfg.appSecret, mode: cfg.mode, aesKey: cfg.aesKey}
	if err := s.validate(); err != nil {
		return nil, err
	}
	c := &Conf{
		cfg: cfg,
		api: &api{wxapi.Client{HTTP: cfg.client, Bases: cfg.bases, BusyRetries: cfg.busyRetries, BusyBackoff: cfg.busyBackoff}},
	}
	c.settings.Store(s)
	a, err := c.newApp(s.appID, s.appSecret)
	if err != nil {
		return nil, err
	}
	c.app.Store(a)
	c.seed()
	return c, nil
}

// seed writes the seeds given to New into the store, each bounded by the
// store-call bound.
func (c *Conf) seed() {
	s := c.settings.Load()
	if c.cfg.seeds == nil {
		return
	}
	for k, item := range c.cfg.seeds {
		if item.IsZero() || s.appID == "" {
			continue
		}
		kind := Kind(k)
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.storeTimeout)
		err := c.cfg.store.Set(ctx, Key(s.appID, kind), item)
		cancel()
		if err != nil {
			c.cfg.logger.Warn("wechatconf: seeding the store failed", "kind", kind.String(), "appid", s.appID, "err", err.Error())
			if c.cfg.observer != nil {
				c.cfg.observer(Event{Type: EventStoreError, Kind: kind, Err: err, Context: ctx})
			}
		}
	}
	c.cfg.seeds = nil // written; New runs before anyone else sees c
}

// now is the Conf's clock. Tests move it with testing/synctest.
func (c *Conf) now() time.Time { return time.Now() }

// Token returns the Token used to sign server messages (the seed's .token).
func (c *Conf) Token() string { return c.settings.Load().token }

// AppID returns the current AppID.
func (c *Conf) AppID() string { return c.settings.Load().appID }

// AppSecret returns the current AppSecret. Treat it as a secret: it is the
// one value that lets anyone grant tokens for the account.
func (c *Conf) AppSecret() string { return c.settings.Load().appSecret }

// EncryptMode returns the message encryption mode: normal, compatible or
// safe.
func (c *Conf) EncryptMode() string { return c.settings.Load().mode }

// EncodingAESKey returns the current EncodingAESKey. Treat it as a secret.
func (c *Conf) EncodingAESKey() string { return c.settings.Load().aesKey }

// update applies fn to a copy of the current settings and swaps it in if it
// validates. When the app changes, its Keepers are replaced, and those of
// the previous app closed, before update returns.
func (c *Conf) update(fn func(s *settings)) error {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	old := c.settings.Load()
	s := &settings{
		token: old.token, appID: old.appID, appSecret: old.appSecret,
		mode: old.mode, aesKey: old.aesKey,
		prevToken: old.prevToken, prevAESKey: old.prevAESKey, rotatedAt: old.rotatedAt,
	}
	fn(s)
	if err := s.validate(); err != nil {
		return err
	}
	// Token and key rotate independently: each remembers its own
	// previous value, so changing one and then the other keeps the old
	// pair whole for the grace.
	if s.token != old.token {
		s.prevToken, s.rotatedAt = old.token, c.now()
	}
	if s.aesKey != old.aesKey {
		s.prevAESKey, s.rotatedAt = old.aesKey, c.now()
	}
	var stale *app
	if s.appID != old.appID || s.appSecret != old.appSecret {
		a, err := c.newApp(s.appID, s.appSecret)
		if err != nil {
			return err
		}
		stale = c.app.Swap(a)
	}
	c.settings.Store(s)
	if stale != nil {
		stale.close()
	}
	return nil
}

// SetToken changes the Token (the seed's assignable .token). Messages signed
// with the previous Token are still accepted for the key rotation grace.
func (c *Conf) SetToken(token string) error {
	return c.update(func(s *settings) { s.token = token })
}

// SetEncryptMode changes the encrypt mode: normal, compatible or safe.
func (c *Conf) SetEncryptMode(mode string) error {
	return c.update(func(s *settings) { s.mode = mode })
}

// SetEncodingAESKey changes the EncodingAESKey. Messages encrypted with the
// previous key are still accepted for the key rotation grace.
func (c *Conf) SetEncodingAESKey(key string) error {
	return c.update(func(s *settings) { s.aesKey = key })
}

// SetAppIDAppSecret switches the Conf to another app (the seed's
// set_appid_appsecret). From the moment it returns, no call returns a
// credential of the previous app: the local copies are keyed by app and the
// store keys carry the AppID.
func (c *Conf) SetAppIDAppSecret(appID, appSecret string) error {
	return c.update(func(s *settings) { s.appID, s.appSecret = appID, appSecret })
}

// String describes the Conf without revealing any secret.
func (c *Conf) String() string {
	s := c.settings.Load()
	return fmt.Sprintf("conf.Conf{AppID:%q AppSecret:%s Token:%s EncodingAESKey:%s EncryptMode:%s}",
		s.appID, redact(s.appSecret), redact(s.token), redact(s.aesKey), s.mode)
}

// LogValue implements slog.LogValuer without revealing any secret.
func (c *Conf) LogValue() slog.Value {
	s := c.settings.Load()
	return slog.GroupValue(
		slog.String("appid", s.appID),
		slog.String("appsecret", redact(s.appSecret)),
		slog.String("token", redact(s.token)),
		slog.String("encoding_aes_key", redact(s.aesKey)),
		slog.String("encrypt_mode", s.mode),
	)
}

func redact(s string) string { return secret.Redact(s) }

// Close ends every wait in progress and makes further calls fail with
// ErrClosed. It waits for the refreshes in flight to end (they are
// cancelled) and for their store leases to be released, so the store may be
// closed as soon as Close returns. It does not close the store, which the
// caller owns. Close is idempotent.
func (c *Conf) Close() error {
	c.once.Do(func() {
		c.setMu.Lock()
		c.closed.Store(true)
		c.setMu.Unlock()
	})
	c.app.Load().close()
	return nil
}
