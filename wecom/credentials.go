package wecom

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/wxapi"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wxcrypto"
)

// AccessToken returns a valid access token of the app. When the local copy
// is fresh it costs no lock, no allocation and no I/O.
func (a *App) AccessToken(ctx context.Context) (string, error) {
	k := a.keepers.Load(int(AccessToken)) // made by New
	if item, ok := k.Fresh(); ok {
		return item.Value, nil
	}
	item, err := k.Get(ctx)
	return item.Value, err
}

// get is the hot path of every getter: the Keeper's fresh copy, inlined.
func (a *App) get(ctx context.Context, kind Kind) (store.Item, error) {
	if item, ok := a.keepers.Load(int(kind)).Fresh(); ok {
		return *item, nil
	}
	k, err := a.keeper(kind)
	if err != nil {
		return store.Item{}, err
	}
	return k.Get(ctx)
}

// GetAccessToken returns a valid access token with its expiry.
func (a *App) GetAccessToken(ctx context.Context) (store.Item, error) {
	return a.get(ctx, AccessToken)
}

// JSAPITicket returns a valid corp jsapi ticket (for wx.config).
func (a *App) JSAPITicket(ctx context.Context) (string, error) {
	item, err := a.get(ctx, JSAPITicket)
	return item.Value, err
}

// AgentTicket returns a valid agent_config ticket of the app (for
// wx.agentConfig); it needs WithAgentID.
func (a *App) AgentTicket(ctx context.Context) (string, error) {
	item, err := a.get(ctx, AgentTicket)
	return item.Value, err
}

// Credential returns a valid credential of kind with its expiry.
func (a *App) Credential(ctx context.Context, kind Kind) (store.Item, error) {
	if !kind.valid() {
		return store.Item{}, fmt.Errorf("wecom: unknown kind %d", int(kind))
	}
	return a.get(ctx, kind)
}

// Invalidate reports that WeCom rejected value, a credential of kind
// (40014 or 42001), and returns a valid replacement: compare-then-refresh
// across every node, limited like package conf's.
func (a *App) Invalidate(ctx context.Context, kind Kind, value string) (string, error) {
	if !kind.valid() {
		return "", fmt.Errorf("wecom: unknown kind %d", int(kind))
	}
	k, err := a.keeper(kind)
	if err != nil {
		return "", err
	}
	item, err := k.Invalidate(ctx, value)
	return item.Value, err
}

// Source returns credentials of kind as a credential.Source (and
// Invalidator).
func (a *App) Source(kind Kind) credential.Source {
	if !kind.valid() {
		kind = AccessToken
	}
	if kind == AccessToken {
		return a.keepers.Load(int(AccessToken))
	}
	return source{a, kind}
}

// source is a ticket's credential.Source (and Invalidator): its Keeper is
// made on the first call.
type source struct {
	a    *App
	kind Kind
}

func (s source) Get(ctx context.Context) (store.Item, error) { return s.a.get(ctx, s.kind) }

func (s source) Invalidate(ctx context.Context, rejected string) (store.Item, error) {
	k, err := s.a.keeper(s.kind)
	if err != nil {
		return store.Item{}, err
	}
	return k.Invalidate(ctx, rejected)
}

// Do calls fn with a valid access token; if fn's error matches
// ErrTokenInvalid (40014, 42001 — not 40001, which in WeCom is a wrong
// secret) the token is replaced compare-then-refresh and fn called once
// more.
func (a *App) Do(ctx context.Context, fn func(token string) error) error {
	return a.keepers.Load(int(AccessToken)).Do(ctx, fn)
}

// Transport returns an http.RoundTripper that adds the app's access token
// to requests for the configured WeCom hosts (never to another host, never
// over a token the request carries) and, on 40014 or 42001, replaces the
// token it sent and sends once more. base nil means http.DefaultTransport.
func (a *App) Transport(base http.RoundTripper) http.RoundTripper {
	hosts := wxapi.Hosts(a.cfg.bases)
	t, err := credential.NewTransport(credential.TransportConfig{
		Source:  a.keepers.Load(int(AccessToken)),
		Param:   "access_token",
		Hosts:   hosts,
		Invalid: func(code int) bool { return wxapi.InvalidCode(wxapi.WeCom, code) },
		Base:    base,
	})
	if err != nil {
		return wxapi.FailingTransport{Err: err}
	}
	return t
}

// JSConfig signs pageURL for wx.config with the corp jsapi ticket; its
// AppID is the CorpID, as WeCom's JS-SDK wants.
func (a *App) JSConfig(ctx context.Context, pageURL string) (*wxcrypto.JSSDKConfig, error) {
	if pageURL == "" {
		return nil, errors.New("wecom: JSConfig: empty page URL")
	}
	ticket, err := a.JSAPITicket(ctx)
	if err != nil {
		return nil, err
	}
	cfg := wxcrypto.NewJSSDKConfig(a.corpID, ticket, pageURL, time.Now().Unix(), wxcrypto.NonceStr())
	return &cfg, nil
}

// AgentConfig is what a page passes to wx.agentConfig, with the JSON names
// the JS-SDK expects.
type AgentConfig struct {
	CorpID    string `json:"corpid"`
	AgentID   string `json:"agentid"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// AgentConfig signs pageURL for wx.agentConfig with the app's agent ticket
// (the same sha1 scheme as wx.config).
func (a *App) AgentConfig(ctx context.Context, pageURL string) (*AgentConfig, error) {
	if pageURL == "" {
		return nil, errors.New("wecom: AgentConfig: empty page URL")
	}
	ticket, err := a.AgentTicket(ctx)
	if err != nil {
		return nil, err
	}
	ts, nonce := time.Now().Unix(), wxcrypto.NonceStr()
	return &AgentConfig{
		CorpID: a.corpID, AgentID: strconv.FormatInt(a.agentID, 10), Timestamp: ts, NonceStr: nonce,
		Signature: wxcrypto.SignJSSDK(ticket, nonce, ts, pageURL),
	}, nil
}

// Crypto returns the callback crypto (WithCallback), with the CorpID as
// receiver id.
func (a *App) Crypto() (*wxcrypto.Crypto, error) {
	if a.crypto == nil {
		return nil, fmt.Errorf("%w: the callback's Token and EncodingAESKey (WithCallback)", ErrNeedParam)
	}
	return a.crypto, nil
}
