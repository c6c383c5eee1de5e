// Package tokenclient is the client of the central token server
// (`wechatconf serve`), for business services that get their credentials
// from it instead of granting them: the Go form of the Python seed's
// refreshfunc, "for business servers in a distributed deployment". Such a
// node never holds the AppSecret.
//
// A Client plugs into a conf.Conf (ConfOptions), so that AccessToken, Do,
// Transport and the JS-SDK helpers work unchanged:
//
//	tc, err := tokenclient.New(tokenclient.Config{
//		URLs: []string{"https://tok1.internal", "https://tok2.internal"},
//		Key:  key,
//	})
//	...
//	c, err := conf.New(append(tc.ConfOptions(), conf.WithAppID(appID, ""))...)
//
// What the node gets from the server is kept by the Conf's refresh engine
// (package credential): a fresh local copy is served with no lock and no
// I/O, it is refreshed before its expiry (the engine's margin), and a copy
// that is still valid keeps being served while the servers are unreachable
// (stale while revalidating). When WeChat rejects a credential on the node
// (Do, Transport, Invalidate), the rejected value is reported to the
// server's POST /v1/invalidate, which replaces it compare-then-refresh: one
// grant for the whole cluster, however many nodes report it.
//
// Every call is bounded (Config.RequestTimeout per server,
// Config.Timeout in all). Servers are tried in order, starting from the
// one that answered last; a network error or an HTTP 5xx moves on to the
// next, any other answer (401 for a wrong key, 403 for a key not allowed
// for the app, 400, 404, 429) is final. A 429 (the cluster's
// forced-refresh limit) is a *credential.RefreshLimitedError
// (conf.ErrRefreshLimited matches it), and the same report is not sent
// again before the server's Retry-After. The package logs nothing; its
// errors never show the key or a credential.
//
// One server may hold several apps (`wechatconf serve --config FILE`):
// Config.App names the one a Client is for, and every request goes to
// /v1/apps/{App}/... A key the server knows but does not allow for that
// app is answered 403, a *StatusError that says so (final, like a 401:
// every server holds the same keys, so no other one is asked).
//
// A WeCom (企业微信) app's node is fed the same way: WeComOptions for
// wecom.New, with no secret.
//
//	tc, err := tokenclient.New(tokenclient.Config{URLs: urls, Key: key, App: "hr"})
//	...
//	a, err := wecom.New(corpID, "", append(tc.WeComOptions(), wecom.WithAgentID(agentID))...)
//
// The protocol is small enough for any language; see the README's
// "Business nodes" section.
package tokenclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wecom"
)

// Defaults of Config.
const (
	// DefaultRequestTimeout bounds one request to one server. The server
	// may wait for another node's grant before it answers, hence more
	// than a round trip.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultTimeout bounds a whole call, every server tried included.
	DefaultTimeout = 30 * time.Second
	// DefaultRetryAfter is how long a 429 without a usable Retry-After
	// header holds back the same report (the server's default
	// forced-refresh interval).
	DefaultRetryAfter = credential.DefaultForcedInterval
)

const (
	maxBody       = 64 << 10         // bytes read from an answer
	maxRetryAfter = 10 * time.Minute // a Retry-After beyond is not believed
	maxMessage    = 300              // bytes of a server's error message kept
)

// Config configures a Client.
type Config struct {
	// URLs are the token servers' base URLs ("https://tok1.internal", or
	// with a path prefix behind a proxy), tried in order. Required. They
	// must not carry a user or password: the key goes in Key.
	URLs []string
	// Key is the bearer key of the servers (serve's --key). Required.
	Key string
	// App is the id of the app in the servers' configuration file
	// (`serve --config`): when set, every request goes to
	// /v1/apps/{App}/... instead of the single-app routes /v1/...
	// It must match [a-z0-9][a-z0-9_-]{0,63}. Empty means a server
	// with one app (or serve's --appid).
	App string
	// HTTPClient sends the requests; nil means one with
	// http.DefaultTransport. Its redirect policy is replaced: a Client
	// never follows a redirect (the key must not travel on).
	HTTPClient *http.Client
	// RequestTimeout bounds one request to one server
	// (DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Timeout bounds a whole call across the servers (DefaultTimeout).
	Timeout time.Duration
}

