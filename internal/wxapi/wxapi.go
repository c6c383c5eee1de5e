// Package wxapi calls WeChat's HTTP APIs for the faces of the engine
// (package conf for Official Accounts and Mini Programs, package wecom for
// WeCom): failover across API hosts on network errors and 5xx, bounded
// exponential backoff with jitter on errcode -1, no retry on any other
// errcode, answers bounded in size, and errors that never carry the URL
// (its query holds the secret or the token).
//
// Its error types are the ones users see, through type aliases in conf and
// wecom: APIError says which platform answered, because errcodes mean
// different things there (40001 is a stale token on the Official Account's
// APIs and a wrong secret on WeCom's).
package wxapi

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
	"time"
)

// Platform says whose errcode table applies to an APIError.
type Platform int

// The platforms.
const (
	// OfficialAccount: Official Accounts and Mini Programs
	// (api.weixin.qq.com). The zero value.
	OfficialAccount Platform = iota
	// WeCom: 企业微信 (qyapi.weixin.qq.com).
	WeCom
)

func (p Platform) String() string {
	if p == WeCom {
		return "wecom"
	}
	return "wechat"
}

// The sentinels APIError.Is matches.
var (
	// ErrTokenInvalid: the credential a call used is invalid or expired.
	ErrTokenInvalid = errors.New("wechat: credential invalid or expired")
	// ErrQuota: a quota or frequency limit; never retried.
	ErrQuota = errors.New("wechat: quota reached")
	// ErrBusy: system busy (errcode -1) after the bounded retries.
	ErrBusy = errors.New("wechat: busy")
)

// APIError is an errcode answer. It carries the errcode and errmsg and the
// endpoint path (never the query: it may hold the secret).
type APIError struct {
	Endpoint string // e.g. "/cgi-bin/token"
	Code     int
	Msg      string
	// Platform is who answered; the zero value is the Official Account.
	Platform Platform
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: errcode %d: %s", e.Platform, e.Endpoint, e.Code, e.Msg)
}

// GrantEndpoints are the paths on which an errcode is about the grant
// itself (40001 there means a wrong secret, not a stale token).
var grantEndpoints = map[string]bool{
	"/cgi-bin/token": true, "/cgi-bin/stable_token": true, "/cgi-bin/gettoken": true,
}

// Is makes errors.Is match the sentinel that describes the errcode, by the
// platform's table.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrTokenInvalid:
		if grantEndpoints[e.Endpoint] {
			return false
		}
		return InvalidCode(e.Platform, e.Code)
	case ErrQuota:
		if e.Platform == WeCom {
			return e.Code == 45009 || e.Code == 45033
		}
		return e.Code == 45009 || e.Code == 45011
	case ErrBusy:
		return e.Code == -1
	}
	return false
}

// InvalidCode reports whether errcode, on a call made with a credential,
// means the credential is invalid or expired: 40001, 40014 and 42001 on the
// Official Account; 40014 and 42001 on WeCom (where 40001 is a wrong
// secret).
func InvalidCode(p Platform, code int) bool {
	switch code {
	case 40014, 42001:
		return true
	case 40001:
		return p == OfficialAccount
	}
	return false
}

// HTTPError is a non-200 HTTP answer from an API host.
type HTTPError struct {
	Endpoint string
	Status   int
	Platform Platform
}

// Error implements error.
func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: HTTP status %d", e.Platform, e.Endpoint, e.Status)
}

// MaxBody bounds what is read of an answer; credential answers are a few
// hundred bytes.
const MaxBody = 1 << 20

// Client calls one platform's API.
type Client struct {
	HTTP        *http.Client
	Bases       []string // tried in order
	BusyRetries int
	BusyBackoff time.Duration
	Platform    Platform
}

// errBody is the part of every answer that reports errors.
type errBody struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// Call performs one logical request and decodes the JSON answer into out.
// query holds the parameters (it may hold the secret: it never reaches an
// error). body, when non-nil, is POSTed as JSON.
func (c *Client) Call(ctx context.Context, path string, query url.Values, body any, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encode request: %w", c.Platform, path, err)
		}
	}
	backoff := c.BusyBackoff
	for attempt := 0; ; attempt++ {
		raw, err := c.failover(ctx, path, query, payload)
		if err != nil {
			return err
		}
		var eb errBody
		if err := json.Unmarshal(raw, &eb); err != nil {
			return fmt.Errorf("%s %s: malformed answer (%d bytes): %w", c.Platform, path, len(raw), err)
		}
		if eb.ErrCode == -1 && attempt < c.BusyRetries {
			// Full jitter keeps many nodes from retrying in step.
			d := backoff/2 + rand.N(backoff/2+1)
			if err := sleep(ctx, d); err != nil {
				return err
			}
			backoff *= 2
			continue
		}
		if eb.ErrCode != 0 {
			return &APIError{Endpoint: path, Code: eb.ErrCode, Msg: eb.ErrMsg, Platform: c.Platform}
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: malformed answer: %w", c.Platform, path, err)
		}
		return nil
	}
}

