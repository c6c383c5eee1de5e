package conf_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// These tests use real sockets: failover is about hosts that fail.

func newConf(t *testing.T, opts ...conf.Option) *conf.Conf {
	t.Helper()
	c, err := conf.New(append([]conf.Option{conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestFailoverToNextHostOn5xxAndNetworkErrors(t *testing.T) {
	fake := wechattest.NewServer()
	defer fake.Close()
	var hits500 atomic.Int64
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits500.Add(1)
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer broken.Close()
	c := newConf(t, conf.WithBaseURLs("http://127.0.0.1:1", broken.URL, fake.URL()))
	tok, err := c.AccessToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !fake.Valid(tok) || hits500.Load() != 1 || fake.Stats().TokenGrants != 1 {
		t.Fatalf("token valid %v, 5xx host hit %d times, grants %d", fake.Valid(tok), hits500.Load(), fake.Stats().TokenGrants)
	}
}

func TestAllHostsDownIsAClearErrorAndNothingCached(t *testing.T) {
	fake := wechattest.NewServer()
	defer fake.Close()
	fake.FailNext(2, wechattest.HTTPStatus(503))
	st := store.NewMemory()
	c := newConf(t, conf.WithBaseURLs(fake.URL(), fake.URL()), conf.WithStore(st))
	_, err := c.AccessToken(t.Context())
	var he *conf.HTTPError
	if !errors.As(err, &he) || he.Status != 503 {
		t.Fatalf("err = %v; want an HTTPError 503", err)
	}
	if _, err := st.Get(t.Context(), conf.Key(wechattest.DefaultAppID, conf.AccessToken)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("something was stored after a failure: %v", err)
	}
	if _, err := c.AccessToken(t.Context()); err != nil {
		t.Fatalf("after the fault passed: %v", err)
	}
}

func TestBusyIsRetriedWithBackoff(t *testing.T) {
	fake := wechattest.NewServer()
	defer fake.Close()
	fake.FailNext(2, wechattest.Busy())
	c := newConf(t, conf.WithBaseURLs(fake.URL()), conf.WithBusyRetries(3, time.Millisecond))
	tok, err := c.AccessToken(t.Context())
	if err != nil || !fake.Valid(tok) {
		t.Fatalf("AccessToken = %q, %v", tok, err)
	}
	if s := fake.Stats(); s.Requests != 3 || s.TokenGrants != 1 {
		t.Fatalf("stats %+v: want 3 requests, 1 grant", s)
	}
	// Past the retries: ErrBusy.
	fake.FailNext(10, wechattest.Busy())
	_, err = c.GrantAccessToken(t.Context())
	if !errors.Is(err, conf.ErrBusy) {
		t.Fatalf("err = %v; want ErrBusy", err)
	}
}

func TestErrcodesAreTypedAndNotRetried(t *testing.T) {
	cases := []struct {
		fault   wechattest.Fault
		code    int
		isQuota bool
	}{
		{wechattest.Errcode(45009, "reach max api daily quota limit"), 45009, true},
		{wechattest.Errcode(40164, "invalid ip, not in whitelist"), 40164, false},
		{wechattest.Errcode(40243, "AppSecret已被冻结"), 40243, false},
	}
	for _, tc := range cases {
		fake := wechattest.NewServer()
		fake.FailNext(1, tc.fault)
		c := newConf(t, conf.WithBaseURLs(fake.URL(), fake.URL()))
		_, err := c.AccessToken(t.Context())
		var ae *conf.APIError
		if !errors.As(err, &ae) || ae.Code != tc.code || ae.Endpoint != "/cgi-bin/token" {
			t.Fatalf("err = %v; want APIError %d", err, tc.code)
		}
		if errors.Is(err, conf.ErrQuota) != tc.isQuota {
			t.Errorf("%d: errors.Is(ErrQuota) = %v", tc.code, !tc.isQuota)
		}
		if errors.Is(err, conf.ErrTokenInvalid) {
			t.Errorf("%d matches ErrTokenInvalid", tc.code)
		}
		if n := fake.Stats().Requests; n != 1 {
			t.Errorf("%d: %d requests, want 1 (no retry, no failover)", tc.code, n)
		}
		fake.Close()
	}
}

func TestWrongSecretIsNotTokenInvalid(t *testing.T) {
	fake := wechattest.NewServer()
	defer fake.Close()
	c, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, "wrong"), conf.WithBaseURLs(fake.URL()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.AccessToken(t.Context())
	var ae *conf.APIError
	if !errors.As(err, &ae) || ae.Code != 40125 || errors.Is(err, conf.ErrTokenInvalid) {
		t.Fatalf("err = %v; want APIError 40125, not ErrTokenInvalid", err)
	}
	// On /cgi-bin/token, 40001 means a wrong secret too.
	if errors.Is(&conf.APIError{Endpoint: "/cgi-bin/token", Code: 40001}, conf.ErrTokenInvalid) {
		t.Fatal("40001 on /cgi-bin/token matched ErrTokenInvalid")
	}
	if !errors.Is(&conf.APIError{Endpoint: "/cgi-bin/user/info", Code: 42001}, conf.ErrTokenInvalid) {
		t.Fatal("42001 on an API call did not match ErrTokenInvalid")
	}
}

func TestMalformedAnswerIsAnErrorAndNothingCached(t *testing.T) {
	fake := wechattest.NewServer()
	defer fake.Close()
	fake.FailNext(1, wechattest.Malformed())
	st := store.NewMemory()
	c := newConf(t, conf.WithBaseURLs(fake.URL()), conf.WithStore(st))
	_, err := c.AccessToken(t.Context())
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("err = %v; want a malformed-answer error", err)
	}
	if _, err := st.Get(t.Context(), conf.Key(wechattest.DefaultAppID, conf.AccessToken)); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a malformed answer was stored")
	}
	// An answer without a token is refused too.
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"access_token":"","expires_in":7200}`)
	}))
	defer empty.Close()
	c2 := newConf(t, conf.WithBaseURLs(empty.URL))
	if _, err := c2.AccessToken(t.Context()); err == nil {
		t.Fatal("an answer without a token was accepted")
	}
}

func TestHTTPTimeoutIsAnError(t *testing.T) {
	fake := wechattest.NewServer(wechattest.WithLatency(time.Hour))
	defer fake.Close()
	c := newConf(t, conf.WithBaseURLs(fake.URL()), conf.WithHTTPClient(&http.Client{Timeout: 50 * time.Millisecond}))
	if _, err := c.AccessToken(t.Context()); err == nil {
		t.Fatal("no error from a host that never answers")
	}
}

func TestStableTokenForcesOnlyWhenRejectedTokenComesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		c := node(t, fake, st, conf.WithStableToken())
		ctx := t.Context()
		tok, err := c.AccessToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := fake.Stats()
		if s.StableTokenGrants != 1 || s.TokenGrants != 0 || s.StableTokenForced != 0 {
			t.Fatalf("stats %+v: want one stable grant", s)
		}
		// WeChat rejects it: the platform hands out the current stable
		// token, which is a new one here, so no forced refresh is spent.
		fake.Revoke(wechattest.DefaultAppID)
		fresh, err := c.Invalidate(ctx, conf.AccessToken, tok)
		if err != nil || fresh == tok || !fake.Valid(fresh) {
			t.Fatalf("Invalidate = %q, %v", fresh, err)
		}
		if s := fake.Stats(); s.StableTokenForced != 0 {
			t.Fatalf("stats %+v: a forced refresh was spent needlessly", s)
		}
	})
}

// A platform that keeps returning the token it rejects: only then is
// force_refresh sent, once.
func TestStableTokenForcesWhenTheRejectedOneComesBack(t *testing.T) {
	var forced, plain atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			ForceRefresh bool `json:"force_refresh"`
			Secret       string
		}
		if r.URL.Path != "/cgi-bin/stable_token" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		if body.ForceRefresh {
			forced.Add(1)
			io.WriteString(w, `{"access_token":"forced-token","expires_in":7200}`)
			return
		}
		plain.Add(1)
		io.WriteString(w, `{"access_token":"sticky-token","expires_in":7000}`)
	}))
	defer srv.Close()
	c := newConf(t, conf.WithBaseURLs(srv.URL), conf.WithStableToken())
	tok, err := c.AccessToken(t.Context())
	if err != nil || tok != "sticky-token" {
		t.Fatalf("AccessToken = %q, %v", tok, err)
	}
	fresh, err := c.Invalidate(t.Context(), conf.AccessToken, tok)
	if err != nil || fresh != "forced-token" {
		t.Fatalf("Invalidate = %q, %v; want the forced token", fresh, err)
	}
	if forced.Load() != 1 || plain.Load() != 2 {
		t.Fatalf("forced %d, plain %d; want 1 and 2", forced.Load(), plain.Load())
	}
}

func TestTransportAddsTokenAndRetriesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		c := node(t, fake, store.NewMemory())
		client := &http.Client{Transport: c.Transport(wechattest.InProcess(fake))}
		get := func() map[string]any {
			resp, err := client.Get("http://wechat.test/cgi-bin/getcallbackip")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			return body
		}
		if body := get(); body["ip_list"] == nil {
			t.Fatalf("answer %v; want ip_list", body)
		}
		fake.Revoke(wechattest.DefaultAppID)
		if body := get(); body["ip_list"] == nil {
			t.Fatalf("after revocation: %v; want the retried call to succeed", body)
		}
		if s := fake.Stats(); s.TokenGrants != 2 || s.Rejections != 1 {
			t.Fatalf("stats %+v: want 2 grants and 1 rejection", s)
		}
		// A body that cannot be replayed is not retried.
		fake.Revoke(wechattest.DefaultAppID)
		req, _ := http.NewRequest(http.MethodPost, "http://wechat.test/cgi-bin/getcallbackip", io.NopCloser(strings.NewReader("{}")))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ ErrCode int }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if body.ErrCode == 0 {
			t.Fatal("a non-replayable request was retried")
		}
	})
}

func TestJSConfigSignsWithLiveTicket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		c := node(t, fake, store.NewMemory())
		ctx := context.Background()
		cfg, err := c.JSConfig(ctx, "http://example.com/page?x=1#frag")
		if err != nil {
			t.Fatal(err)
		}
		ticket, _ := c.JSAPITicket(ctx)
		if cfg.AppID != wechattest.DefaultAppID || cfg.Timestamp != time.Now().Unix() || len(cfg.NonceStr) < 16 {
			t.Fatalf("JSConfig = %+v", cfg)
		}
		if want := wechattestSign(ticket, cfg.NonceStr, cfg.Timestamp, "http://example.com/page?x=1"); cfg.Signature != want {
			t.Fatalf("signature %s, want %s", cfg.Signature, want)
		}
		if _, err := c.JSConfig(ctx, ""); err == nil {
			t.Fatal("empty URL accepted")
		}
	})
}
