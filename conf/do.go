package conf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	item, err := c.Credential(ctx, kind)
	if err != nil {
		return err
	}
	err = fn(item.Value)
	if !errors.Is(err, ErrTokenInvalid) {
		return err
	}
	fresh, ierr := c.Invalidate(ctx, kind, item.Value)
	if ierr != nil {
		return fmt.Errorf("%w (and no replacement: %w)", err, ierr)
	}
	return fn(fresh)
}

// Transport returns an http.RoundTripper for calls to WeChat's APIs: it sets
// the access_token query parameter on every request and, when WeChat answers
// 40001, 40014 or 42001, invalidates the token (compare-then-refresh) and
// sends the request once more with the replacement. base nil means
// http.DefaultTransport. Requests with a body are retried only if they can
// be replayed (http.NewRequest sets GetBody for the usual body types).
func (c *Conf) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{c: c, base: base}
}

type transport struct {
	c    *Conf
	base http.RoundTripper
}

// peekLimit: answers larger than this are not inspected for an errcode
// (media downloads and the like); errcode answers are tiny.
const peekLimit = 4 << 10

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.c.AccessToken(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := t.send(req, tok)
	if err != nil {
		return nil, err
	}
	code, resp, err := errcodeOf(resp)
	if err != nil || !IsInvalidCredentialCode(code) {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // cannot replay: let the caller see the answer
	}
	fresh, err := t.c.Invalidate(ctx, AccessToken, tok)
	if err != nil {
		return resp, nil // no replacement: the caller sees WeChat's answer
	}
	resp.Body.Close()
	return t.send(req, fresh)
}

// send clones req (RoundTrippers must not modify it) with the token set.
func (t *transport) send(req *http.Request, tok string) (*http.Response, error) {
	r := req.Clone(req.Context())
	q := r.URL.Query()
	q.Set("access_token", tok)
	r.URL.RawQuery = q.Encode()
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("conf: transport: replay body: %w", err)
		}
		r.Body = body
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, scrub(err)
	}
	return resp, nil
}

// errcodeOf reads a small JSON answer's errcode, leaving resp's body intact
// for the caller.
func errcodeOf(resp *http.Response) (int, *http.Response, error) {
	ct := resp.Header.Get("Content-Type")
	if resp.ContentLength > peekLimit || (!strings.Contains(ct, "json") && !strings.HasPrefix(ct, "text/plain")) {
		return 0, resp, nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, peekLimit+1))
	if err != nil {
		resp.Body.Close()
		return 0, nil, fmt.Errorf("conf: transport: read answer: %w", err)
	}
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if len(head) > peekLimit {
		return 0, resp, nil
	}
	var eb errBody
	if json.Unmarshal(head, &eb) != nil {
		return 0, resp, nil
	}
	return eb.ErrCode, resp, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
