package wechattest

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var urlSafe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestTokenGrant(t *testing.T) {
	f, _ := newClockFake()
	a := getToken(t, f, DefaultAppID, DefaultAppSecret)
	if a.status != http.StatusOK || a.ctype != contentTypeJSON || a.decodeErr != nil {
		t.Fatalf("status %d, Content-Type %q, body %q", a.status, a.ctype, a.raw)
	}
	if a.Errcode != 0 || a.ExpiresIn != 7200 {
		t.Errorf("errcode %d expires_in %d, want 0 and 7200", a.Errcode, a.ExpiresIn)
	}
	if len(a.AccessToken) < 64 || !urlSafe.MatchString(a.AccessToken) {
		t.Errorf("token %q: want 64+ URL-safe characters", a.AccessToken)
	}
	if strings.Contains(a.raw, "errcode") {
		t.Errorf("a successful grant has no errcode, like WeChat's: %q", a.raw)
	}
	wantAccepted(t, "new token", f, a.AccessToken)
	if got := f.CurrentToken(DefaultAppID); got != a.AccessToken {
		t.Errorf("CurrentToken = %q, want the granted %q", got, a.AccessToken)
	}
	if s := f.Stats(); s.TokenGrants != 1 || s.Requests != 2 || s.Rejections != 0 {
		t.Errorf("Stats = %+v, want 1 grant, 2 requests, no rejection", s)
	}
	if f.Valid("") || f.Valid("no-such-token") {
		t.Error("Valid accepts an empty or unknown token")
	}
}

func TestTokenErrors(t *testing.T) {
	f, _ := newClockFake()
	q := func(v url.Values) string { return PathToken + "?" + v.Encode() }
	cases := []struct {
		name, method, target string
		code                 int
		msg                  string
	}{
		{"no grant_type", "GET", q(url.Values{"appid": {DefaultAppID}, "secret": {DefaultAppSecret}}), 40002, "invalid grant_type"},
		{"wrong grant_type", "GET", q(url.Values{"grant_type": {"password"}, "appid": {DefaultAppID}, "secret": {DefaultAppSecret}}), 40002, "invalid grant_type"},
		{"unknown appid", "GET", tokenURL("wx_nobody", DefaultAppSecret), 40013, "invalid appid"},
		{"wrong secret", "GET", tokenURL(DefaultAppID, "0123456789abcdef0123456789abcdef"), 40125, "invalid appsecret"},
		{"no appid", "GET", tokenURL("", DefaultAppSecret), 41002, "appid missing"},
		{"no secret", "GET", tokenURL(DefaultAppID, ""), 41004, "appsecret missing"},
		{"POST", "POST", tokenURL(DefaultAppID, DefaultAppSecret), 43001, "require GET method"},
	}
	for _, c := range cases {
		a := serve(t, f, c.method, c.target, "")
		wantErr(t, c.name, a, c.code, c.msg)
		if strings.Contains(a.raw, DefaultAppSecret) || strings.Contains(a.raw, "0123456789abcdef") {
			t.Errorf("%s: the answer echoes a secret: %q", c.name, a.raw)
		}
	}
	if s := f.Stats(); s.TokenGrants != 0 || s.Requests != len(cases) {
		t.Errorf("Stats = %+v, want no grant and %d requests", s, len(cases))
	}
	if f.CurrentToken(DefaultAppID) != "" {
		t.Error("a refused grant left a current token")
	}
}

func TestUnknownPath(t *testing.T) {
	f := New()
	for _, p := range []string{"/", "/cgi-bin/token/", "/cgi-bin/user/info", "/sns/oauth2/access_token"} {
		if a := serve(t, f, "GET", p, ""); a.status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, a.status)
		}
	}
}

