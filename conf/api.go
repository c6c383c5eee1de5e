package conf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

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

// maxBody bounds what is read of a WeChat answer; credential answers are a
// few hundred bytes.
const maxBody = 1 << 20

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

// errBody is the part of every WeChat answer that reports errors.
type errBody struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// api calls WeChat: failover across base URLs on network errors and 5xx,
// bounded exponential backoff on errcode -1, no retry on other errcodes.
type api struct {
	client      *http.Client
	bases       []string
	busyRetries int
	busyBackoff time.Duration
}

// call performs one logical request and decodes the JSON answer into out.
// query holds the parameters (it may hold the secret: it never reaches an
// error). body, when non-nil, is POSTed as JSON.
func (a *api) call(ctx context.Context, path string, query url.Values, body any, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("conf: wechat %s: encode request: %w", path, err)
		}
	}
	backoff := a.busyBackoff
	for attempt := 0; ; attempt++ {
		raw, err := a.failover(ctx, path, query, payload)
		if err != nil {
			return err
		}
		var eb errBody
		if err := json.Unmarshal(raw, &eb); err != nil {
			return fmt.Errorf("conf: wechat %s: malformed answer (%d bytes): %w", path, len(raw), err)
		}
		if eb.ErrCode == -1 && attempt < a.busyRetries {
			// Full jitter keeps many nodes from retrying in step.
			d := backoff/2 + rand.N(backoff/2+1)
			if err := sleep(ctx, d); err != nil {
				return err
			}
			backoff *= 2
			continue
		}
		if eb.ErrCode != 0 {
			return &APIError{Endpoint: path, Code: eb.ErrCode, Msg: eb.ErrMsg}
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("conf: wechat %s: malformed answer: %w", path, err)
		}
		return nil
	}
}

// failover tries each base URL in turn until one answers HTTP 200.
func (a *api) failover(ctx context.Context, path string, query url.Values, payload []byte) ([]byte, error) {
	var errs []error
	for _, base := range a.bases {
		raw, err := a.once(ctx, base, path, query, payload)
		if err == nil {
			return raw, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
		var he *HTTPError
		if errors.As(err, &he) && he.Status < 500 {
			// A 4xx is an answer about the request, not the host:
			// another host would say the same.
			break
		}
	}
	return nil, errors.Join(errs...)
}

// once makes one HTTP request to one host.
func (a *api) once(ctx context.Context, base, path string, query url.Values, payload []byte) ([]byte, error) {
	u := base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	method := http.MethodGet
	var rd io.Reader
	if payload != nil {
		method, rd = http.MethodPost, bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("conf: wechat %s: %v", path, scrub(err))
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("conf: wechat %s via %s: %w", path, hostOf(base), scrub(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("conf: wechat %s via %s: read answer: %w", path, hostOf(base), scrub(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{Endpoint: path, Status: resp.StatusCode}
	}
	return raw, nil
}

// scrub removes the URL (and with it the secret and tokens in the query)
// from net/http's errors, keeping the cause.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func hostOf(base string) string {
	if u, err := url.Parse(base); err == nil && u.Host != "" {
		return u.Host
	}
	return base
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// grantToken calls /cgi-bin/token.
func (a *api) grantToken(ctx context.Context, appID, secret string) (*TokenResponse, error) {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret}}
	var r TokenResponse
	if err := a.call(ctx, pathToken, q, nil, &r); err != nil {
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
	if err := a.call(ctx, pathStableToken, nil, body, &r); err != nil {
		return nil, err
	}
	return &r, checkGrant(pathStableToken, r.AccessToken, r.ExpiresIn)
}

// grantTicket calls /cgi-bin/ticket/getticket.
func (a *api) grantTicket(ctx context.Context, accessToken, typ string) (*TicketResponse, error) {
	q := url.Values{"access_token": {accessToken}, "type": {typ}}
	var r TicketResponse
	if err := a.call(ctx, pathTicket, q, nil, &r); err != nil {
		return nil, err
	}
	return &r, checkGrant(pathTicket, r.Ticket, r.ExpiresIn)
}

// maxExpiresIn is the longest lifetime a grant may claim, in seconds.
const maxExpiresIn = int64(store.MaxLifetime / time.Second)

// checkGrant rejects answers that carry no credential or a lifetime WeChat
// cannot mean: caching them would serve garbage until the next refresh, or
// (a lifetime past any time type) turn into a grant on every call.
func checkGrant(path, value string, expiresIn int64) error {
	switch {
	case strings.TrimSpace(value) == "":
		return fmt.Errorf("conf: wechat %s: answer without a credential", path)
	case expiresIn < 1 || expiresIn > maxExpiresIn:
		return fmt.Errorf("conf: wechat %s: expires_in %d is outside 1..%d seconds", path, expiresIn, maxExpiresIn)
	}
	return nil
}
