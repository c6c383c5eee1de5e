package silenceper

import (
	"errors"
	"net/http"
	"strings"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
)

// DefaultHosts are WeChat's API hosts for Official Accounts and Mini
// Programs: the main one, the disaster-recovery one and the regional ones.
// Transport reads them when it is called; WeCom's qyapi.weixin.qq.com is not
// among them (its tokens come from a wecom.App, not a Conf).
var DefaultHosts = []string{
	"api.weixin.qq.com",
	"api2.weixin.qq.com",
	"sh.api.weixin.qq.com",
	"sz.api.weixin.qq.com",
	"hk.api.weixin.qq.com",
}

// Transport returns an http.RoundTripper that reports WeChat's rejections
// of the handles' access tokens. silenceper sends every API call through
// util.DefaultHTTPClient, a package variable, so one line puts it in front
// of all of them:
//
//	util.DefaultHTTPClient = &http.Client{Transport: silenceper.Transport(nil, h)}
//
// Requests to DefaultHosts whose access_token is one that a handle handed
// out are sent as they are; when WeChat answers 40001, 40014 or 42001, that
// exact token is invalidated with every handle that handed it out
// (compare-then-refresh: across all nodes, one grant, or none if another
// node already replaced it) and the request is
// sent once more with the replacement, so silenceper's caller sees the
// answer to the retry. Everything else passes through untouched: other
// hosts, requests with no access_token, and access tokens no handle handed
// out (OAuth user tokens on /sns/…, another app's token). If no replacement
// can be had (the Conf's forced-refresh limit, a store outage), the caller
// sees WeChat's answer. A request with a body is retried only if it can be
// replayed (silenceper's requests can). Give every Handle of the process:
// the variable is shared by all apps. base nil means http.DefaultTransport.
func Transport(base http.RoundTripper, handles ...*Handle) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	hosts := make(map[string]bool, len(DefaultHosts))
	for _, h := range DefaultHosts {
		hosts[h] = true
	}
	return &transport{base: base, handles: handles, hosts: hosts}
}

type transport struct {
	base    http.RoundTripper
	handles []*Handle
	hosts   map[string]bool
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.hosts[strings.ToLower(req.URL.Hostname())] {
		return t.base.RoundTrip(req)
	}
	tok := req.URL.Query().Get("access_token")
	owners := t.owners(tok)
	if len(owners) == 0 {
		return t.base.RoundTrip(req)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	code, resp, err := credential.PeekErrcode(resp)
	if err != nil || !conf.IsInvalidCredentialCode(code) {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // cannot replay: the caller sees the answer
	}
	fresh := ""
	for _, h := range owners {
		// Every handle that handed tok out learns of the rejection; on one
		// store, the first report grants and the others find it done.
		f, err := h.c.Invalidate(req.Context(), conf.AccessToken, tok)
		if err == nil && f != tok {
			h.handedOut(req.Context(), f)
			if fresh == "" {
				fresh = f
			}
		}
	}
	if fresh == "" {
		return resp, nil // no replacement: the caller sees WeChat's answer
	}
	resp.Body.Close()
	r := req.Clone(req.Context())
	q := r.URL.Query()
	q.Set("access_token", fresh)
	r.URL.RawQuery = q.Encode()
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, errors.New("silenceper: transport: replay body: " + err.Error())
		}
		r.Body = body
	}
	return t.base.RoundTrip(r)
}

// owners returns the handles that handed tok out: usually one, more when
// one process holds several Confs of the same app.
func (t *transport) owners(tok string) []*Handle {
	if tok == "" {
		return nil
	}
	var hs []*Handle
	for _, h := range t.handles {
		if h != nil && h.issued(tok) {
			hs = append(hs, h)
		}
	}
	return hs
}
