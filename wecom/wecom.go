// Package wecom keeps a WeCom (企业微信) app's credentials valid for every
// node of a deployment: its access token, the corp jsapi ticket and the app's
// agent_config ticket, on the same refresh engine as package conf (package
// credential: one grant per cycle across any number of processes, the
// store's lease, compare-then-refresh, the bad-day rules).
//
// An App is one secret of one corp: an app with its AgentID, or a secret
// with none (contacts sync, customer contact). Each has its own token and
// its own store keys, which can never collide:
//
//	{wecom:<CorpID>:agent<AgentID>}:access_token    an app
//	{wecom:<CorpID>:s<20 hex digits>}:access_token  a secret with no AgentID
//
// The second form names the secret by a stable, non-reversible digest of it
// (SHA-256 of the CorpID and the secret), so no secret appears in a key.
//
// WeCom's errcodes are not the Official Account's. 40014 (invalid
// access_token) and 42001 (expired) mean "refresh": Do and Transport replace
// the token compare-then-refresh and retry once. 40001 on gettoken means a
// wrong secret: it is reported once as an ErrConfig naming the app, logged
// at error level with what to check, and never retried as a stale token
// (the engine does not ask WeCom again for credential.FatalBackoff). So are
// 40013 (invalid CorpID), 40056 (invalid AgentID) and 41004 (no secret).
// 301002 (the token belongs to another app) reaches the caller as it is:
// with keys per app it means the call was made with the wrong App.
//
// gettoken returns the same token to a repeated call while it is valid, so
// a node cut off from the store may ask for it without the lease: it kills
// no other node's token.
//
// Callbacks: Crypto returns a wxcrypto.Crypto with the CorpID as receiver;
// WeCom's URL check sends an encrypted echostr, which must be decrypted and
// echoed (see wxcrypto).
package wecom

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/keeperset"
	"github.com/wechatconf/wechatconf/internal/secret"
	"github.com/wechatconf/wechatconf/internal/wxapi"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wxcrypto"
)

// DefaultBaseURL is WeCom's API host.
const DefaultBaseURL = "https://qyapi.weixin.qq.com"

// The endpoints this package calls.
const (
	pathGetToken    = "/cgi-bin/gettoken"
	pathJSAPITicket = "/cgi-bin/get_jsapi_ticket"
	pathAgentTicket = "/cgi-bin/ticket/get"
)

// Kind names a credential an App keeps valid.
type Kind int

// The credentials of an App.
const (
	// AccessToken is the app's access_token (gettoken with its secret).
	AccessToken Kind = iota
	// JSAPITicket is the corp jsapi ticket (get_jsapi_ticket), which signs
	// wx.config.
	JSAPITicket
	// AgentTicket is the app's agent_config ticket (ticket/get), which
	// signs wx.agentConfig; it needs the AgentID.
	AgentTicket
	numKinds
)

// String returns the kind's name as used in store keys.
func (k Kind) String() string {
	switch k {
	case AccessToken:
		return "access_token"
	case JSAPITicket:
		return "jsapi_ticket"
	case AgentTicket:
		return "agent_ticket"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

func (k Kind) valid() bool { return k >= 0 && k < numKinds }

// ErrConfig matches a grant WeCom refused for a reason only a person can
// mend: a wrong secret (40001), an unknown CorpID (40013) or AgentID
// (40056), a missing secret (41004). The error names the app and says what
// to check; it is not retried for credential.FatalBackoff.
var ErrConfig = errors.New("wecom: configuration error")

// ErrNeedParam is returned when an operation needs a parameter that was not
// given: a grant without a secret, the agent ticket without an AgentID.
var ErrNeedParam = errors.New("wecom: missing parameter")

// Errors shared with package conf: the same values, matched with errors.Is.
var (
	// ErrTokenInvalid matches 40014 and 42001 on a call made with a token.
	ErrTokenInvalid = wxapi.ErrTokenInvalid
	// ErrQuota matches the frequency limits 45009 and 45033.
	ErrQuota = wxapi.ErrQuota
	// ErrBusy matches -1 once the bounded retries are spent.
	ErrBusy = wxapi.ErrBusy
	// ErrClosed is returned by every method after Close.
	ErrClosed = credential.ErrClosed
	// ErrUnavailable: no valid credential could be had in time.
	ErrUnavailable = credential.ErrUnavailable
	// ErrRefreshLimited: a forced refresh too soon after the last one.
	ErrRefreshLimited = credential.ErrRefreshLimited
)

// APIError is an errcode answer; for WeCom's its Platform is Platform. It
// is the same type as conf.APIError.
type APIError = wxapi.APIError

// Platform is APIError.Platform of WeCom's answers: errors.Is then applies
// WeCom's errcode table (40014 and 42001 are ErrTokenInvalid, 40001 is not).
const Platform = wxapi.WeCom

// Option configures an App in New.
type Option func(*config) error

type config struct {
	agentID     int64
	store       store.Store
	client      *http.Client
	bases       []string
	policy      credential.Policy
	logger      *slog.Logger
	observer    func(credential.Event)
	refreshOnly bool
	token, aes  string
	busyRetries int
	busyBackoff time.Duration
	refresh     [numKinds]refreshFuncs // WithRefreshFunc, WithInvalidateFunc: refresh.go
}

// WithAgentID sets the app's AgentID (企业应用的 AgentId). It names the
// app's keys and is needed for the agent ticket. Secrets with no AgentID
// (contacts sync, customer contact) leave it out.
func WithAgentID(id int64) Option {
	return func(c *config) error {
		if id <= 0 {
			return fmt.Errorf("wecom: WithAgentID: %d is not an AgentID", id)
		}
		c.agentID = id
		return nil
	}
}

// WithStore shares credentials through s; without it an App keeps them in
// memory, which is right only for a single process.
func WithStore(s store.Store) Option {
	return func(c *config) error {
		if s == nil {
			return errors.New("wecom: WithStore: nil store")
		}
		c.store = s
		return nil
	}
}

// WithHTTPClient sets the client used to call WeCom. The default verifies
// TLS and times out after 10 s.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) error {
		if hc == nil {
			return errors.New("wecom: WithHTTPClient: nil client")
		}
		c.client = hc
		return nil
	}
}

