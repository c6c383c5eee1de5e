package wechattest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

// A corp with two apps and a contacts-sync secret, and a second corp.
const (
	corpA       = "ww000000000000000a"
	corpB       = "ww000000000000000b"
	secretA1    = "secretA1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	secretA2    = "secretA2AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	secretSync  = "secretSyncAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	secretB1    = "secretB1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	agentA1     = 1000002
	agentA2     = 1000003
	agentB1     = 1000002 // the same number in another corp
	wecomAESKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
)

func twoCorps(opts ...WeComOption) (*WeCom, *Clock) {
	clk := NewClock(time.Time{})
	return NewWeCom(append([]WeComOption{
		WithWeComClock(clk.Now),
		WithCorpApp(corpA, agentA1, secretA1),
		WithCorpApp(corpA, agentA2, secretA2),
		WithCorpApp(corpA, 0, secretSync),
		WithCorpApp(corpB, agentB1, secretB1),
	}, opts...)...), clk
}

func wcGet(t *testing.T, w *WeCom, path string, q url.Values) answer {
	t.Helper()
	return serve(t, w, http.MethodGet, path+"?"+q.Encode(), "")
}

func wcToken(t *testing.T, w *WeCom, corp, secret string) answer {
	t.Helper()
	return wcGet(t, w, PathWeComToken, url.Values{"corpid": {corp}, "corpsecret": {secret}})
}

func mustWcToken(t *testing.T, w *WeCom, corp, secret string) answer {
	t.Helper()
	a := wcToken(t, w, corp, secret)
	if a.status != 200 || a.decodeErr != nil || a.Errcode != 0 || a.Errmsg != "ok" || a.AccessToken == "" || a.ctype != contentTypeJSON {
		t.Fatalf("gettoken %s failed: %d %q", corp, a.status, a.raw)
	}
	return a
}

func wcTicket(t *testing.T, w *WeCom, token string, agent bool) answer {
	t.Helper()
	if agent {
		return wcGet(t, w, PathWeComAgentTicket, url.Values{"access_token": {token}, "type": {"agent_config"}})
	}
	return wcGet(t, w, PathWeComJSAPITicket, url.Values{"access_token": {token}})
}

func mustWcTicket(t *testing.T, w *WeCom, token string, agent bool) string {
	t.Helper()
	a := wcTicket(t, w, token, agent)
	if a.status != 200 || a.decodeErr != nil || a.Errcode != 0 || a.Errmsg != "ok" || a.Ticket == "" || a.ExpiresIn != 7200 {
		t.Fatalf("ticket (agent=%v) failed: %d %q", agent, a.status, a.raw)
	}
	return a.Ticket
}

func agentGet(t *testing.T, w *WeCom, token, agentID string) answer {
	t.Helper()
	return wcGet(t, w, PathWeComAgentGet, url.Values{"access_token": {token}, "agentid": {agentID}})
}

func TestWeComDefaults(t *testing.T) {
	w := NewWeCom()
	a := mustWcToken(t, w, DefaultCorpID, DefaultAgentSecret)
	if a.ExpiresIn != 7200 || len(a.AccessToken) != 128 || !w.Valid(a.AccessToken) {
		t.Fatalf("default app: %q", a.raw)
	}
	if g := agentGet(t, w, a.AccessToken, strconv.Itoa(DefaultAgentID)); g.Errcode != 0 {
		t.Fatalf("agent/get of the default app: %q", g.raw)
	}
	if len(DefaultAgentSecret) != 43 || len(DefaultCorpID) != 18 {
		t.Error("default credentials not shaped like WeCom's")
	}
}

