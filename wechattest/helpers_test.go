package wechattest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// answer is a decoded response of the Fake.
type answer struct {
	status    int
	ctype     string
	raw       string
	decodeErr error

	Errcode     int      `json:"errcode"`
	Errmsg      string   `json:"errmsg"`
	AccessToken string   `json:"access_token"`
	Ticket      string   `json:"ticket"`
	ExpiresIn   int64    `json:"expires_in"`
	IPList      []string `json:"ip_list"`
}

// serve sends one request straight to h's ServeHTTP.
func serve(t *testing.T, h http.Handler, method, target, body string) answer {
	t.Helper()
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, target, strings.NewReader(body))
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return decode(rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
}

func decode(status int, ctype, raw string) answer {
	a := answer{status: status, ctype: ctype, raw: raw}
	a.decodeErr = json.Unmarshal([]byte(raw), &a)
	return a
}

func tokenURL(appid, secret string) string {
	return PathToken + "?" + url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {secret}}.Encode()
}

func getToken(t *testing.T, f *Fake, appid, secret string) answer {
	t.Helper()
	return serve(t, f, http.MethodGet, tokenURL(appid, secret), "")
}

func stableBody(appid, secret string, force bool) string {
	b, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force})
	return string(b)
}

func getStable(t *testing.T, f *Fake, appid, secret string, force bool) answer {
	t.Helper()
	return serve(t, f, http.MethodPost, PathStableToken, stableBody(appid, secret, force))
}

func getTicket(t *testing.T, f *Fake, token, typ string) answer {
	t.Helper()
	return serve(t, f, http.MethodGet, PathGetTicket+"?"+url.Values{"access_token": {token}, "type": {typ}}.Encode(), "")
}

func callProtected(t *testing.T, f *Fake, token string) answer {
	t.Helper()
	return serve(t, f, http.MethodGet, PathCallbackIP+"?"+url.Values{"access_token": {token}}.Encode(), "")
}

// mustToken grants a classic token for the default app, failing the test
// unless the grant succeeds.
func mustToken(t *testing.T, f *Fake) string {
	t.Helper()
	return mustTokenOf(t, f, DefaultAppID, DefaultAppSecret)
}

func mustTokenOf(t *testing.T, f *Fake, appid, secret string) string {
	t.Helper()
	a := getToken(t, f, appid, secret)
	if a.status != http.StatusOK || a.decodeErr != nil || a.Errcode != 0 || a.AccessToken == "" {
		t.Fatalf("token grant for %s failed: status %d, body %q", appid, a.status, a.raw)
	}
	return a.AccessToken
}

func mustStable(t *testing.T, f *Fake, force bool) answer {
	t.Helper()
	a := getStable(t, f, DefaultAppID, DefaultAppSecret, force)
	if a.status != http.StatusOK || a.decodeErr != nil || a.Errcode != 0 || a.AccessToken == "" {
		t.Fatalf("stable_token (force=%v) failed: status %d, body %q", force, a.status, a.raw)
	}
	return a
}

func mustTicket(t *testing.T, f *Fake, token, typ string) string {
	t.Helper()
	a := getTicket(t, f, token, typ)
	if a.status != http.StatusOK || a.decodeErr != nil || a.Errcode != 0 || a.Errmsg != "ok" || a.Ticket == "" {
		t.Fatalf("getticket %s failed: status %d, body %q", typ, a.status, a.raw)
	}
	return a.Ticket
}

// wantErr checks a WeChat-style error answer.
func wantErr(t *testing.T, what string, a answer, code int, msg string) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Errorf("%s: HTTP status %d, want 200 (body %q)", what, a.status, a.raw)
	}
	if a.ctype != contentTypeJSON {
		t.Errorf("%s: Content-Type %q, want %q", what, a.ctype, contentTypeJSON)
	}
	if a.decodeErr != nil {
		t.Fatalf("%s: body %q is not JSON: %v", what, a.raw, a.decodeErr)
	}
	if a.Errcode != code || (msg != "" && a.Errmsg != msg) {
		t.Errorf("%s: got errcode %d %q, want %d %q", what, a.Errcode, a.Errmsg, code, msg)
	}
	if a.AccessToken != "" || a.Ticket != "" {
		t.Errorf("%s: error answer carries a credential: %q", what, a.raw)
	}
}

// wantAccepted checks that a protected call with token succeeds.
func wantAccepted(t *testing.T, what string, f *Fake, token string) {
	t.Helper()
	a := callProtected(t, f, token)
	if a.status != http.StatusOK || a.decodeErr != nil || a.Errcode != 0 || len(a.IPList) != 1 || a.IPList[0] != "127.0.0.1" {
		t.Errorf("%s: protected call refused: status %d, body %q", what, a.status, a.raw)
	}
	if !f.Valid(token) {
		t.Errorf("%s: Valid = false for an accepted token", what)
	}
}

// wantRefused checks that a protected call with token gets code.
func wantRefused(t *testing.T, what string, f *Fake, token string, code int) {
	t.Helper()
	a := callProtected(t, f, token)
	wantErr(t, what, a, code, "")
	if f.Valid(token) {
		t.Errorf("%s: Valid = true for a refused token", what)
	}
}

func newClockFake(opts ...Option) (*Fake, *Clock) {
	clk := NewClock(time.Time{})
	return New(append([]Option{WithClock(clk.Now)}, opts...)...), clk
}