func TestGraceWindow(t *testing.T) {
	f, clk := newClockFake()
	first := mustToken(t, f)
	clk.Advance(10 * time.Minute)
	second := mustToken(t, f)
	wantAccepted(t, "previous right after the grant", f, first)
	wantAccepted(t, "current", f, second)
	clk.Advance(DefaultGrace - time.Second)
	wantAccepted(t, "previous at the last second of grace", f, first)
	clk.Advance(time.Second)
	wantRefused(t, "previous after grace", f, first, CodeInvalidCredential)
	wantAccepted(t, "current after grace", f, second)
	if s := f.Stats(); s.Rejections != 1 {
		t.Errorf("Rejections = %d, want 1", s.Rejections)
	}

	// Two grants back is invalid at once, even inside the grace window.
	third := mustToken(t, f)
	fourth := mustToken(t, f)
	wantRefused(t, "two grants back", f, second, CodeInvalidCredential)
	wantAccepted(t, "one grant back", f, third)
	wantAccepted(t, "newest", f, fourth)
}

func TestGraceEndsAtOwnExpiry(t *testing.T) {
	f, clk := newClockFake(WithTokenTTL(10 * time.Minute))
	old := mustToken(t, f)
	clk.Advance(8 * time.Minute) // old has 2 minutes left, less than the grace
	cur := mustToken(t, f)
	clk.Advance(2*time.Minute - time.Second)
	wantAccepted(t, "old just before its expiry", f, old)
	clk.Advance(time.Second)
	wantRefused(t, "old at its expiry", f, old, CodeTokenExpired)
	wantAccepted(t, "current", f, cur)
}

func TestZeroGrace(t *testing.T) {
	f, _ := newClockFake(WithGrace(0))
	old := mustToken(t, f)
	cur := mustToken(t, f)
	wantRefused(t, "previous with no grace", f, old, CodeInvalidCredential)
	wantAccepted(t, "current", f, cur)
}

func TestExpiry(t *testing.T) {
	f, clk := newClockFake()
	tok := mustToken(t, f)
	clk.Advance(DefaultTokenTTL - time.Second)
	wantAccepted(t, "token a second before expiry", f, tok)
	clk.Advance(time.Second)
	wantRefused(t, "token at expiry", f, tok, CodeTokenExpired)
	wantErr(t, "getticket with expired token", getTicket(t, f, tok, "jsapi"), 42001, "access_token expired")
	if s := f.Stats(); s.Rejections != 2 || s.JSAPITickets != 0 {
		t.Errorf("Stats = %+v, want 2 rejections, no ticket", s)
	}
	// A new grant works and the expired one stays expired.
	fresh := mustToken(t, f)
	wantAccepted(t, "fresh", f, fresh)
	wantRefused(t, "expired after a new grant", f, tok, CodeTokenExpired)
}

func TestCustomTTLs(t *testing.T) {
	f, clk := newClockFake(WithTokenTTL(time.Hour), WithStableTokenTTL(30*time.Minute), WithTicketTTL(20*time.Minute))
	a := getToken(t, f, DefaultAppID, DefaultAppSecret)
	s := mustStable(t, f, false)
	tk := getTicket(t, f, a.AccessToken, "jsapi")
	if a.ExpiresIn != 3600 || s.ExpiresIn != 1800 || tk.ExpiresIn != 1200 {
		t.Fatalf("expires_in token %d stable %d ticket %d, want 3600 1800 1200", a.ExpiresIn, s.ExpiresIn, tk.ExpiresIn)
	}
	clk.Advance(20 * time.Minute)
	if f.ValidTicket(tk.Ticket) {
		t.Error("ticket valid past its TTL")
	}
	wantAccepted(t, "token inside its TTL", f, a.AccessToken)
	clk.Advance(10 * time.Minute)
	wantRefused(t, "stable past its TTL", f, s.AccessToken, CodeTokenExpired)
}

