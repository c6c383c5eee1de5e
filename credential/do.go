package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/wechatconf/wechatconf/internal/wxapi"
)

// Do calls fn with a valid credential from src. If invalid reports that
// fn's error means WeChat rejected the credential, src is told
// (Invalidate: compare-then-refresh) and fn is called once more with the
// replacement. Without an Invalidator or an invalid func, fn is called once.
func Do(ctx context.Context, src Source, invalid func(error) bool, fn func(credential string) error) error {
	item, err := src.Get(ctx)
	if err != nil {
		return err
	}
	err = fn(item.Value)
	inv, ok := src.(Invalidator)
	if err == nil || !ok || invalid == nil || !invalid(err) {
		return err
	}
	fresh, ierr := inv.Invalidate(ctx, item.Value)
	if ierr != nil {
		return fmt.Errorf("%w (and no replacement: %w)", err, ierr)
	}
	return fn(fresh.Value)
}

// Do is the package-level Do with the Keeper's Policy.Invalid.
func (k *Keeper) Do(ctx context.Context, fn func(credential string) error) error {
	return Do(ctx, k, k.pol.Invalid, fn)
}

// TransportConfig configures a Transport.
type TransportConfig struct {
	// Source gives the credential; an Invalidator is told of rejections.
	Source Source
	// Param is the query parameter that carries the credential
	// ("access_token").
	Param string
	// Hosts are the API hosts (host[:port], as in URL.Host) whose requests
	// get the credential. Requests to any other host — a redirect
	// elsewhere, a URL that is not WeChat's — pass through untouched: the
	// credential never reaches them.
	Hosts []string
	// Invalid reports whether an errcode in an answer means WeChat
	// rejected the credential sent (refresh it and send once more). Nil:
	// no errcode is.
	Invalid func(errcode int) bool
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
}

// NewTransport returns an http.RoundTripper that adds the credential to
// requests for the configured hosts and, when WeChat answers that the
// credential it was sent is invalid, invalidates exactly that value
// (compare-then-refresh) and sends the request once more with the
// replacement. A request that already carries the parameter (an OAuth user
// token on /sns/…, say) is sent as it is and never retried. Requests with a
// body are retried only if they can be replayed (http.NewRequest sets
// GetBody for the usual body types).
func NewTransport(cfg TransportConfig) (http.RoundTripper, error) {
	if cfg.Source == nil {
		return nil, errors.New("credential: NewTransport: nil Source")
	}
	if cfg.Param == "" {
		return nil, errors.New("credential: NewTransport: empty Param")
	}
	if len(cfg.Hosts) == 0 {
		return nil, errors.New("credential: NewTransport: no Hosts: the credential would go nowhere")
	}
	t := &transport{cfg: cfg, hosts: make(map[string]bool, len(cfg.Hosts))}
	for _, h := range cfg.Hosts {
		t.hosts[strings.ToLower(h)] = true
	}
	if t.cfg.Base == nil {
		t.cfg.Base = http.DefaultTransport
	}
	return t, nil
}

type transport struct {
	cfg   TransportConfig
	hosts map[string]bool
}

// peekLimit: answers larger than this are not inspected for an errcode
// (media downloads and the like); errcode answers are tiny.
const peekLimit = 4 << 10

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.hosts[strings.ToLower(req.URL.Host)] || req.URL.Query().Has(t.cfg.Param) {
		return t.cfg.Base.RoundTrip(req)
	}
	ctx := req.Context()
	item, err := t.cfg.Source.Get(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.send(req, item.Value, false)
	if err != nil {
		return nil, err
	}
	inv, ok := t.cfg.Source.(Invalidator)
	if !ok || t.cfg.Invalid == nil {
		return resp, nil
	}
	code, resp, err := PeekErrcode(resp)
	if err != nil || !t.cfg.Invalid(code) {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // cannot replay: let the caller see the answer
	}
	fresh, err := inv.Invalidate(ctx, item.Value)
	if err != nil {
		return resp, nil // no replacement: the caller sees WeChat's answer
	}
	resp.Body.Close()
	return t.send(req, fresh.Value, true)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// send clones req (RoundTrippers must not modify it) with the credential
// set. again: the request is sent a second time, with a body from GetBody.
func (t *transport) send(req *http.Request, value string, again bool) (*http.Response, error) {
	r := req.Clone(req.Context())
	q := r.URL.Query()
	q.Set(t.cfg.Param, value)
	r.URL.RawQuery = q.Encode()
	if again && req.GetBody != nil {
		// The first send consumed (and closed) the caller's body.
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("credential: transport: replay body: %w", err)
		}
		r.Body = body
	}
	resp, err := t.cfg.Base.RoundTrip(r)
	if err != nil {
		return nil, wxapi.Scrub(err)
	}
	return resp, nil
}

// PeekErrcode reads the errcode of a small JSON answer (0 when there is
// none, or the answer is large or not JSON), leaving resp's body intact for
// the caller: a transport's way to notice WeChat's rejections. On a read
// error resp's body is closed and nil returned.
func PeekErrcode(resp *http.Response) (int, *http.Response, error) {
	ct := resp.Header.Get("Content-Type")
	if resp.ContentLength > peekLimit || (!strings.Contains(ct, "json") && !strings.HasPrefix(ct, "text/plain")) {
		return 0, resp, nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, peekLimit+1))
	if err != nil {
		resp.Body.Close()
		return 0, nil, fmt.Errorf("credential: transport: read answer: %w", err)
	}
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if len(head) > peekLimit {
		return 0, resp, nil
	}
	var eb struct {
		ErrCode int `json:"errcode"`
	}
	if json.Unmarshal(head, &eb) != nil {
		return 0, resp, nil
	}
	return eb.ErrCode, resp, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