// WithBaseURLs sets the API hosts, tried in order on network errors and
// 5xx; the default is DefaultBaseURL.
func WithBaseURLs(urls ...string) Option {
	return func(c *config) error {
		bases, err := wxapi.ParseBases("wecom: WithBaseURLs", urls)
		if err != nil {
			return err
		}
		c.bases = bases
		return nil
	}
}

// WithPolicy sets the refresh engine's behaviour: margin, re-read, lease
// TTL, store-call bound, forced-refresh interval, spread (see
// credential.Policy; zero fields keep the defaults, the same as package
// conf's). Its Invalid and Fatal are WeCom's errcode tables whatever is
// given.
func WithPolicy(p credential.Policy) Option {
	return func(c *config) error { c.policy = p; return nil }
}

// WithLogger sets the logger; the default discards everything. Secrets are
// never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("wecom: WithLogger: nil logger")
		}
		c.logger = l
		return nil
	}
}

// WithObserver calls fn for every engine event, synchronously: keep it fast.
func WithObserver(fn func(credential.Event)) Option {
	return func(c *config) error { c.observer = fn; return nil }
}

// WithRefreshOnly makes this node one that never calls gettoken: it only
// reads the store, which a token server or another node keeps fresh.
func WithRefreshOnly() Option {
	return func(c *config) error { c.refreshOnly = true; return nil }
}

// WithCallback sets the Token and EncodingAESKey of the app's callback
// (接收消息服务器配置), for Crypto.
func WithCallback(token, encodingAESKey string) Option {
	return func(c *config) error {
		if err := wxcrypto.ValidateKey(encodingAESKey); err != nil {
			return fmt.Errorf("wecom: WithCallback: EncodingAESKey: %w", err)
		}
		if token == "" {
			return errors.New("wecom: WithCallback: empty Token")
		}
		c.token, c.aes = token, encodingAESKey
		return nil
	}
}

// App keeps one WeCom secret's credentials valid. It is safe for
// concurrent use. Create it with New; Close it when done.
type App struct {
	corpID  string
	agentID int64
	secret  string
	id      string // the app's part of its keys
	cfg     config
	api     wxapi.Client
	crypto  *wxcrypto.Crypto
	attrs   []slog.Attr // the log attributes of every Keeper of the app
	// The access token's Keeper is made by New, a ticket's on its first
	// use: most apps never ask for tickets, and a process may hold
	// thousands.
	keepers keeperset.Set
}