func TestStableReuseAndRollover(t *testing.T) {
	f, clk := newClockFake()
	classic := mustToken(t, f)
	first := mustStable(t, f, false)
	if first.ExpiresIn != 7200 || first.AccessToken == classic {
		t.Fatalf("first stable: %+v", first)
	}
	wantAccepted(t, "classic beside stable", f, classic)
	wantAccepted(t, "stable beside classic", f, first.AccessToken)

	clk.Advance(100 * time.Second)
	again := mustStable(t, f, false)
	if again.AccessToken != first.AccessToken || again.ExpiresIn != 7100 {
		t.Errorf("reuse: token changed=%v expires_in %d, want the same token with 7100", again.AccessToken != first.AccessToken, again.ExpiresIn)
	}
	// A classic grant does not touch the stable family, and vice versa.
	classic2 := mustToken(t, f)
	mustToken(t, f)
	wantRefused(t, "classic two grants back", f, classic, CodeInvalidCredential)
	wantAccepted(t, "stable after classic grants", f, first.AccessToken)
	if got := mustStable(t, f, false); got.AccessToken != first.AccessToken {
		t.Error("classic grants replaced the stable token")
	}
	_ = classic2

	clk.Set(clk.Now().Add(7200*time.Second - 100*time.Second - 301*time.Second)) // 301 s left
	if got := mustStable(t, f, false); got.AccessToken != first.AccessToken || got.ExpiresIn != 301 {
		t.Errorf("301 s left: same=%v expires_in %d, want the same token with 301", got.AccessToken == first.AccessToken, got.ExpiresIn)
	}
	clk.Advance(time.Second) // 300 s left: roll over
	rolled := mustStable(t, f, false)
	if rolled.AccessToken == first.AccessToken || rolled.ExpiresIn != 7200 {
		t.Fatalf("at 300 s left: same=%v expires_in %d, want a new token with 7200", rolled.AccessToken == first.AccessToken, rolled.ExpiresIn)
	}
	if got := mustStable(t, f, false); got.AccessToken != rolled.AccessToken {
		t.Error("the rolled-over token is not reused")
	}
	clk.Advance(299 * time.Second)
	wantAccepted(t, "rolled-over old one until its expiry", f, first.AccessToken)
	clk.Advance(time.Second)
	wantRefused(t, "rolled-over old one at its expiry", f, first.AccessToken, CodeTokenExpired)
	wantAccepted(t, "new stable", f, rolled.AccessToken)
	if s := f.Stats(); s.StableTokenGrants != 2 || s.StableTokenForced != 0 {
		t.Errorf("Stats = %+v, want 2 stable grants, none forced", s)
	}
}

func TestStableRolloverShortGrace(t *testing.T) {
	// With a grace shorter than the rollover window, the rolled-over token
	// must still live to its own expiry, not just the grace.
	f, clk := newClockFake(WithGrace(time.Minute))
	old := mustStable(t, f, false)
	clk.Advance(DefaultStableTokenTTL - StableRollover)
	if mustStable(t, f, false).AccessToken == old.AccessToken {
		t.Fatal("no rollover at 300 s left")
	}
	clk.Advance(StableRollover - time.Second)
	wantAccepted(t, "rolled-over token past the grace, before its expiry", f, old.AccessToken)
}

func TestStableExpiredIsReplaced(t *testing.T) {
	f, clk := newClockFake()
	first := mustStable(t, f, false)
	clk.Advance(3 * time.Hour)
	next := mustStable(t, f, false)
	if next.AccessToken == first.AccessToken || next.ExpiresIn != 7200 {
		t.Errorf("after expiry: same=%v expires_in %d", next.AccessToken == first.AccessToken, next.ExpiresIn)
	}
}

