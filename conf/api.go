package conf

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/wechatconf/wechatconf/internal/wxapi"
	"github.com/wechatconf/wechatconf/store"
)

// The WeChat endpoints this package calls.
const (
	pathToken       = "/cgi-bin/token"
	pathStableToken = "/cgi-bin/stable_token"
	pathTicket      = "/cgi-bin/ticket/getticket"
)

// DefaultBaseURLs are WeChat's API hosts in the order they are tried: the
// main domain, then the disaster-recovery one. Regional hosts
// (sh./sz./hk.api.weixin.qq.com) can be given with WithBaseURLs.
var DefaultBaseURLs = []string{"https://api.weixin.qq.com", "https://api2.weixin.qq.com"}

// TokenResponse is WeChat's answer to a grant of an access token
// (/cgi-bin/token or /cgi-bin/stable_token). String redacts the token.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// String describes the response without revealing the token.
func (r TokenResponse) String() string {
	return fmt.Sprintf("{AccessToken:%s ExpiresIn:%d}", redact(r.AccessToken), r.ExpiresIn)
}

// GoString is like String.
func (r TokenResponse) GoString() string { return "conf.TokenResponse" + r.String() }

// TicketResponse is WeChat's answer to /cgi-bin/ticket/getticket. String
// redacts the ticket.
type TicketResponse struct {
	ErrCode   int    `json:"errcode"`
	ErrMsg    string `json:"errmsg"`
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
}

// String describes the response without revealing the ticket.
func (r TicketResponse) String() string {
	return fmt.Sprintf("{ErrCode:%d ErrMsg:%s Ticket:%s ExpiresIn:%d}", r.ErrCode, r.ErrMsg, redact(r.Ticket), r.ExpiresIn)
}

// GoString is like String.
func (r TicketResponse) GoString() string { return "conf.TicketResponse" + r.String() }

// api calls WeChat's Official Account API.
type api struct{ wxapi.Client }

// grantToken calls /cgi-bin/token.
func (a *api) grantToken(ctx context.Context, appID, secret string) (*TokenResponse, error) {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret}}
	var r TokenResponse
	if err := a.Call(ctx, pathToken, q, nil, &r); err != nil {
		return nil, err
	}
	return &r, checkGrant(pathToken, r.AccessToken, r.ExpiresIn)
}

// grantStableToken calls /cgi-bin/stable_token. force is set only on
// explicit request: WeChat allows 20 forced refreshes a day, 30 s apart.
func (a *api) grantStableToken(ctx context.Context, appID, secret string, force bool) (*TokenResponse, error) {
	body := struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}{"client_credential", appID, secret, force}
	var r TokenResponse
	if err := a.Call(ctx, pathStableToken, nil, body, &r); err != nil {
		return nil, err
	}
	return &r, checkGrant(pathStableToken, r.AccessToken, r.ExpiresIn)
}

// grantTicket calls /cgi-bin/ticket/getticket.
func (a *api) grantTicket(ctx context.Context, accessToken, typ string) (*TicketResponse, error) {
	q := url.Values{"access_token": {accessToken}, "type": {typ}}
	var r TicketResponse
	if err := a.Call(ctx, pathTicket, q, nil, &r); err != nil {
		return nil, err
	}
	return &r, checkGrant(pathTicket, r.Ticket, r.ExpiresIn)
}

// maxExpiresIn is the longest lifetime a grant may claim, in seconds.
const maxExpiresIn = int64(store.MaxLifetime / time.Second)

// checkGrant refuses answers that carry no credential or a lifetime WeChat
// cannot mean.
func checkGrant(path, value string, expiresIn int64) error {
	return wxapi.CheckGrant(wxapi.OfficialAccount, path, value, expiresIn, maxExpiresIn)
}