func TestWeComSameTokenWhileValid(t *testing.T) {
	w, clk := twoCorps()
	first := mustWcToken(t, w, corpA, secretA1)
	clk.Advance(100 * time.Second)
	again := mustWcToken(t, w, corpA, secretA1)
	if again.AccessToken != first.AccessToken || again.ExpiresIn != 7100 {
		t.Fatalf("repeat within validity: %q, want the same token with 7100 s left", again.raw)
	}
	if s := w.Stats(); s.TokenGrants != 1 || s.TokenRepeats != 1 || s.Requests != 2 {
		t.Fatalf("Stats = %+v", s)
	}
	clk.Advance(7099 * time.Second) // 1 s left
	if a := mustWcToken(t, w, corpA, secretA1); a.AccessToken != first.AccessToken || a.ExpiresIn != 1 {
		t.Fatalf("1 s before expiry: %q", a.raw)
	}
	clk.Advance(time.Second) // expired
	if w.Valid(first.AccessToken) {
		t.Fatal("token valid at its expiry")
	}
	g := wcGet(t, w, PathCallbackIP, url.Values{"access_token": {first.AccessToken}})
	wantErr(t, "expired token", g, CodeTokenExpired, "access_token expired")
	fresh := mustWcToken(t, w, corpA, secretA1)
	if fresh.AccessToken == first.AccessToken || fresh.ExpiresIn != 7200 || !w.Valid(fresh.AccessToken) {
		t.Fatalf("after expiry: %q", fresh.raw)
	}
	if w.CurrentToken(corpA, secretA1) != fresh.AccessToken {
		t.Error("CurrentToken is not the last token issued")
	}
	if s := w.Stats(); s.TokenGrants != 2 || s.TokenRepeats != 2 || s.Rejections != 1 {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestWeComPerAppTokens(t *testing.T) {
	w, _ := twoCorps()
	seen := map[string]string{}
	for _, app := range []struct{ corp, secret string }{{corpA, secretA1}, {corpA, secretA2}, {corpA, secretSync}, {corpB, secretB1}} {
		tok := mustWcToken(t, w, app.corp, app.secret).AccessToken
		if prev, dup := seen[tok]; dup {
			t.Fatalf("%s and %s share a token", prev, app.secret)
		}
		seen[tok] = app.secret
		if mustWcToken(t, w, app.corp, app.secret).AccessToken != tok {
			t.Fatalf("%s: second call gave another token", app.secret)
		}
	}
	if s := w.Stats(); s.TokenGrants != 4 || s.TokenRepeats != 4 {
		t.Fatalf("Stats = %+v", s)
	}
	// A secret of corp B is no secret of corp A.
	wantErr(t, "secret of another corp", wcToken(t, w, corpA, secretB1), CodeInvalidCredential, "invalid credential")
}

func TestWeComGettokenErrors(t *testing.T) {
	w, _ := twoCorps()
	for _, tc := range []struct {
		name, corp, secret string
		code               int
	}{
		{"no corpid", "", secretA1, CodeCorpIDMissing},
		{"unknown corpid", "ww0000000000000zzz", secretA1, CodeInvalidCorpID},
		{"no secret", corpA, "", CodeSecretMissing},
		{"wrong secret", corpA, "nope", CodeInvalidCredential},
		{"secret prefix", corpA, secretA1[:42], CodeInvalidCredential},
	} {
		a := wcToken(t, w, tc.corp, tc.secret)
		wantErr(t, tc.name, a, tc.code, "")
		if tc.secret != "" && strings.Contains(a.raw, tc.secret) {
			t.Errorf("%s: answer echoes the secret: %q", tc.name, a.raw)
		}
	}
	post := serve(t, w, http.MethodPost, PathWeComToken+"?corpid="+corpA+"&corpsecret="+secretA1, "")
	wantErr(t, "POST", post, CodeRequireGET, "")
	if s := w.Stats(); s.GrantRefusals != 5 || s.TokenGrants != 0 {
		t.Fatalf("Stats = %+v", s)
	}
	if a := serve(t, w, http.MethodGet, "/cgi-bin/token", ""); a.status != http.StatusNotFound {
		t.Errorf("the Official Account's path answered %d", a.status)
	}
}

func TestWeComRevoke(t *testing.T) {
	w, _ := twoCorps()
	tok := mustWcToken(t, w, corpA, secretA1).AccessToken
	other := mustWcToken(t, w, corpA, secretA2).AccessToken
	jt := mustWcTicket(t, w, tok, false)
	if !w.Revoke(corpA, secretA1) {
		t.Fatal("Revoke = false for a live token")
	}
	if w.Revoke(corpA, secretA1) || w.Revoke(corpA, "nope") || w.Revoke("ww-unknown", secretA1) || w.RevokeAgent(corpA, 42) {
		t.Error("Revoke = true with nothing to revoke")
	}
	if w.Valid(tok) || !w.Valid(other) || !w.ValidTicket(jt) {
		t.Fatal("Revoke killed the wrong credentials")
	}
	wantErr(t, "revoked", agentGet(t, w, tok, strconv.Itoa(agentA1)), CodeInvalidAccessToken, "invalid access_token")
	wantErr(t, "revoked ticket call", wcTicket(t, w, tok, true), CodeInvalidAccessToken, "")
	fresh := mustWcToken(t, w, corpA, secretA1)
	if fresh.AccessToken == tok || fresh.ExpiresIn != 7200 {
		t.Fatalf("after Revoke gettoken gave %q", fresh.raw)
	}
	if !w.RevokeAgent(corpA, agentA1) || w.Valid(fresh.AccessToken) {
		t.Fatal("RevokeAgent did not revoke")
	}
	if s := w.Stats(); s.TokenGrants != 3 || s.Rejections != 2 {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestWeComProtectedCalls(t *testing.T) {
	w, clk := twoCorps()
	a1 := mustWcToken(t, w, corpA, secretA1).AccessToken
	sync := mustWcToken(t, w, corpA, secretSync).AccessToken
	b1 := mustWcToken(t, w, corpB, secretB1).AccessToken
	ok := agentGet(t, w, a1, strconv.Itoa(agentA1))
	if ok.Errcode != 0 || ok.Errmsg != "ok" || !strings.Contains(ok.raw, `"agentid":1000002`) {
		t.Fatalf("agent/get of its own app: %q", ok.raw)
	}
	for _, tc := range []struct {
		name, token, agent string
		code               int
	}{
		{"another app", a1, strconv.Itoa(agentA2), CodeOtherAgent},
		{"contacts token", sync, strconv.Itoa(agentA1), CodeOtherAgent},
		{"unknown agentid", a1, "42", CodeInvalidAgentID},
		{"agentid 0", a1, "0", CodeInvalidAgentID},
		{"agentid not a number", a1, "abc", CodeInvalidAgentID},
		{"no agentid", a1, "", CodeAgentIDMissing},
		{"agentid of the same number in corp B", b1, strconv.Itoa(agentA2), CodeInvalidAgentID},
		{"no token", "", strconv.Itoa(agentA1), CodeTokenMissing},
		{"unknown token", "nope", strconv.Itoa(agentA1), CodeInvalidAccessToken},
	} {
		wantErr(t, tc.name, agentGet(t, w, tc.token, tc.agent), tc.code, "")
	}
	if g := agentGet(t, w, b1, strconv.Itoa(agentB1)); g.Errcode != 0 {
		t.Fatalf("corp B's own app: %q", g.raw)
	}
	if g := wcGet(t, w, PathCallbackIP, url.Values{"access_token": {sync}}); g.Errcode != 0 || len(g.IPList) != 1 {
		t.Fatalf("getcallbackip with a contacts token: %q", g.raw)
	}
	wantErr(t, "POST agent/get", serve(t, w, http.MethodPost, PathWeComAgentGet+"?access_token="+a1+"&agentid=1000002", ""), CodeRequireGET, "")
	if s := w.Stats(); s.Rejections != 4 {
		t.Fatalf("Rejections = %d, want 4 (two 301002, 41001, 40014)", s.Rejections)
	}
	clk.Advance(2 * time.Hour)
	wantErr(t, "expired", agentGet(t, w, a1, strconv.Itoa(agentA1)), CodeTokenExpired, "")
}

func TestWeComTickets(t *testing.T) {
	w, clk := twoCorps()
	a1 := mustWcToken(t, w, corpA, secretA1).AccessToken
	a2 := mustWcToken(t, w, corpA, secretA2).AccessToken
	sync := mustWcToken(t, w, corpA, secretSync).AccessToken

	corp1 := mustWcTicket(t, w, a1, false)
	agent1 := mustWcTicket(t, w, a1, true)
	agent2 := mustWcTicket(t, w, a2, true)
	corpSync := mustWcTicket(t, w, sync, false)
	if corp1 == agent1 || agent1 == agent2 || len(corp1) != 86 {
		t.Fatal("tickets not distinct or not ticket-shaped")
	}
	for _, tc := range []struct {
		ticket, kind string
		agent        int64
	}{{corp1, "jsapi", agentA1}, {agent1, "agent_config", agentA1}, {agent2, "agent_config", agentA2}, {corpSync, "jsapi", 0}} {
		if k, id, ok := w.TicketOf(tc.ticket); !ok || k != tc.kind || id != tc.agent || !w.ValidTicket(tc.ticket) {
			t.Errorf("TicketOf = %s %d %v, want %s %d", k, id, ok, tc.kind, tc.agent)
		}
	}
	if _, _, ok := w.TicketOf(a1); ok || w.ValidTicket(a1) || w.Valid(corp1) {
		t.Error("a token taken for a ticket or the other way round")
	}
	// A new ticket leaves the earlier one valid until its own expiry.
	clk.Advance(time.Hour)
	corp1b := mustWcTicket(t, w, mustWcToken(t, w, corpA, secretA1).AccessToken, false)
	if corp1b == corp1 || !w.ValidTicket(corp1) {
		t.Fatal("a new corp ticket killed the earlier one")
	}
	clk.Advance(time.Hour)
	if w.ValidTicket(corp1) || w.ValidTicket(agent1) || !w.ValidTicket(corp1b) {
		t.Fatal("tickets do not expire after 7200 s")
	}
	if s := w.Stats(); s.JSAPITickets != 3 || s.AgentTickets != 2 {
		t.Fatalf("Stats = %+v", s)
	}

	a1 = mustWcToken(t, w, corpA, secretA1).AccessToken
	sync = mustWcToken(t, w, corpA, secretSync).AccessToken
	wantErr(t, "agent ticket with a contacts token", wcTicket(t, w, sync, true), CodeAPIForbidden, "")
	wantErr(t, "ticket/get type=jsapi", wcGet(t, w, PathWeComAgentTicket, url.Values{"access_token": {a1}, "type": {"jsapi"}}), CodeWeComInvalidType, "")
	wantErr(t, "ticket/get without type", wcGet(t, w, PathWeComAgentTicket, url.Values{"access_token": {a1}}), CodeWeComInvalidType, "")
	for _, agent := range []bool{false, true} {
		wantErr(t, "no token", wcTicket(t, w, "", agent), CodeTokenMissing, "access_token missing")
		wantErr(t, "unknown token", wcTicket(t, w, "nope", agent), CodeInvalidAccessToken, "")
		wantErr(t, "ticket as token", wcTicket(t, w, corp1b, agent), CodeInvalidAccessToken, "")
	}
	wantErr(t, "POST", serve(t, w, http.MethodPost, PathWeComJSAPITicket+"?access_token="+a1, ""), CodeRequireGET, "")
	old := a1
	clk.Advance(2 * time.Hour)
	wantErr(t, "expired token", wcTicket(t, w, old, false), CodeTokenExpired, "")
}

func TestWeComTicketTTL(t *testing.T) {
	w, clk := twoCorps(WithWeComTicketTTL(time.Minute), WithWeComTokenTTL(time.Hour))
	a := mustWcToken(t, w, corpA, secretA1)
	if a.ExpiresIn != 3600 {
		t.Fatalf("token TTL: %q", a.raw)
	}
	r := wcTicket(t, w, a.AccessToken, true)
	if r.ExpiresIn != 60 {
		t.Fatalf("ticket TTL: %q", r.raw)
	}
	clk.Advance(time.Minute)
	if w.ValidTicket(r.Ticket) {
		t.Fatal("ticket outlived its TTL")
	}
}

func TestWeComGetTokenLimit(t *testing.T) {
	w, clk := twoCorps(WithGetTokenLimit(3, time.Minute))
	mustWcToken(t, w, corpA, secretA1)
	mustWcToken(t, w, corpA, secretA1)                                                  // a repeat counts
	wantErr(t, "wrong secret", wcToken(t, w, corpA, "nope"), CodeInvalidCredential, "") // so does a refusal
	wantErr(t, "4th call", wcToken(t, w, corpA, secretA2), CodeFreqLimit, "api freq out of limit")
	mustWcToken(t, w, corpB, secretB1) // another corp has its own window
	clk.Advance(30 * time.Second)
	wantErr(t, "in the window", wcToken(t, w, corpA, secretA1), CodeFreqLimit, "")
	clk.Advance(30 * time.Second)
	mustWcToken(t, w, corpA, secretA2) // the first three left the window
	if s := w.Stats(); s.RateLimited != 2 {
		t.Fatalf("RateLimited = %d", s.RateLimited)
	}

	none, _ := twoCorps(WithGetTokenLimit(0, time.Minute))
	wantErr(t, "limit 0", wcToken(t, none, corpA, secretA1), CodeFreqLimit, "")
	unlimited, _ := twoCorps(WithGetTokenLimit(-1, time.Minute))
	for range 1500 {
		mustWcToken(t, unlimited, corpA, secretA1)
	}
	def := NewWeCom(WithWeComClock(NewClock(time.Time{}).Now))
	for range DefaultGetTokenLimit {
		mustWcToken(t, def, DefaultCorpID, DefaultAgentSecret)
	}
	wantErr(t, "default limit", wcToken(t, def, DefaultCorpID, DefaultAgentSecret), CodeFreqLimit, "")
}

func TestWeComTicketLimit(t *testing.T) {
	w, clk := twoCorps(WithTicketLimit(3, 2, time.Hour))
	a1 := mustWcToken(t, w, corpA, secretA1).AccessToken
	a2 := mustWcToken(t, w, corpA, secretA2).AccessToken
	sync := mustWcToken(t, w, corpA, secretSync).AccessToken
	mustWcTicket(t, w, a1, false)
	mustWcTicket(t, w, a1, false)
	wantErr(t, "app limit", wcTicket(t, w, a1, false), CodeFreqLimit, "")
	mustWcTicket(t, w, a1, true) // agent tickets are counted apart
	mustWcTicket(t, w, a2, false)
	wantErr(t, "corp limit", wcTicket(t, w, sync, false), CodeFreqLimit, "")
	clk.Advance(time.Hour)
	a1 = mustWcToken(t, w, corpA, secretA1).AccessToken
	mustWcTicket(t, w, a1, false)
	if s := w.Stats(); s.RateLimited != 2 || s.JSAPITickets != 4 || s.AgentTickets != 1 {
		t.Fatalf("Stats = %+v", s)
	}
	// The default: 100 per app per hour.
	d := NewWeCom(WithWeComClock(NewClock(time.Time{}).Now))
	tok := mustWcToken(t, d, DefaultCorpID, DefaultAgentSecret).AccessToken
	for range DefaultTicketAppLimit {
		mustWcTicket(t, d, tok, true)
	}
	wantErr(t, "default app limit", wcTicket(t, d, tok, true), CodeFreqLimit, "")
}

func TestWeComFaults(t *testing.T) {
	w, _ := twoCorps()
	w.FailNext(1, Busy())
	w.FailNext(1, Errcode(CodeConcurrentLimit, "api concurrent out of limit"))
	w.FailNext(1, LostAnswer())
	w.FailNext(0, Malformed())
	wantErr(t, "busy", wcToken(t, w, corpA, secretA1), CodeBusy, "")
	wantErr(t, "injected 45033", wcToken(t, w, corpA, secretA1), CodeConcurrentLimit, "")
	if a := wcToken(t, w, corpA, secretA1); a.status != http.StatusBadGateway {
		t.Fatalf("lost answer: %d %q", a.status, a.raw)
	}
	// The lost answer issued the token: the next call repeats it.
	tok := w.CurrentToken(corpA, secretA1)
	if tok == "" || !w.Valid(tok) {
		t.Fatal("LostAnswer issued nothing")
	}
	if a := mustWcToken(t, w, corpA, secretA1); a.AccessToken != tok {
		t.Fatal("after a lost answer gettoken issued another token")
	}
	if s := w.Stats(); s.TokenGrants != 1 || s.TokenRepeats != 1 {
		t.Fatalf("Stats = %+v", s)
	}
	w.FailNext(1, Malformed())
	if a := wcTicket(t, w, tok, false); a.decodeErr == nil {
		t.Fatal("malformed ticket answer decoded")
	}
	// Protected calls take no fault.
	w.FailNext(1, Busy())
	if a := agentGet(t, w, tok, strconv.Itoa(agentA1)); a.Errcode != 0 {
		t.Fatalf("agent/get took a fault: %q", a.raw)
	}
	w.ResetStats()
	if s := w.Stats(); s != (WeComStats{}) {
		t.Fatalf("after ResetStats: %+v", s)
	}
	if !w.Valid(tok) {
		t.Fatal("ResetStats touched tokens")
	}
}

func TestWeComConcurrentGettoken(t *testing.T) {
	w, _ := twoCorps()
	var wg sync.WaitGroup
	toks := make([]string, 50)
	for i := range toks {
		wg.Go(func() { toks[i] = wcToken(t, w, corpA, secretA1).AccessToken })
	}
	wg.Wait()
	for _, tk := range toks {
		if tk != toks[0] || tk == "" {
			t.Fatal("concurrent callers got different tokens")
		}
	}
	if s := w.Stats(); s.TokenGrants != 1 || s.TokenRepeats != 49 || s.Requests != 50 {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestWeComMaxConcurrent(t *testing.T) {
	srv := NewWeComServer(WithCorpApp(corpA, agentA1, secretA1), WithWeComMaxConcurrent(2), WithWeComLatency(time.Second))
	t.Cleanup(srv.Close)
	u := srv.URL() + PathWeComToken + "?" + url.Values{"corpid": {corpA}, "corpsecret": {secretA1}}.Encode()
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Go(func() {
			a, err := fetch(context.Background(), srv.Client(), http.MethodGet, u, "")
			if err != nil {
				t.Error(err)
			}
			codes[i] = a.Errcode
		})
	}
	waitFor(t, "five requests in flight", func() bool { return srv.inflight.Load() == 5 })
	wg.Wait()
	limited := 0
	for _, c := range codes {
		switch c {
		case CodeConcurrentLimit:
			limited++
		case 0:
		default:
			t.Errorf("errcode %d", c)
		}
	}
	if limited != 3 || srv.Stats().RateLimited != 3 {
		t.Fatalf("%d answers 45033 (%v), want 3", limited, codes)
	}
}

func TestWeComServer(t *testing.T) {
	srv := NewWeComServer()
	t.Cleanup(srv.Close)
	if u, err := url.Parse(srv.URL()); err != nil || u.Hostname() != "127.0.0.1" || strings.HasSuffix(srv.URL(), "/") {
		t.Fatalf("URL() = %q", srv.URL())
	}
	q := url.Values{"corpid": {DefaultCorpID}, "corpsecret": {DefaultAgentSecret}}
	a, err := fetch(context.Background(), srv.Client(), http.MethodGet, srv.URL()+PathWeComToken+"?"+q.Encode(), "")
	if err != nil || a.AccessToken == "" || a.Errmsg != "ok" {
		t.Fatalf("gettoken over HTTP: %v %q", err, a.raw)
	}
	tk, err := fetch(context.Background(), srv.Client(), http.MethodGet, srv.URL()+PathWeComAgentTicket+"?type=agent_config&access_token="+url.QueryEscape(a.AccessToken), "")
	if err != nil || !srv.ValidTicket(tk.Ticket) {
		t.Fatalf("agent ticket over HTTP: %v %q", err, tk.raw)
	}
	// Close ends a latency wait at once.
	srv.SetLatency(time.Hour)
	done := make(chan answer)
	go func() {
		a, _ := fetch(context.Background(), srv.Client(), http.MethodGet, srv.URL()+PathWeComToken+"?"+q.Encode(), "")
		done <- a
	}()
	waitFor(t, "the request to wait", func() bool { return srv.inflight.Load() == 1 })
	srv.Close()
	srv.Close()
	select {
	case a := <-done:
		if a.status != http.StatusServiceUnavailable {
			t.Errorf("closed mid-wait: %d %q", a.status, a.raw)
		}
	case <-time.After(hangGuard):
		t.Fatal("Close did not end the wait")
	}
}

// The default clock is time.Now, so a test in a synctest bubble moves the
// fake through two hours at once.
func TestWeComSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := NewWeCom()
		tok := mustWcToken(t, w, DefaultCorpID, DefaultAgentSecret).AccessToken
		time.Sleep(7199 * time.Second)
		if !w.Valid(tok) {
			t.Fatal("token dead before its expiry")
		}
		time.Sleep(time.Second)
		if w.Valid(tok) {
			t.Fatal("token alive at its expiry")
		}
		if mustWcToken(t, w, DefaultCorpID, DefaultAgentSecret).AccessToken == tok {
			t.Fatal("expired token handed out again")
		}
	})
}

func TestWeComCallbackURLCheck(t *testing.T) {
	w, clk := twoCorps()
	q, want, err := w.CallbackURLCheck("cbtoken", wecomAESKey, corpA)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 19 || strings.Trim(want, "0123456789") != "" {
		t.Fatalf("echo %q is not 19 digits", want)
	}
	if q.Get("timestamp") != strconv.FormatInt(clk.Now().Unix(), 10) || q.Get("nonce") == "" {
		t.Fatalf("query %v", q)
	}
	// wxcrypto, on the fake's clock, answers it.
	c, err := wxcrypto.New(wxcrypto.Safe, "cbtoken", wecomAESKey, corpA, wxcrypto.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.VerifyWeComURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
	if err != nil || string(got) != want {
		t.Fatalf("VerifyWeComURL = %q, %v; want %q", got, err, want)
	}
	if s, err := c.VerifyURL(q); err != nil || s != want {
		t.Fatalf("VerifyURL = %q, %v", s, err)
	}
	// By hand: the frame names the CorpID.
	key, _ := base64.StdEncoding.DecodeString(wecomAESKey + "=")
	ct, _ := base64.StdEncoding.DecodeString(q.Get("echostr"))
	block, _ := aes.NewCipher(key)
	cipher.NewCBCDecrypter(block, key[:16]).CryptBlocks(ct, ct)
	ct = ct[:len(ct)-int(ct[len(ct)-1])]
	n := binary.BigEndian.Uint32(ct[16:20])
	if string(ct[20:20+n]) != want || string(ct[20+n:]) != corpA {
		t.Fatalf("frame %q", ct)
	}
	// Another CorpID or token does not pass.
	other, _ := wxcrypto.New(wxcrypto.Safe, "cbtoken", wecomAESKey, corpB, wxcrypto.WithClock(clk.Now))
	if _, err := other.VerifyWeComURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr")); err == nil {
		t.Fatal("another CorpID accepted the check")
	}
	// Two checks differ.
	q2, want2, _ := w.CallbackURLCheck("cbtoken", wecomAESKey, corpA)
	if want2 == want || q2.Get("echostr") == q.Get("echostr") {
		t.Fatal("two checks are alike")
	}
	for _, bad := range []struct{ token, key, corp string }{
		{"", wecomAESKey, corpA},
		{"cbtoken", wecomAESKey, ""},
		{"cbtoken", wecomAESKey[:42], corpA},
		{"cbtoken", strings.Repeat("!", 43), corpA},
	} {
		q, e, err := w.CallbackURLCheck(bad.token, bad.key, bad.corp)
		if err == nil || q != nil || e != "" || !strings.HasPrefix(err.Error(), "wechattest: callback URL check: ") {
			t.Errorf("CallbackURLCheck(%q, key, %q) = %v, %q, %v", bad.token, bad.corp, q, e, err)
			continue
		}
		if bad.key != "" && strings.Contains(err.Error(), bad.key) || strings.Contains(err.Error(), "cbtoken") {
			t.Errorf("error %q reveals a secret", err)
		}
	}
}

func TestWeComAppOptions(t *testing.T) {
	w := NewWeCom(
		WithCorpApp(corpA, agentA1, "old"),
		WithCorpApp(corpA, agentA1, secretA1), // same agent: the secret changes
		WithCorpApp(corpA, -1, secretA2),      // skipped
		WithCorpApp("", 1, secretA2),          // skipped
		WithCorpApp(corpA, 0, ""),             // skipped
		nil,
	)
	wantErr(t, "replaced secret", wcToken(t, w, corpA, "old"), CodeInvalidCredential, "")
	wantErr(t, "skipped app", wcToken(t, w, corpA, secretA2), CodeInvalidCredential, "")
	wantErr(t, "no default app", wcToken(t, w, DefaultCorpID, DefaultAgentSecret), CodeInvalidCorpID, "")
	tok := mustWcToken(t, w, corpA, secretA1).AccessToken
	if a := agentGet(t, w, tok, strconv.Itoa(agentA1)); a.Errcode != 0 {
		t.Fatalf("agent/get: %q", a.raw)
	}
	// Same secret twice: the last AgentID wins.
	w2 := NewWeCom(WithCorpApp(corpA, agentA1, secretA1), WithCorpApp(corpA, agentA2, secretA1))
	tok = mustWcToken(t, w2, corpA, secretA1).AccessToken
	if a := agentGet(t, w2, tok, strconv.Itoa(agentA2)); a.Errcode != 0 {
		t.Fatalf("agent/get of the last AgentID: %q", a.raw)
	}
	wantErr(t, "dropped AgentID", agentGet(t, w2, tok, strconv.Itoa(agentA1)), CodeInvalidAgentID, "")
}

func TestWeComUnknownPath(t *testing.T) {
	w := NewWeCom()
	for _, p := range []string{"/", PathToken, PathGetTicket, "/cgi-bin/gettoken/x"} {
		if a := serve(t, w, http.MethodGet, p, ""); a.status != http.StatusNotFound {
			t.Errorf("%s: %d", p, a.status)
		}
	}
	if w.Stats().Requests != 4 {
		t.Errorf("Requests = %d", w.Stats().Requests)
	}
}

func TestWeComCallbackMessage(t *testing.T) {
	w, clk := twoCorps()
	const msg = "<xml><ToUserName><![CDATA[ww000000000000000a]]></ToUserName><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 & ]]]]><![CDATA[>]]></Content><AgentID>1000002</AgentID></xml>"
	q, body, err := w.CallbackMessage("cbtoken", wecomAESKey, corpA, agentA1, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("signature") != "" || q.Get("encrypt_type") != "" || q.Get("timestamp") != strconv.FormatInt(clk.Now().Unix(), 10) {
		t.Fatalf("query %v is not WeCom's", q)
	}
	env, err := wxcrypto.ParseEnvelope(body)
	if err != nil || env.ToUserName != corpA || env.AgentID != strconv.Itoa(agentA1) || env.Encrypt == "" {
		t.Fatalf("envelope %+v, %v", env, err)
	}
	c, _ := wxcrypto.New(wxcrypto.Safe, "cbtoken", wecomAESKey, corpA, wxcrypto.WithClock(clk.Now))
	m, err := c.Open(q, body)
	if err != nil || string(m.Body) != msg || !m.Encrypted || m.ToUserName != corpA {
		t.Fatalf("Open = %+v, %v", m, err)
	}
	other, _ := wxcrypto.New(wxcrypto.Safe, "other", wecomAESKey, corpA, wxcrypto.WithClock(clk.Now))
	if _, err := other.Open(q, body); err == nil {
		t.Fatal("another token accepted the message")
	}
	for _, bad := range []struct{ token, key, corp string }{{"", wecomAESKey, corpA}, {"t", wecomAESKey, ""}, {"t", "short", corpA}} {
		if q, b, err := w.CallbackMessage(bad.token, bad.key, bad.corp, 1, []byte(msg)); err == nil || q != nil || b != nil || !strings.HasPrefix(err.Error(), "wechattest: callback message: ") {
			t.Errorf("CallbackMessage(%q, %q, %q) = %v, %q, %v", bad.token, bad.key, bad.corp, q, b, err)
		}
	}
}
