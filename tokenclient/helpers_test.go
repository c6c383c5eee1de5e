package tokenclient_test

// A token server for the tests: the protocol of `wechatconf serve` (its
// JSON shapes, statuses and the Retry-After of a 429), written again here
// over a real conf.Conf and the wechattest fake, because serve is package
// main. cmd/wechatconf's tokenclient e2e test runs the real one.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
)

const testKey = "test-server-key-0123456789abcdef"

// tokenServer serves the token server's API from a Conf that grants.
type tokenServer struct {
	conf        *conf.Conf
	key         string
	requests    atomic.Int64
	invalidates atomic.Int64
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.Header.Get("Authorization") != "Bearer "+s.key {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer key"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	kinds := map[string]conf.Kind{"access_token": conf.AccessToken, "jsapi_ticket": conf.JSAPITicket, "wx_card_ticket": conf.WXCardTicket}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/access_token":
		s.serve(ctx, w, conf.AccessToken)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/ticket":
		switch r.URL.Query().Get("type") {
		case "", "jsapi":
			s.serve(ctx, w, conf.JSAPITicket)
		case "wx_card":
			s.serve(ctx, w, conf.WXCardTicket)
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "type must be jsapi or wx_card"})
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v1/invalidate":
		s.invalidates.Add(1)
		var req struct{ Kind, Value string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Value == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad body"})
			return
		}
		kind, ok := kinds[req.Kind]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad kind"})
			return
		}
		if _, err := s.conf.Invalidate(ctx, kind, req.Value); err != nil {
			fail(w, err)
			return
		}
		s.serve(ctx, w, kind)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint"})
	}
}

func (s *tokenServer) serve(ctx context.Context, w http.ResponseWriter, kind conf.Kind) {
	item, err := s.conf.Credential(ctx, kind)
	if err != nil {
		fail(w, err)
		return
	}
	resp := map[string]any{"expires_at": item.ExpiresAt.Unix(), "expires_in": int64(max(time.Until(item.ExpiresAt), 0) / time.Second)}
	switch kind {
	case conf.AccessToken:
		resp["access_token"] = item.Value
	case conf.JSAPITicket:
		resp["ticket"], resp["type"] = item.Value, "jsapi"
	default:
		resp["ticket"], resp["type"] = item.Value, "wx_card"
	}
	writeJSON(w, http.StatusOK, resp)
}

// fail maps errors as serve does.
func fail(w http.ResponseWriter, err error) {
	var le *conf.RefreshLimitedError
	var ae *conf.APIError
	switch {
	case errors.As(err, &le):
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(time.Until(le.Next).Seconds())))))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "forced refresh limited"})
	case errors.As(err, &ae):
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": "WeChat refused", "errcode": ae.Code})
	default:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no credential in time"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// cluster is a fake WeChat, a store and token servers over it, reached in
// process by host name (no sockets: synctest can move the clock).
type cluster struct {
	fake *wechattest.Fake
	st   store.Store
	net  *network
}

func newCluster(t testing.TB, opts ...wechattest.Option) *cluster {
	return &cluster{fake: wechattest.New(opts...), st: store.NewMemory(), net: &network{hosts: map[string]http.Handler{}}}
}

// server starts a token server at host, with a Conf of its own on the
// cluster's store, and returns it.
func (cl *cluster) server(t testing.TB, host string, opts ...conf.Option) *tokenServer {
	t.Helper()
	base := []conf.Option{
		conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(cl.fake)}),
		conf.WithBaseURLs("http://wechat.test"),
		conf.WithStore(cl.st),
	}
	c, err := conf.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &tokenServer{conf: c, key: testKey}
	cl.net.set(host, s)
	return s
}

// client returns a tokenclient.Client that reaches the cluster's servers.
func (cl *cluster) client(t testing.TB, urls ...string) *tokenclient.Client {
	t.Helper()
	c, err := tokenclient.New(tokenclient.Config{URLs: urls, Key: testKey, HTTPClient: &http.Client{Transport: cl.net}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// node returns a business node's Conf fed by tc. Its WeChat calls
// (Transport) go to the fake.
func (cl *cluster) node(t testing.TB, tc *tokenclient.Client, opts ...conf.Option) *conf.Conf {
	t.Helper()
	base := append(tc.ConfOptions(), conf.WithAppID(wechattest.DefaultAppID, ""), conf.WithBaseURLs("http://wechat.test"))
	c, err := conf.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callWeChat makes a protected call (getcallbackip) through rt and returns
// WeChat's errcode answer as an error.
func callWeChat(ctx context.Context, rt http.RoundTripper, tok string) error {
	code, msg, err := callbackIP(ctx, rt, "http://wechat.test", tok)
	if err != nil || code == 0 {
		return err
	}
	return &conf.APIError{Endpoint: "/cgi-bin/getcallbackip", Code: code, Msg: msg}
}

// callbackIP calls base's /cgi-bin/getcallbackip through rt, with tok if
// not empty, and returns the errcode and errmsg of the answer.
func callbackIP(ctx context.Context, rt http.RoundTripper, base, tok string) (int, string, error) {
	u := base + "/cgi-bin/getcallbackip"
	if tok != "" {
		u += "?access_token=" + tok
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, "", err
	}
	return body.ErrCode, body.ErrMsg, nil
}

// network routes requests by host to handlers, in process; a host with no
// handler refuses the connection.
type network struct {
	mu    sync.Mutex
	hosts map[string]http.Handler
}

var errRefused = errors.New("connect: connection refused (test network)")

func (n *network) set(host string, h http.Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h == nil {
		delete(n.hosts, host)
	} else {
		n.hosts[host] = h
	}
}

func (n *network) RoundTrip(r *http.Request) (*http.Response, error) {
	n.mu.Lock()
	h := n.hosts[r.URL.Host]
	n.mu.Unlock()
	if h == nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("dial tcp %s: %w", r.URL.Host, errRefused)
	}
	return wechattest.InProcess(h).RoundTrip(r)
}

// status answers every request with code.
func status(code int, header ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		writeJSON(w, code, map[string]string{"error": http.StatusText(code)})
	})
}

// noSecret fails t if s shows any of secrets.
func noSecret(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s shows a secret or credential: %s", what, s)
		}
	}
}