func TestStableForce(t *testing.T) {
	f, clk := newClockFake()
	first := mustStable(t, f, false)
	clk.Advance(time.Minute)
	forced := mustStable(t, f, true)
	if forced.AccessToken == first.AccessToken || forced.ExpiresIn != 7200 {
		t.Fatalf("force_refresh: same=%v expires_in %d", forced.AccessToken == first.AccessToken, forced.ExpiresIn)
	}
	if got := mustStable(t, f, false); got.AccessToken != forced.AccessToken {
		t.Error("a non-forced call after a forced one does not return the forced token")
	}
	wantAccepted(t, "previous stable within grace", f, first.AccessToken)

	clk.Advance(29 * time.Second)
	wantErr(t, "force 29 s later", getStable(t, f, DefaultAppID, DefaultAppSecret, true), 45011, "api minute-quota reach limit")
	clk.Advance(DefaultGrace - 29*time.Second)
	wantRefused(t, "previous stable after grace", f, first.AccessToken, CodeInvalidCredential)

	// Up to 20 forced refreshes a day, 30 s apart; the 21st gets 45009.
	for i := 2; i <= StableForceDailyLimit; i++ {
		clk.Advance(StableForceInterval)
		mustStable(t, f, true)
	}
	clk.Advance(StableForceInterval)
	wantErr(t, "21st force of the day", getStable(t, f, DefaultAppID, DefaultAppSecret, true), 45009, "reach max api daily quota limit")
	if got := mustStable(t, f, false); got.ExpiresIn <= 300 {
		t.Errorf("non-forced call while forcing is exhausted: expires_in %d", got.ExpiresIn)
	}
	clk.Advance(24 * time.Hour)
	mustStable(t, f, true)
	// One unforced grant, 20 forced on day one, 1 forced on day two; the
	// reuse answers and refusals grant nothing.
	if s := f.Stats(); s.StableTokenForced != 21 || s.StableTokenGrants != 22 {
		t.Errorf("Stats = %+v, want 21 forced of 22 stable grants", s)
	}
}

func TestStableForceTwoBack(t *testing.T) {
	f, clk := newClockFake()
	a := mustStable(t, f, true)
	clk.Advance(StableForceInterval)
	b := mustStable(t, f, true)
	clk.Advance(StableForceInterval)
	c := mustStable(t, f, true)
	wantRefused(t, "stable two forced grants back", f, a.AccessToken, CodeInvalidCredential)
	wantAccepted(t, "stable one back", f, b.AccessToken)
	wantAccepted(t, "stable current", f, c.AccessToken)
}

func TestStableErrors(t *testing.T) {
	f, _ := newClockFake()
	post := func(body string) answer { return serve(t, f, http.MethodPost, PathStableToken, body) }
	wantErr(t, "GET", serve(t, f, http.MethodGet, PathStableToken, ""), 43002, "require POST method")
	wantErr(t, "empty body", post(""), 47001, "data format error")
	wantErr(t, "not JSON", post("grant_type=client_credential"), 47001, "data format error")
	wantErr(t, "force_refresh as a string", post(`{"grant_type":"client_credential","appid":"`+DefaultAppID+`","secret":"`+DefaultAppSecret+`","force_refresh":"yes"}`), 47001, "")
	wantErr(t, "wrong grant_type", post(`{"grant_type":"x","appid":"`+DefaultAppID+`","secret":"`+DefaultAppSecret+`"}`), 40002, "invalid grant_type")
	wantErr(t, "unknown appid", getStable(t, f, "wx_nobody", DefaultAppSecret, false), 40013, "invalid appid")
	wantErr(t, "wrong secret", getStable(t, f, DefaultAppID, "bad", false), 40125, "invalid appsecret")
	wantErr(t, "no appid", getStable(t, f, "", DefaultAppSecret, false), 41002, "")
	wantErr(t, "no secret", getStable(t, f, DefaultAppID, "", false), 41004, "")
	// Omitted force_refresh means false.
	a := post(`{"grant_type":"client_credential","appid":"` + DefaultAppID + `","secret":"` + DefaultAppSecret + `"}`)
	if a.Errcode != 0 || a.AccessToken == "" {
		t.Fatalf("minimal body refused: %q", a.raw)
	}
	if s := f.Stats(); s.StableTokenGrants != 1 || s.StableTokenForced != 0 {
		t.Errorf("Stats = %+v, want 1 unforced stable grant", s)
	}
}

