package silenceper_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/adapters/silenceper"
	"github.com/wechatconf/wechatconf/conf"
)

// fakeCreds is Credentials that counts reports: token "t1" until
// invalidated, then "t2".
type fakeCreds struct {
	mu          sync.Mutex
	tok         string
	invalidated []string
	fail        error
}

func (f *fakeCreds) AccessToken(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tok, nil
}

func (f *fakeCreds) JSAPITicket(context.Context) (string, error) { return "ticket", nil }

func (f *fakeCreds) Invalidate(_ context.Context, kind conf.Kind, v string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if kind != conf.AccessToken {
		return "", fmt.Errorf("kind %v", kind)
	}
	f.invalidated = append(f.invalidated, v)
	if f.fail != nil {
		return "", f.fail
	}
	if f.tok == v {
		f.tok = "t2"
	}
	return f.tok, nil
}

// wechat answers 40001 to any access_token but t2, and records requests.
type wechat struct {
	mu   sync.Mutex
	seen []string // method path?query body
}

func (w *wechat) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	w.mu.Lock()
	w.seen = append(w.seen, req.Method+" "+req.URL.Host+req.URL.Path+"?"+req.URL.RawQuery+" "+string(body))
	w.mu.Unlock()
	answer := `{"errcode":0,"errmsg":"ok"}`
	if req.URL.Query().Get("access_token") != "t2" {
		answer = `{"errcode":40001,"errmsg":"invalid credential"}`
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"application/json; encoding=utf-8"}},
		Body:       io.NopCloser(strings.NewReader(answer)),
		Request:    req,
	}, nil
}

func send(t *testing.T, rt http.RoundTripper, method, url, body string) string {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestTransportRetriesOurToken: a rejected token that the Handle handed out
// is reported and the request, body and all, is sent once more with the
// replacement.
func TestTransportRetriesOurToken(t *testing.T) {
	creds := &fakeCreds{tok: "t1"}
	h := silenceper.New(creds)
	if _, err := h.GetAccessToken(); err != nil {
		t.Fatal(err)
	}
	w := &wechat{}
	rt := silenceper.Transport(w, h)

	got := send(t, rt, http.MethodPost, "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=t1", `{"touser":"o1"}`)
	if !strings.Contains(got, `"errcode":0`) {
		t.Fatalf("answer %s, want the retry's", got)
	}
	if len(creds.invalidated) != 1 || creds.invalidated[0] != "t1" {
		t.Fatalf("reports %v, want [t1]", creds.invalidated)
	}
	if len(w.seen) != 2 || !strings.HasSuffix(w.seen[1], `access_token=t2 {"touser":"o1"}`) {
		t.Fatalf("requests %q, want the retry with t2 and the same body", w.seen)
	}
	// The next one carries t2 from the Handle: nothing to report.
	tok, _ := h.GetAccessToken()
	send(t, rt, http.MethodGet, "https://api.weixin.qq.com/cgi-bin/getcallbackip?access_token="+tok, "")
	if len(creds.invalidated) != 1 || len(w.seen) != 3 {
		t.Fatalf("reports %v, %d requests", creds.invalidated, len(w.seen))
	}
}

// TestTransportLeavesOthersAlone: tokens no Handle handed out (an OAuth user
// token, another app's), other hosts and token-less requests are sent once,
// untouched, with no report.
func TestTransportLeavesOthersAlone(t *testing.T) {
	creds := &fakeCreds{tok: "t1"}
	h := silenceper.New(creds)
	if _, err := h.GetAccessToken(); err != nil {
		t.Fatal(err)
	}
	w := &wechat{}
	rt := silenceper.Transport(w, h)
	for _, u := range []string{
		"https://api.weixin.qq.com/sns/userinfo?access_token=user-token&openid=o1",
		"https://api.weixin.qq.com/cgi-bin/getcallbackip?access_token=other-app",
		"https://qyapi.weixin.qq.com/cgi-bin/user/get?access_token=t1",
		"https://api.weixin.qq.com/sns/jscode2session?appid=wx1&js_code=c",
	} {
		if got := send(t, rt, http.MethodGet, u, ""); !strings.Contains(got, "40001") {
			t.Errorf("%s: answer %s, want WeChat's own", u, got)
		}
	}
	if len(creds.invalidated) != 0 || len(w.seen) != 4 {
		t.Fatalf("reports %v and %d requests, want none and 4", creds.invalidated, len(w.seen))
	}
}

// TestTransportNoReplacement: when the Conf cannot replace the token (its
// forced-refresh limit, say), the caller sees WeChat's answer.
func TestTransportNoReplacement(t *testing.T) {
	creds := &fakeCreds{tok: "t1", fail: conf.ErrRefreshLimited}
	h := silenceper.New(creds)
	if _, err := h.GetAccessToken(); err != nil {
		t.Fatal(err)
	}
	w := &wechat{}
	got := send(t, silenceper.Transport(w, h), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/getcallbackip?access_token=t1", "")
	if !strings.Contains(got, "40001") || len(w.seen) != 1 || len(creds.invalidated) != 1 {
		t.Fatalf("answer %s after %d requests and reports %v", got, len(w.seen), creds.invalidated)
	}
}

// TestDoNoReplacement: Do returns the call's error and the report's.
func TestDoNoReplacement(t *testing.T) {
	creds := &fakeCreds{tok: "t1", fail: conf.ErrRefreshLimited}
	h := silenceper.New(creds)
	calls := 0
	rejected := util.NewCommonError("GetCallbackIP", 40001, "invalid credential")
	err := silenceper.Do(bg, h, func() error { calls++; return rejected })
	if calls != 1 || !errors.Is(err, conf.ErrRefreshLimited) || !errors.As(err, new(*util.CommonError)) {
		t.Fatalf("%d calls, err %v", calls, err)
	}
	// Other errors are not reported.
	creds.fail = nil
	calls = 0
	quota := util.NewCommonError("GetCallbackIP", 45009, "quota")
	if err := silenceper.Do(bg, h, func() error { calls++; return quota }); err != quota || calls != 1 || len(creds.invalidated) != 1 {
		t.Fatalf("quota: %d calls, %v, reports %v", calls, err, creds.invalidated)
	}
}

func TestIsRejected(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{util.NewCommonError("GetCallbackIP", 40001, "invalid credential"), true},
		{util.NewCommonError("x", 40014, "invalid access_token"), true},
		{util.NewCommonError("x", 42001, "access_token expired"), true},
		{fmt.Errorf("wrapped: %w", util.NewCommonError("x", 42001, "")), true},
		{util.NewCommonError("x", 45009, "quota"), false},
		{util.NewCommonError("x", -1, "busy"), false},
		{errors.New("getTicket Error : errcode=40001 , errmsg=invalid credential"), true},
		{errors.New("getTicket Error : errcode=40164 , errmsg=ip"), false},
		{fmt.Errorf("conf: %w", conf.ErrTokenInvalid), true},
		{errors.New("http get error : uri=x , statusCode=502"), false},
	} {
		if got := silenceper.IsRejected(c.err); got != c.want {
			t.Errorf("IsRejected(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