// String shows the configuration without the key.
func (c Config) String() string {
	return fmt.Sprintf("tokenclient.Config{URLs: %q, Key: <redacted %d bytes>, App: %q, RequestTimeout: %v, Timeout: %v}",
		c.URLs, len(c.Key), c.App, c.RequestTimeout, c.Timeout)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Client gets credentials from token servers. It is safe for concurrent
// use and holds no goroutine; it caches nothing itself (the Conf it feeds
// does).
type Client struct {
	bases   []string // base URLs, without a trailing slash
	hosts   []string // scheme://host of each, for errors
	auth    string   // "Bearer " + key
	app     string   // Config.App
	prefix  string   // "/v1" or "/v1/apps/{App}"
	key     string
	hc      *http.Client
	perReq  time.Duration
	total   time.Duration
	start   atomic.Int32 // the server that answered last
	limitMu sync.Mutex
	limits  map[string]limit // by credential name: the last 429
}

// limit remembers a 429 answer to a report of one value.
type limit struct {
	sum  [sha256.Size]byte // of the rejected value: it is not kept
	next time.Time
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("tokenclient: Config.URLs is empty")
	}
	if cfg.Key == "" {
		return nil, errors.New("tokenclient: Config.Key is empty")
	}
	if strings.ContainsAny(cfg.Key, " \t\r\n") {
		return nil, errors.New("tokenclient: Config.Key holds white space")
	}
	if cfg.RequestTimeout < 0 || cfg.Timeout < 0 {
		return nil, errors.New("tokenclient: Config timeouts must not be negative")
	}
	prefix := "/v1"
	if cfg.App != "" {
		if !ValidApp(cfg.App) {
			return nil, fmt.Errorf("tokenclient: Config.App %q is not an app id ([a-z0-9][a-z0-9_-]{0,63})", cfg.App)
		}
		prefix = "/v1/apps/" + cfg.App
	}
	c := &Client{
		auth: "Bearer " + cfg.Key, key: cfg.Key, app: cfg.App, prefix: prefix,
		perReq: cfg.RequestTimeout, total: cfg.Timeout,
		limits: map[string]limit{},
	}
	if c.perReq == 0 {
		c.perReq = DefaultRequestTimeout
	}
	if c.total == 0 {
		c.total = DefaultTimeout
	}
	for i, raw := range cfg.URLs {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			// Not quoted: it may hold a password.
			return nil, fmt.Errorf("tokenclient: URL %d does not parse", i+1)
		case u.User != nil:
			return nil, fmt.Errorf("tokenclient: URL %d has a user or password; put the key in Config.Key", i+1)
		case (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			return nil, fmt.Errorf("tokenclient: URL %d (%s) is not an http(s) URL with a host", i+1, u.Redacted())
		case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
			return nil, fmt.Errorf("tokenclient: URL %d (%s://%s) has a query or fragment", i+1, u.Scheme, u.Host)
		}
		c.bases = append(c.bases, strings.TrimRight(raw, "/"))
		c.hosts = append(c.hosts, u.Scheme+"://"+u.Host)
	}
	hc := http.Client{Transport: http.DefaultTransport}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	return c, nil
}