func TestTickets(t *testing.T) {
	f, clk := newClockFake()
	classic := mustToken(t, f)
	stable := mustStable(t, f, false).AccessToken

	j1 := mustTicket(t, f, classic, "jsapi")
	c1 := mustTicket(t, f, stable, "wx_card")
	for _, tk := range []string{j1, c1} {
		if len(tk) < 64 || !urlSafe.MatchString(tk) {
			t.Errorf("ticket %q: want 64+ URL-safe characters", tk)
		}
		if !f.ValidTicket(tk) || f.Valid(tk) {
			t.Errorf("ticket: ValidTicket=%v Valid=%v, want true false", f.ValidTicket(tk), f.Valid(tk))
		}
	}
	if f.ValidTicket(classic) {
		t.Error("ValidTicket accepts an access token")
	}
	wantRefused(t, "a ticket used as access token", f, j1, CodeInvalidCredential)
	wantErr(t, "getticket with a ticket as token", getTicket(t, f, j1, "jsapi"), 40001, msgInvalidCredential)

	// Types are separate families; within one, the grace rule holds.
	j2 := mustTicket(t, f, stable, "jsapi")
	if !f.ValidTicket(j1) || !f.ValidTicket(j2) || !f.ValidTicket(c1) {
		t.Error("previous jsapi ticket or the wx_card one died on a new jsapi ticket")
	}
	clk.Advance(DefaultGrace)
	if f.ValidTicket(j1) || !f.ValidTicket(j2) || !f.ValidTicket(c1) {
		t.Errorf("after grace: j1=%v j2=%v c1=%v, want false true true", f.ValidTicket(j1), f.ValidTicket(j2), f.ValidTicket(c1))
	}
	j3 := mustTicket(t, f, classic, "jsapi")
	j4 := mustTicket(t, f, classic, "jsapi")
	if f.ValidTicket(j2) || !f.ValidTicket(j3) || !f.ValidTicket(j4) {
		t.Error("two tickets back is not invalid at once")
	}
	clk.Advance(DefaultTicketTTL)
	if f.ValidTicket(j4) {
		t.Error("ticket valid past its expiry")
	}

	if s := f.Stats(); s.JSAPITickets != 4 || s.WXCardTickets != 1 || s.Rejections != 2 {
		t.Errorf("Stats = %+v, want 4 jsapi, 1 wx_card, 2 rejections", s)
	}
}

func TestTicketErrors(t *testing.T) {
	f, _ := newClockFake()
	tok := mustToken(t, f)
	wantErr(t, "no access_token", serve(t, f, "GET", PathGetTicket+"?type=jsapi", ""), 41001, "access_token missing")
	wantErr(t, "bogus access_token", getTicket(t, f, "bogus", "jsapi"), 40001, msgInvalidCredential)
	wantErr(t, "unknown type", getTicket(t, f, tok, "jsapi2"), 40097, "invalid args")
	wantErr(t, "no type", serve(t, f, "GET", PathGetTicket+"?access_token="+url.QueryEscape(tok), ""), 40097, "invalid args")
	wantErr(t, "POST", serve(t, f, "POST", PathGetTicket+"?type=jsapi&access_token="+url.QueryEscape(tok), ""), 43001, "")
	wantErr(t, "protected call without token", serve(t, f, "GET", PathCallbackIP, ""), 41001, "access_token missing")
	if s := f.Stats(); s.Rejections != 3 || s.JSAPITickets != 0 {
		t.Errorf("Stats = %+v, want 3 rejections (missing, bogus, missing) and no ticket", s)
	}
}

