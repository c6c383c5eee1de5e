package conf

import (
	"context"
	"errors"
	"net/http"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/wxapi"
)

// Do calls fn with a valid access token. If fn's error matches
// ErrTokenInvalid (an *APIError with errcode 40001, 40014 or 42001 does), the
// token is invalidated compare-then-refresh (see Invalidate) and fn is
// called once more with the replacement.
func (c *Conf) Do(ctx context.Context, fn func(token string) error) error {
	return c.DoWith(ctx, AccessToken, fn)
}

// DoWith is Do for any kind of credential, such as the jsapi ticket.
func (c *Conf) DoWith(ctx context.Context, kind Kind, fn func(credential string) error) error {
	return credential.Do(ctx, c.Source(kind), func(err error) bool { return errors.Is(err, ErrTokenInvalid) }, fn)
}

// Transport returns an http.RoundTripper for calls to WeChat's APIs. On
// requests to the configured API hosts (WithBaseURLs) that do not carry an
// access_token already, it sets the access token; when WeChat answers
// 40001, 40014 or 42001, it invalidates the token it sent
// (compare-then-refresh) and sends the request once more with the
// replacement. Requests to any other host, a redirect elsewhere included,
// and requests that carry their own access_token (an OAuth user token on
// /sns/…) pass through untouched. base nil means http.DefaultTransport.
func (c *Conf) Transport(base http.RoundTripper) http.RoundTripper {
	hosts := wxapi.Hosts(c.cfg.bases)
	t, err := credential.NewTransport(credential.TransportConfig{
		Source:  c.Source(AccessToken),
		Param:   "access_token",
		Hosts:   hosts,
		Invalid: IsInvalidCredentialCode,
		Base:    base,
	})
	if err != nil {
		// WithBaseURLs makes sure of a host, so this is not reached.
		return wxapi.FailingTransport{Err: err}
	}
	return t
}