// ValidApp reports whether id is an app id of the servers' configuration:
// [a-z0-9][a-z0-9_-]{0,63}.
func ValidApp(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case (b == '_' || b == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// String describes the Client without its key.
func (c *Client) String() string {
	if c.app != "" {
		return fmt.Sprintf("tokenclient.Client{URLs: %q, App: %q}", c.hosts, c.app)
	}
	return fmt.Sprintf("tokenclient.Client{URLs: %q}", c.hosts)
}

// GoString is String, for %#v.
func (c *Client) GoString() string { return c.String() }

// Get returns the credential called name (access_token, jsapi_ticket,
// wx_card_ticket, agent_config_ticket) from the first server that answers,
// with its expiry. The expiry is counted on this machine's clock from the moment the
// request was sent, with the server's expires_in: a clock apart from the
// server's does not matter.
func (c *Client) Get(ctx context.Context, name string) (store.Item, error) {
	path, typ, err := endpoint(name)
	if err != nil {
		return store.Item{}, err
	}
	return c.call(ctx, name, http.MethodGet, c.prefix+path, typ, nil, "")
}

// Invalidate reports that WeChat rejected the credential rejected, called
// name, and returns a valid replacement: the server's POST /v1/invalidate
// (/v1/apps/{App}/invalidate with Config.App), compare-then-refresh (a new
// credential is granted only if the cluster still holds the rejected one;
// a stale report gets the current one for free). Servers share one store, so a report may go to any of them; a
// server that fails is followed by the next.
//
// When the servers' forced-refresh limit refuses (HTTP 429), the error is a
// *credential.RefreshLimitedError whose Next is the server's Retry-After;
// until then the same report fails again at once, without a request.
func (c *Client) Invalidate(ctx context.Context, name, rejected string) (store.Item, error) {
	if _, _, err := endpoint(name); err != nil {
		return store.Item{}, err
	}
	if rejected == "" {
		return store.Item{}, fmt.Errorf("tokenclient: Invalidate %s: empty value", name)
	}
	sum := sha256.Sum256([]byte(rejected))
	c.limitMu.Lock()
	l, ok := c.limits[name]
	c.limitMu.Unlock()
	if ok && l.sum == sum && time.Now().Before(l.next) {
		return store.Item{}, fmt.Errorf("tokenclient: POST %s/invalidate %s: refused by the server's forced-refresh limit; not asked again before its Retry-After: %w",
			c.prefix, name, &credential.RefreshLimitedError{Name: name, Next: l.next})
	}
	body, err := json.Marshal(struct {
		Kind  string `json:"kind"`
		Value string `json:"value"`
	}{name, rejected})
	if err != nil {
		return store.Item{}, fmt.Errorf("tokenclient: Invalidate %s: %w", name, err)
	}
	_, typ, _ := endpoint(name)
	item, err := c.call(ctx, name, http.MethodPost, c.prefix+"/invalidate", typ, body, rejected)
	var le *credential.RefreshLimitedError
	if errors.As(err, &le) {
		c.limitMu.Lock()
		c.limits[name] = limit{sum: sum, next: le.Next}
		c.limitMu.Unlock()
	}
	if err == nil && item.Value == rejected {
		return store.Item{}, fmt.Errorf("tokenclient: POST %s/invalidate %s: the server answered the rejected value", c.prefix, name)
	}
	return item, err
}

// RefreshFunc returns Get for name as a function, the shape of
// conf.RefreshFunc and credential.Config.Fetch (and of the WeCom face's
// hook).
func (c *Client) RefreshFunc(name string) func(ctx context.Context) (store.Item, error) {
	return func(ctx context.Context) (store.Item, error) { return c.Get(ctx, name) }
}

// InvalidateFunc returns Invalidate for name as a function, the shape of
// conf.InvalidateFunc and credential.Config.Invalidate.
func (c *Client) InvalidateFunc(name string) func(ctx context.Context, rejected string) (store.Item, error) {
	return func(ctx context.Context, rejected string) (store.Item, error) {
		return c.Invalidate(ctx, name, rejected)
	}
}

// ConfOptions returns the conf options that make a Conf a business node fed
// by c: refresh-only (it never calls WeChat to grant), every kind (the
// access token and both tickets) got from the servers, rejections reported
// to them. Add conf.WithAppID(appID, "") — the AppID names the local keys
// and the JS-SDK configuration; no secret is needed — and any other option
// (conf.WithStore to share what the node got with its peers, WithMargin).
func (c *Client) ConfOptions() []conf.Option {
	opts := []conf.Option{conf.WithRefreshOnly()}
	for _, k := range []conf.Kind{conf.AccessToken, conf.JSAPITicket, conf.WXCardTicket} {
		opts = append(opts,
			conf.WithRefreshFunc(k, c.RefreshFunc(k.String())),
			conf.WithInvalidateFunc(k, c.InvalidateFunc(k.String())))
	}
	return opts
}

// WeComOptions returns the wecom options that make a wecom.App a business
// node fed by c (whose Config.App is a WeCom app of the servers):
// refresh-only (it never calls gettoken), the access token, the corp jsapi
// ticket and the agent_config ticket got from the servers, rejections
// reported to them. Call wecom.New(corpID, "", ...) — no secret — with
// wecom.WithAgentID(agentID), which names the app's keys and signs
// wx.agentConfig, and any other option (wecom.WithStore, WithBaseURLs).
func (c *Client) WeComOptions() []wecom.Option {
	opts := []wecom.Option{wecom.WithRefreshOnly()}
	for _, k := range []struct {
		kind wecom.Kind
		name string // the protocol's, not Kind.String (agent_ticket)
	}{
		{wecom.AccessToken, "access_token"},
		{wecom.JSAPITicket, "jsapi_ticket"},
		{wecom.AgentTicket, "agent_config_ticket"},
	} {
		opts = append(opts,
			wecom.WithRefreshFunc(k.kind, c.RefreshFunc(k.name)),
			wecom.WithInvalidateFunc(k.kind, c.InvalidateFunc(k.name)))
	}
	return opts
}

// endpoint maps a credential name to its GET path below the Client's
// prefix (/v1 or /v1/apps/{App}) and, for tickets, the type the answer
// must carry. Other names are served at <prefix>/<name> (the protocol a
// server for other credentials would follow).
func endpoint(name string) (path, typ string, err error) {
	switch name {
	case "access_token":
		return "/access_token", "", nil
	case "jsapi_ticket":
		return "/ticket?type=jsapi", "jsapi", nil
	case "wx_card_ticket":
		return "/ticket?type=wx_card", "wx_card", nil
	case "agent_config_ticket":
		return "/ticket?type=agent_config", "agent_config", nil
	}
	if name == "" || len(name) > 64 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return "", "", fmt.Errorf("tokenclient: %q is not a credential name (access_token, jsapi_ticket, wx_card_ticket, agent_config_ticket)", name)
	}
	return "/" + name, "", nil
}

// StatusError is a server's answer other than 200 (and 429, which is a
// *credential.RefreshLimitedError).
type StatusError struct {
	// Server is the scheme and host of the server that answered.
	Server string
	// Op is the request: "GET /v1/access_token".
	Op string
	// StatusCode is the HTTP status: 401 a wrong key, 403 a key not
	// allowed for App, 404 an app the server does not hold (told only to
	// a key for every app), 502 WeChat refused the server or could not be
	// reached, 503 no credential in time.
	StatusCode int
	// App is Config.App, if set.
	App string
	// Message is the server's explanation, if it gave one.
	Message string
	// ErrCode is WeChat's errcode when WeChat refused the server's grant.
	ErrCode int
}

// Error implements error.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("tokenclient: %s at %s: HTTP %d", e.Op, e.Server, e.StatusCode)
	switch {
	case e.StatusCode == http.StatusUnauthorized:
		s += " (the key is missing or wrong)"
	case e.StatusCode == http.StatusForbidden && e.App != "":
		s += fmt.Sprintf(" (the key is not allowed for app %q)", e.App)
	case e.StatusCode == http.StatusForbidden:
		s += " (the key is not allowed for the server's app)"
	case e.StatusCode == http.StatusNotFound && e.App != "":
		s += fmt.Sprintf(" (no app %q on this server, or a server without /v1/apps/)", e.App)
	}
	if e.ErrCode != 0 {
		s += fmt.Sprintf(" (WeChat errcode %d)", e.ErrCode)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Temporary reports whether another server, or a later try, may answer
// better: a 5xx. A 401 or 403 is not: every server holds the same keys.
func (e *StatusError) Temporary() bool { return e.StatusCode >= 500 }

// answer is the JSON of the server's credential endpoints and of its
// errors.
type answer struct {
	AccessToken string `json:"access_token"`
	Ticket      string `json:"ticket"`
	Type        string `json:"type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   int64  `json:"expires_at"`
	Error       string `json:"error"`
	ErrCode     int    `json:"errcode"`
}

// call sends one request to the servers in turn, until one answers with
// anything but a network error or a 5xx, within the total bound. hide is a
// credential the request carries, never to be shown in an error.
func (c *Client) call(ctx context.Context, name, method, path, typ string, body []byte, hide string) (store.Item, error) {
	op := method + " " + strings.SplitN(path, "?", 2)[0]
	if method == http.MethodPost {
		op += " " + name
	}
	ctx, cancel := context.WithTimeout(ctx, c.total)
	defer cancel()
	n := len(c.bases)
	first := int(c.start.Load())
	var errs []error
	for i := range n {
		idx := (first + i) % n
		item, next, err := c.try(ctx, idx, name, method, path, typ, op, body, hide)
		if err == nil {
			c.start.Store(int32(idx))
			return item, nil
		}
		errs = append(errs, err)
		if !next || ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return store.Item{}, errs[0]
	}
	format := "tokenclient: %s: no server answered: " + strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; ")
	args := []any{op}
	for _, e := range errs {
		args = append(args, e)
	}
	return store.Item{}, fmt.Errorf(format, args...)
}

// try sends the request to server idx. next reports whether the next
// server should be tried.
func (c *Client) try(ctx context.Context, idx int, name, method, path, typ, op string, body []byte, hide string) (item store.Item, next bool, err error) {
	host := c.hosts[idx]
	rctx, cancel := context.WithTimeout(ctx, c.perReq)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, c.bases[idx]+path, rd)
	if err != nil {
		return store.Item{}, false, fmt.Errorf("tokenclient: %s at %s: %w", op, host, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL: ours says the host
		}
		if rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %v (Config.RequestTimeout): %w", c.perReq, err)
		}
		return store.Item{}, true, fmt.Errorf("tokenclient: %s at %s: %w", op, host, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return store.Item{}, true, fmt.Errorf("tokenclient: %s at %s: reading the answer: %w", op, host, err)
	}
	var a answer
	jerr := json.Unmarshal(raw, &a)
	if len(raw) > maxBody {
		jerr = fmt.Errorf("answer over %d bytes", maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusTooManyRequests {
			until := start.Add(retryAfter(resp.Header.Get("Retry-After"), start))
			return store.Item{}, false, fmt.Errorf("tokenclient: %s at %s: HTTP 429: %w", op, host,
				&credential.RefreshLimitedError{Name: name, Next: until})
		}
		se := &StatusError{Server: host, Op: op, StatusCode: resp.StatusCode, ErrCode: a.ErrCode, App: c.app}
		if jerr == nil {
			se.Message = c.clean(a.Error, hide)
		}
		return store.Item{}, se.Temporary(), se
	}
	if jerr != nil {
		return store.Item{}, true, fmt.Errorf("tokenclient: %s at %s: the answer is not the token server's JSON (%d bytes)", op, host, len(raw))
	}
	value := a.Ticket
	if name == "access_token" || (value == "" && typ == "") {
		value = a.AccessToken
	}
	switch {
	case value == "":
		return store.Item{}, true, fmt.Errorf("tokenclient: %s at %s: the answer holds no %s", op, host, name)
	case typ != "" && a.Type != typ:
		return store.Item{}, false, fmt.Errorf("tokenclient: %s at %s: asked for a %s ticket, got type %q", op, host, typ, c.clean(a.Type, hide))
	case a.ExpiresIn <= 0:
		return store.Item{}, true, fmt.Errorf("tokenclient: %s at %s: the %s served is expired (expires_in %d)", op, host, name, a.ExpiresIn)
	}
	return store.Item{Value: value, ExpiresAt: start.Add(time.Duration(a.ExpiresIn) * time.Second)}, false, nil
}

// clean makes a server's text fit for an error: bounded, printable, and
// never the key or the credential hide (a server could echo what it was
// sent).
func (c *Client) clean(s, hide string) string {
	s = strings.ReplaceAll(s, c.key, "<key>")
	if hide != "" {
		s = strings.ReplaceAll(s, hide, "<credential>")
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxMessage {
		s = s[:maxMessage] + "…"
	}
	return s
}

// retryAfter reads a Retry-After header (seconds, or an HTTP date), within
// 1 s and maxRetryAfter; DefaultRetryAfter when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	d := DefaultRetryAfter
	if v = strings.TrimSpace(v); v != "" {
		if s, err := strconv.Atoi(v); err == nil {
			d = time.Duration(s) * time.Second
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	}
	return min(max(d, time.Second), maxRetryAfter)
}