func TestFaults(t *testing.T) {
	cases := []struct {
		fault Fault
		check func(t *testing.T, a answer)
	}{
		{Busy(), func(t *testing.T, a answer) { wantErr(t, "Busy", a, -1, "system busy") }},
		{Fault{}, func(t *testing.T, a answer) { wantErr(t, "zero Fault", a, -1, "") }},
		{Errcode(40164, "invalid ip 1.2.3.4"), func(t *testing.T, a answer) { wantErr(t, "Errcode", a, 40164, "invalid ip 1.2.3.4") }},
		{HTTPStatus(503), func(t *testing.T, a answer) {
			if a.status != 503 || a.decodeErr == nil {
				t.Errorf("HTTPStatus(503): status %d body %q", a.status, a.raw)
			}
		}},
		{HTTPStatus(42), func(t *testing.T, a answer) {
			if a.status != 500 {
				t.Errorf("HTTPStatus(42): status %d, want 500", a.status)
			}
		}},
		{Malformed(), func(t *testing.T, a answer) {
			if a.status != 200 || a.ctype != contentTypeJSON || a.decodeErr == nil {
				t.Errorf("Malformed: status %d type %q decode error %v, body %q", a.status, a.ctype, a.decodeErr, a.raw)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.fault.String(), func(t *testing.T) {
			f, _ := newClockFake()
			tok := mustToken(t, f)
			f.FailNext(3, c.fault)
			c.check(t, getToken(t, f, DefaultAppID, DefaultAppSecret))
			c.check(t, getStable(t, f, DefaultAppID, DefaultAppSecret, false))
			wantAccepted(t, "protected call is not a credential request", f, tok)
			c.check(t, getTicket(t, f, tok, "jsapi"))
			// Recovered: the faults granted nothing, and the next requests work.
			if s := f.Stats(); s.TokenGrants != 1 || s.StableTokenGrants != 0 || s.JSAPITickets != 0 {
				t.Errorf("faulted requests granted: %+v", s)
			}
			if f.CurrentToken(DefaultAppID) != tok {
				t.Error("a faulted request replaced the token")
			}
			mustToken(t, f)
			mustStable(t, f, false)
			mustTicket(t, f, tok, "jsapi")
		})
	}
}

func TestLostAnswerGrantsButAnswers502(t *testing.T) {
	f, _ := newClockFake()
	tok := mustToken(t, f)
	f.FailNext(1, LostAnswer())
	a := getToken(t, f, DefaultAppID, DefaultAppSecret)
	if a.status != http.StatusBadGateway || strings.Contains(a.raw, "access_token") {
		t.Fatalf("LostAnswer: status %d body %q; want a 502 without the token", a.status, a.raw)
	}
	if s := f.Stats(); s.TokenGrants != 2 {
		t.Fatalf("grants %d, want 2: the lost answer still granted", s.TokenGrants)
	}
	if cur := f.CurrentToken(DefaultAppID); cur == tok || cur == "" {
		t.Fatal("the lost grant did not replace the token")
	}
	wantAccepted(t, "the replaced token within its grace", f, tok)
	if LostAnswer().String() != "wechattest.LostAnswer()" {
		t.Fatalf("String() = %q", LostAnswer().String())
	}
}

func TestFaultQueue(t *testing.T) {
	f := New()
	f.FailNext(1, Busy())
	f.FailNext(0, Malformed())
	f.FailNext(-3, Malformed())
	f.FailNext(2, Errcode(45009, "quota"))
	wantErr(t, "first", getToken(t, f, DefaultAppID, DefaultAppSecret), -1, "")
	wantErr(t, "second", getToken(t, f, DefaultAppID, DefaultAppSecret), 45009, "quota")
	wantErr(t, "third", getToken(t, f, DefaultAppID, DefaultAppSecret), 45009, "quota")
	mustToken(t, f)
}

func TestFaultStrings(t *testing.T) {
	for f, want := range map[string]string{
		Busy().String():              "wechattest.Busy()",
		HTTPStatus(502).String():     "wechattest.HTTPStatus(502)",
		Malformed().String():         "wechattest.Malformed()",
		Errcode(-1, "x y").String():  `wechattest.Errcode(-1, "x y")`,
		Errcode(40164, "").String():  `wechattest.Errcode(40164, "")`,
		HTTPStatus(1000).String():    "wechattest.HTTPStatus(500)",
		HTTPStatus(200).String():     "wechattest.HTTPStatus(200)",
		(Fault{}).String():           "wechattest.Busy()",
		Errcode(0, "ok").String():    `wechattest.Errcode(0, "ok")`,
		HTTPStatus(99).String():      "wechattest.HTTPStatus(500)",
		HTTPStatus(599).String():     "wechattest.HTTPStatus(599)",
		HTTPStatus(600).String():     "wechattest.HTTPStatus(500)",
		Errcode(45011, "m").String(): `wechattest.Errcode(45011, "m")`,
	} {
		if f != want {
			t.Errorf("got %s, want %s", f, want)
		}
	}
}

func TestRevoke(t *testing.T) {
	f, _ := newClockFake(WithApp("wxA", "secretA"), WithApp("wxB", "secretB"))
	a1 := mustTokenOf(t, f, "wxA", "secretA")
	a2 := mustTokenOf(t, f, "wxA", "secretA") // a1 now in its grace window
	sA := getStable(t, f, "wxA", "secretA", false).AccessToken
	jA := mustTicket(t, f, a2, "jsapi")
	cA := mustTicket(t, f, sA, "wx_card")
	b := mustTokenOf(t, f, "wxB", "secretB")
	jB := mustTicket(t, f, b, "jsapi")

	f.Revoke("wxA")
	f.Revoke("wx_unknown") // ignored
	for _, tok := range []string{a1, a2, sA} {
		wantRefused(t, "revoked token", f, tok, CodeInvalidCredential)
	}
	if f.ValidTicket(jA) || f.ValidTicket(cA) {
		t.Error("revoked tickets still valid")
	}
	wantAccepted(t, "other app's token", f, b)
	if !f.ValidTicket(jB) {
		t.Error("other app's ticket revoked")
	}

	// New grants work; a non-forced stable call replaces the revoked one.
	a3 := mustTokenOf(t, f, "wxA", "secretA")
	wantAccepted(t, "token after revoke", f, a3)
	s2 := getStable(t, f, "wxA", "secretA", false)
	if s2.AccessToken == "" || s2.AccessToken == sA || s2.ExpiresIn != 7200 {
		t.Errorf("stable after revoke: %q", s2.raw)
	}
	wantAccepted(t, "stable after revoke", f, s2.AccessToken)
	wantRefused(t, "revoked token stays dead after a new grant", f, a2, CodeInvalidCredential)
}

func TestGrantElsewhere(t *testing.T) {
	f, clk := newClockFake()
	mine := mustToken(t, f)
	theirs := f.GrantElsewhere(DefaultAppID)
	if theirs == "" || theirs == mine || len(theirs) < 64 {
		t.Fatalf("GrantElsewhere returned %q", theirs)
	}
	if f.CurrentToken(DefaultAppID) != theirs {
		t.Error("the external grant is not the current token")
	}
	wantAccepted(t, "external token", f, theirs)
	wantAccepted(t, "mine within grace", f, mine)
	clk.Advance(DefaultGrace)
	wantRefused(t, "mine after grace", f, mine, CodeInvalidCredential)
	if s := f.Stats(); s.ExternalGrants != 1 || s.TokenGrants != 1 || s.Requests != 4 {
		t.Errorf("Stats = %+v, want 1 external, 1 own grant, 4 requests", s)
	}
	// Two external grants in a row kill the older ones at once.
	f.GrantElsewhere(DefaultAppID)
	wantRefused(t, "two back after external grants", f, mine, CodeInvalidCredential)
	if got := f.GrantElsewhere("wx_unknown"); got != "" {
		t.Errorf("GrantElsewhere(unknown) = %q, want empty", got)
	}
}

func TestDailyQuota(t *testing.T) {
	clk := NewClock(time.Date(2025, 3, 1, 15, 0, 0, 0, time.UTC)) // 23:00 in China
	f := New(WithClock(clk.Now), WithDailyQuota(3), WithApp("wxA", "sA"), WithApp("wxB", "sB"))
	mustTokenOf(t, f, "wxA", "sA")
	mustTokenOf(t, f, "wxA", "sA")
	f.GrantElsewhere("wxA") // another client uses the same quota
	wantErr(t, "4th grant of the day", getToken(t, f, "wxA", "sA"), 45009, "reach max api daily quota limit")
	mustTokenOf(t, f, "wxB", "sB") // quotas are per app
	if got := f.GrantElsewhere("wxA"); got == "" {
		t.Error("GrantElsewhere refused by quota; it never should be")
	}
	clk.Advance(59 * time.Minute) // 23:59 in China: same day
	wantErr(t, "same China day", getToken(t, f, "wxA", "sA"), 45009, "")
	clk.Advance(time.Minute) // midnight in China: a new quota day
	mustTokenOf(t, f, "wxA", "sA")
	if s := f.Stats(); s.TokenGrants != 4 || s.ExternalGrants != 2 {
		t.Errorf("Stats = %+v, want 4 grants and 2 external", s)
	}
}

func TestQuotaZeroAndUnlimited(t *testing.T) {
	f := New(WithDailyQuota(0))
	wantErr(t, "quota 0", getToken(t, f, DefaultAppID, DefaultAppSecret), 45009, "")
	f = New(WithDailyQuota(-1))
	for range DefaultDailyQuota + 1 {
		mustToken(t, f)
	}
	f = New()
	for range DefaultDailyQuota {
		mustToken(t, f)
	}
	wantErr(t, "default quota", getToken(t, f, DefaultAppID, DefaultAppSecret), 45009, "")
}

func TestApps(t *testing.T) {
	f := New(WithApp("wxA", "sA"), WithApp("", "x"), WithApp("wxC", ""), WithApp("wxB", "old"), WithApp("wxB", "sB"))
	wantErr(t, "default app not registered", getToken(t, f, DefaultAppID, DefaultAppSecret), 40013, "")
	wantErr(t, "empty secret skipped", getToken(t, f, "wxC", "x"), 40013, "")
	wantErr(t, "replaced secret", getToken(t, f, "wxB", "old"), 40125, "")
	a := mustTokenOf(t, f, "wxA", "sA")
	b := mustTokenOf(t, f, "wxB", "sB")
	mustTokenOf(t, f, "wxB", "sB")
	mustTokenOf(t, f, "wxB", "sB") // b is now two back; a must not be affected
	wantAccepted(t, "app A's token", f, a)
	wantRefused(t, "app B two back", f, b, CodeInvalidCredential)

	// Only skipped entries: the default app stays.
	f = New(WithApp("", ""), nil, WithClock(nil), WithTokenTTL(-1), WithGrace(-time.Second), WithLatency(-time.Second))
	if a := getToken(t, f, DefaultAppID, DefaultAppSecret); a.ExpiresIn != 7200 {
		t.Errorf("default app after bad options: %q", a.raw)
	}
	tok := mustToken(t, f)
	mustToken(t, f)
	if f.Valid(tok) {
		t.Error("negative grace did not count as zero")
	}
}

func TestResetStats(t *testing.T) {
	f, _ := newClockFake(WithDailyQuota(1))
	tok := mustToken(t, f)
	f.FailNext(1, Busy())
	f.ResetStats()
	if s := f.Stats(); s != (Stats{}) {
		t.Errorf("after ResetStats: %+v", s)
	}
	wantErr(t, "queued fault survives ResetStats", getToken(t, f, DefaultAppID, DefaultAppSecret), -1, "")
	wantErr(t, "quota survives ResetStats", getToken(t, f, DefaultAppID, DefaultAppSecret), 45009, "")
	wantAccepted(t, "token survives ResetStats", f, tok)
	if s := f.Stats(); s != (Stats{Requests: 3}) {
		t.Errorf("Stats = %+v, want only 3 requests", s)
	}
}

func TestUniqueAndSwept(t *testing.T) {
	f, clk := newClockFake(WithDailyQuota(-1))
	seen := map[string]bool{}
	var first string
	for i := range 1500 {
		tok := mustToken(t, f)
		if i == 0 {
			first = tok
		}
		if seen[tok] {
			t.Fatalf("token repeated after %d grants", i)
		}
		seen[tok] = true
		if i == 0 {
			clk.Advance(48 * time.Hour)
		}
	}
	f.mu.Lock()
	n, kept := len(f.creds), f.creds[first] != nil
	f.mu.Unlock()
	if kept || n >= 1500 {
		t.Errorf("sweep kept the long-dead first token (%v) or nothing was swept (%d records)", kept, n)
	}
	wantRefused(t, "swept token", f, first, CodeInvalidCredential)
}

func TestClock(t *testing.T) {
	c := NewClock(time.Time{})
	if c.Now().IsZero() {
		t.Fatal("zero start gave a zero clock")
	}
	start := c.Now()
	if got := c.Advance(time.Hour); !got.Equal(start.Add(time.Hour)) || !c.Now().Equal(got) {
		t.Errorf("Advance: %v, Now %v", got, c.Now())
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c.Set(at)
	if !c.Now().Equal(at) {
		t.Errorf("Set: Now = %v", c.Now())
	}
}