// New returns an App for the secret of corpID. The secret may be empty on
// a refresh-only node.
func New(corpID, secret string, opts ...Option) (*App, error) {
	cfg := config{bases: []string{DefaultBaseURL}, busyRetries: 3, busyBackoff: 200 * time.Millisecond}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := ValidateCorpID(corpID); err != nil {
		return nil, err
	}
	if secret == "" && (!cfg.refreshOnly || cfg.agentID == 0) {
		return nil, fmt.Errorf("%w: a secret, or WithAgentID on a refresh-only node, names the app", ErrNeedParam)
	}
	if cfg.store == nil {
		cfg.store = store.NewMemory()
	}
	if cfg.client == nil {
		cfg.client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	a := &App{
		corpID: corpID, agentID: cfg.agentID, secret: secret, cfg: cfg,
		api: wxapi.Client{HTTP: cfg.client, Bases: cfg.bases, BusyRetries: cfg.busyRetries, BusyBackoff: cfg.busyBackoff, Platform: wxapi.WeCom},
	}
	a.id = appID(corpID, cfg.agentID, secret)
	if cfg.aes != "" {
		c, err := wxcrypto.New(wxcrypto.Safe, cfg.token, cfg.aes, corpID)
		if err != nil {
			return nil, fmt.Errorf("wecom: callback crypto: %w", err)
		}
		a.crypto = c
	}
	for k, r := range cfg.refresh {
		// Checked here for every kind: a ticket's Keeper is made on
		// first use, too late for a configuration error.
		if r.invalidate != nil && r.fetch == nil {
			return nil, fmt.Errorf("wecom: WithInvalidateFunc(%s): Invalidate needs a refresh function for the same kind (WithRefreshFunc)", Kind(k))
		}
	}
	a.attrs = []slog.Attr{slog.String("corpid", corpID), slog.String("app", a.id)}
	if _, err := a.keeper(AccessToken); err != nil {
		return nil, err
	}
	return a, nil
}

// A keeperset.Set holds every kind.
var _ [keeperset.Max - numKinds]struct{}

// keeper returns the app's Keeper of kind, making it on first use. After
// Close it fails with ErrClosed.
func (a *App) keeper(kind Kind) (*credential.Keeper, error) {
	if k := a.keepers.Load(int(kind)); k != nil {
		return k, nil
	}
	return a.keepers.Get(int(kind), func() (*credential.Keeper, error) { return a.newKeeper(kind) })
}

// newKeeper makes the Keeper of kind. It starts nothing.
func (a *App) newKeeper(kind Kind) (*credential.Keeper, error) {
	pol := a.cfg.policy
	pol.Invalid = func(err error) bool { return errors.Is(err, ErrTokenInvalid) }
	pol.Fatal = func(err error) bool { return errors.Is(err, ErrConfig) || errors.Is(err, ErrQuota) }
	kc := credential.Config{
		Name: kind.String(), Key: a.Key(kind), Store: a.cfg.store, Policy: pol,
		Observer: a.cfg.observer, Logger: a.cfg.logger, LogAttrs: a.attrs,
	}
	a.cfg.refresh[kind].apply(&kc)
	if !a.cfg.refreshOnly {
		kc.Check = a.check(kind)
		switch kind {
		case AccessToken:
			kc.Grant = a.grantToken
		case JSAPITicket:
			kc.Grant = a.grantTicket(pathJSAPITicket, nil)
		case AgentTicket:
			kc.Grant = a.grantTicket(pathAgentTicket, url.Values{"type": {"agent_config"}})
		}
	}
	k, err := credential.New(kc)
	if err != nil {
		return nil, fmt.Errorf("wecom: %w", err)
	}
	return k, nil
}

// ValidateCorpID refuses what no CorpID is, so that every backend's key
// rules hold: CorpIDs are short ASCII letters and digits ("ww" or "wx" and
// 16 more). The error says what is wrong.
func ValidateCorpID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty CorpID", ErrNeedParam)
	}
	if err := wxapi.CheckID("CorpID", id); err != nil {
		return fmt.Errorf("wecom: %w", err)
	}
	return nil
}

// appID is the app's part of its keys: its AgentID, or a digest of the
// secret that cannot be turned back into it.
func appID(corpID string, agentID int64, secret string) string {
	if agentID > 0 {
		return "agent" + strconv.FormatInt(agentID, 10)
	}
	sum := sha256.Sum256([]byte("wechatconf/wecom\x00" + corpID + "\x00" + secret))
	return "s" + hex.EncodeToString(sum[:10])
}

// Key returns the store key of kind for this app.
func (a *App) Key(kind Kind) string {
	return "{wecom:" + a.corpID + ":" + a.id + "}:" + kind.String()
}

// CorpID returns the corp's id.
func (a *App) CorpID() string { return a.corpID }

// AgentID returns the app's AgentID, or 0.
func (a *App) AgentID() int64 { return a.agentID }

// String names the app without its secret.
func (a *App) String() string {
	return fmt.Sprintf("wecom.App{CorpID:%s App:%s Secret:%s}", a.corpID, a.id, redact(a.secret))
}