// failover tries each base URL in turn until one answers HTTP 200.
func (c *Client) failover(ctx context.Context, path string, query url.Values, payload []byte) ([]byte, error) {
	var errs []error
	for _, base := range c.Bases {
		raw, err := c.once(ctx, base, path, query, payload)
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
func (c *Client) once(ctx context.Context, base, path string, query url.Values, payload []byte) ([]byte, error) {
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
		return nil, fmt.Errorf("%s %s: %v", c.Platform, path, Scrub(err))
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s via %s: %w", c.Platform, path, HostOf(base), Scrub(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if err != nil {
		return nil, fmt.Errorf("%s %s via %s: read answer: %w", c.Platform, path, HostOf(base), Scrub(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{Endpoint: path, Status: resp.StatusCode, Platform: c.Platform}
	}
	return raw, nil
}

// Scrub removes the URL (and with it any secret or credential in its query)
// from net/http's errors, keeping the cause.
func Scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// HostOf returns the host of a base URL, for errors.
func HostOf(base string) string {
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

// CheckGrant refuses answers that carry no credential or a lifetime WeChat
// cannot mean: caching them would serve garbage until the next refresh, or
// (a lifetime past any time type) turn into a grant on every call.
func CheckGrant(p Platform, path, value string, expiresIn, maxExpiresIn int64) error {
	switch {
	case len(bytes.TrimSpace([]byte(value))) == 0:
		return fmt.Errorf("%s %s: answer without a credential", p, path)
	case expiresIn < 1 || expiresIn > maxExpiresIn:
		return fmt.Errorf("%s %s: expires_in %d is outside 1..%d seconds", p, path, expiresIn, maxExpiresIn)
	}
	return nil
}

// ParseBases checks API base URLs for a WithBaseURLs option (named opt in
// errors) and returns them without trailing slashes. A URL is never quoted
// whole: it may hold a password.
func ParseBases(opt string, urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("%s: no URL given", opt)
	}
	bases := make([]string, 0, len(urls))
	for i, s := range urls {
		u, err := url.Parse(s)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s: URL %d does not parse as a URL", opt, i+1)
		case (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			return nil, fmt.Errorf("%s: URL %d (%s) is not an http(s) base URL with a host", opt, i+1, u.Redacted())
		case u.RawQuery != "" || u.Fragment != "":
			return nil, fmt.Errorf("%s: URL %d (%s://%s%s) has a query or fragment", opt, i+1, u.Scheme, u.Host, u.Path)
		}
		for len(s) > 0 && s[len(s)-1] == '/' {
			s = s[:len(s)-1]
		}
		bases = append(bases, s)
	}
	return bases, nil
}

// Hosts returns the hosts (host[:port]) of base URLs made by ParseBases.
func Hosts(bases []string) []string {
	hosts := make([]string, 0, len(bases))
	for _, b := range bases {
		if u, err := url.Parse(b); err == nil && u.Host != "" {
			hosts = append(hosts, u.Host)
		}
	}
	return hosts
}

// FailingTransport is an http.RoundTripper that closes each request's body
// and fails it with err: what a face's Transport returns when it cannot
// build the real one.
type FailingTransport struct{ Err error }

// RoundTrip implements http.RoundTripper.
func (t FailingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, t.Err
}

// MaxIDLen is the longest AppID or CorpID accepted: WeChat's are 18 bytes.
const MaxIDLen = 64

// CheckID refuses what no AppID or CorpID is, so that every store
// backend's key rules hold: 1 to MaxIDLen ASCII letters, digits, '_' or
// '-' ("wx" or "ww" and 16 more today). The error says what is wrong; what
// names the ID in it ("CorpID").
func CheckID(what, id string) error {
	if id == "" {
		return fmt.Errorf("empty %s", what)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s of %d bytes: none is longer than %d", what, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%s: byte %d (%q) is not a letter, digit, '_' or '-'", what, i, c)
		}
	}
	return nil
}