// LogValue implements slog.LogValuer without the secret.
func (a *App) LogValue() slog.Value {
	return slog.GroupValue(slog.String("corpid", a.corpID), slog.String("app", a.id))
}

func redact(s string) string { return secret.Redact(s) }

// name is the app for humans: CorpID and AgentID, or CorpID and the digest.
func (a *App) name() string { return a.corpID + "/" + a.id }

// check is what a grant of kind needs.
func (a *App) check(kind Kind) func() error {
	return func() error {
		switch {
		case a.secret == "":
			return fmt.Errorf("%w: app %s: granting %s needs the app's secret", ErrNeedParam, a.name(), kind)
		case kind == AgentTicket && a.agentID == 0:
			return fmt.Errorf("%w: app %s: the agent ticket needs WithAgentID", ErrNeedParam, a.name())
		}
		return nil
	}
}

// TokenResponse is WeCom's answer to gettoken. String redacts the token.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// String describes the response without revealing the token.
func (r TokenResponse) String() string {
	return fmt.Sprintf("{AccessToken:%s ExpiresIn:%d}", redact(r.AccessToken), r.ExpiresIn)
}

// TicketResponse is WeCom's answer to get_jsapi_ticket and ticket/get.
// String redacts the ticket.
type TicketResponse struct {
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
}

// String describes the response without revealing the ticket.
func (r TicketResponse) String() string {
	return fmt.Sprintf("{Ticket:%s ExpiresIn:%d}", redact(r.Ticket), r.ExpiresIn)
}

// maxExpiresIn is the longest lifetime a grant may claim, in seconds.
const maxExpiresIn = int64(store.MaxLifetime / time.Second)

// grantToken calls gettoken. A repeated call returns the same token while
// it is valid, so a grant without the lease harms nobody.
func (a *App) grantToken(ctx context.Context, _ credential.Request) (credential.Grant, error) {
	start := time.Now()
	var r TokenResponse
	err := a.api.Call(ctx, pathGetToken, url.Values{"corpid": {a.corpID}, "corpsecret": {a.secret}}, nil, &r)
	if err == nil {
		err = wxapi.CheckGrant(wxapi.WeCom, pathGetToken, r.AccessToken, r.ExpiresIn, maxExpiresIn)
	}
	if err != nil {
		return credential.Grant{}, a.configErr(err)
	}
	return credential.Grant{Item: store.Item{Value: r.AccessToken, ExpiresAt: start.Add(time.Duration(r.ExpiresIn) * time.Second)}, Raw: &r}, nil
}

// configErr turns the errcodes only a person can mend into an ErrConfig
// that names the app and says what to check.
func (a *App) configErr(err error) error {
	var ae *APIError
	if !errors.As(err, &ae) {
		return err
	}
	what := ""
	switch ae.Code {
	case 40001:
		what = "WeCom refused the secret: check the app's Secret in the admin console (应用管理, the app, Secret) and that this process has the current one"
	case 41004:
		what = "the secret is missing"
	case 40013:
		what = "WeCom does not know the CorpID: check it (我的企业, 企业ID)"
	case 40056:
		what = "WeCom does not know the AgentID: check it (应用管理, the app, AgentId)"
	default:
		return err
	}
	return fmt.Errorf("%w: app %s: %s: %w", ErrConfig, a.name(), what, err)
}

// grantTicket asks for a ticket with the app's token; a token WeCom
// rejects (40014, 42001) is replaced compare-then-refresh first.
func (a *App) grantTicket(path string, extra url.Values) credential.GrantFunc {
	return func(ctx context.Context, _ credential.Request) (credential.Grant, error) {
		tok := a.keepers.Load(int(AccessToken)) // made by New
		start := time.Now()
		var r TicketResponse
		err := tok.Do(ctx, func(token string) error {
			q := url.Values{"access_token": {token}}
			for k, v := range extra {
				q[k] = v
			}
			if err := a.api.Call(ctx, path, q, nil, &r); err != nil {
				return err
			}
			return wxapi.CheckGrant(wxapi.WeCom, path, r.Ticket, r.ExpiresIn, maxExpiresIn)
		})
		if err != nil {
			return credential.Grant{}, a.configErr(err)
		}
		return credential.Grant{Item: store.Item{Value: r.Ticket, ExpiresAt: start.Add(time.Duration(r.ExpiresIn) * time.Second)}, Raw: &r}, nil
	}
}

// Close ends every wait and waits for the refreshes in flight (their leases
// released). It does not close the store. Close is idempotent.
func (a *App) Close() error {
	a.keepers.Close()
	return nil
}
