package wecom_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

const (
	corp     = wechattest.DefaultCorpID
	agent    = int64(wechattest.DefaultAgentID)
	secret   = wechattest.DefaultAgentSecret
	agent2   = int64(1000003)
	secret2  = "wEc0mSecondAppSecretBBBBBBBBBBBBBBBBBBBBBBB"
	contacts = "wEc0mContactsSecretCCCCCCCCCCCCCCCCCCCCCCCC"
	corpB    = "ww00000000000000c2"
	secretB  = "wEc0mOtherCorpSecretDDDDDDDDDDDDDDDDDDDDDDD"
)

func fakeWeCom(opts ...wechattest.WeComOption) *wechattest.WeCom {
	base := []wechattest.WeComOption{
		wechattest.WithCorpApp(corp, agent, secret),
		wechattest.WithCorpApp(corp, agent2, secret2),
		wechattest.WithCorpApp(corp, 0, contacts),
		wechattest.WithCorpApp(corpB, agent, secretB),
	}
	return wechattest.NewWeCom(append(base, opts...)...)
}

func newApp(t testing.TB, h http.Handler, st store.Store, corpID, sec string, opts ...wecom.Option) *wecom.App {
	t.Helper()
	base := []wecom.Option{
		wecom.WithStore(st),
		wecom.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(h)}),
		wecom.WithBaseURLs("http://qyapi.test"),
	}
	a, err := wecom.New(corpID, sec, append(base, opts...)...)
	if err != nil {
		t.Fatalf("wecom.New: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// protected calls agent/get with tok for agentID and returns WeCom's answer
// as an error (an *wecom.APIError) or nil.
func protected(ctx context.Context, h http.Handler, tok string, agentID int64) error {
	req := httptest.NewRequestWithContext(ctx, http.MethodGet,
		wechattest.PathWeComAgentGet+"?access_token="+tok+"&agentid="+strconv.FormatInt(agentID, 10), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		return err
	}
	if body.ErrCode != 0 {
		return &wecom.APIError{Endpoint: wechattest.PathWeComAgentGet, Code: body.ErrCode, Msg: body.ErrMsg, Platform: wecom.Platform}
	}
	return nil
}

// Two apps of one corp, a secret without an AgentID, the same AgentID in
// another corp: each its own credential and keys, one grant per app however
// many nodes ask (the peers' SDKs keyed by CorpID alone and overwrote one
// app's token with another's: WeCom then answers 301002).
func TestKeysNeverCollideAndEachAppGrantsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		st := store.NewMemory()
		type app struct {
			corp, secret string
			agent        int64
		}
		apps := []app{{corp, secret, agent}, {corp, secret2, agent2}, {corp, contacts, 0}, {corpB, secretB, agent}}
		keys := map[string]bool{}
		tokens := map[string]bool{}
		for _, ap := range apps {
			var opts []wecom.Option
			if ap.agent != 0 {
				opts = append(opts, wecom.WithAgentID(ap.agent))
			}
			var nodes []*wecom.App
			for range 3 {
				nodes = append(nodes, newApp(t, fake, st, ap.corp, ap.secret, opts...))
			}
			key := nodes[0].Key(wecom.AccessToken)
			if keys[key] {
				t.Fatalf("key %q used by two apps", key)
			}
			keys[key] = true
			if strings.Contains(key, ap.secret) || strings.Contains(nodes[0].String(), ap.secret) {
				t.Fatalf("the secret appears in the key %q or in %v", key, nodes[0])
			}
			var wg sync.WaitGroup
			got := make([]string, 3*8)
			for i := range got {
				wg.Go(func() {
					tok, err := nodes[i%3].AccessToken(t.Context())
					if err != nil {
						t.Error(err)
					}
					got[i] = tok
				})
			}
			wg.Wait()
			for _, g := range got {
				if g != got[0] || !fake.Valid(g) {
					t.Fatalf("app %s/%d: nodes got %q; want one valid token", ap.corp, ap.agent, got)
				}
			}
			if tokens[got[0]] {
				t.Fatalf("two apps got the same token")
			}
			tokens[got[0]] = true
			if ap.agent != 0 {
				if err := protected(t.Context(), fake, got[0], ap.agent); err != nil {
					t.Fatalf("app %s/%d: its own token refused: %v", ap.corp, ap.agent, err)
				}
			}
		}
		if s := fake.Stats(); s.TokenGrants != len(apps) {
			t.Fatalf("%d grants for %d apps on 3 nodes each; want one per app", s.TokenGrants, len(apps))
		}
	})
}

// 40001 on gettoken is a wrong secret: reported once as ErrConfig naming
// the app, logged with what to check, never retried as a stale token.
func TestWrongSecretIsReportedOnceAndNeverRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		var logs bytes.Buffer
		a := newApp(t, fake, store.NewMemory(), corp, "wEc0mWrongSecretXXXXXXXXXXXXXXXXXXXXXXXXXXX",
			wecom.WithAgentID(agent), wecom.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		for i := range 10 {
			_, err := a.AccessToken(t.Context())
			if !errors.Is(err, wecom.ErrConfig) {
				t.Fatalf("call %d: %v; want ErrConfig", i, err)
			}
			if errors.Is(err, wecom.ErrTokenInvalid) {
				t.Fatalf("a wrong secret matched ErrTokenInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), corp) || !strings.Contains(err.Error(), "Secret") {
				t.Fatalf("error %q does not name the app or say what to check", err)
			}
		}
		if s := fake.Stats(); s.GrantRefusals != 1 {
			t.Fatalf("gettoken refused %d times; want 1 (never retried)", s.GrantRefusals)
		}
		if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
			t.Fatalf("%d error records; want 1:\n%s", n, logs.String())
		}
		if strings.Contains(logs.String(), "WrongSecret") {
			t.Fatal("the secret reached the log")
		}
	})
}

// A token WeCom revokes early (40014): every node's call is refreshed
// compare-then-refresh, one grant in all, and every call then works.
func TestRevokedTokenCostsOneGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		st := store.NewMemory()
		var nodes []*wecom.App
		for range 4 {
			nodes = append(nodes, newApp(t, fake, st, corp, secret, wecom.WithAgentID(agent)))
		}
		for _, n := range nodes {
			if _, err := n.AccessToken(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		fake.RevokeAgent(corp, agent)
		var wg sync.WaitGroup
		for i := range 32 {
			wg.Go(func() {
				err := nodes[i%4].Do(t.Context(), func(tok string) error { return protected(t.Context(), fake, tok, agent) })
				if err != nil {
					t.Errorf("call %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if s := fake.Stats(); s.TokenGrants != 2 {
			t.Fatalf("%d grants; want 2 (the first and one replacement)", s.TokenGrants)
		}
	})
}

// The corp ticket signs wx.config, the agent ticket wx.agentConfig, by the
// JS-SDK's sha1 recipe (computed here independently).
func TestJSConfigAndAgentConfig(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		a := newApp(t, fake, store.NewMemory(), corp, secret, wecom.WithAgentID(agent))
		page := "https://app.example.com/page?x=1#frag"
		jc, err := a.JSConfig(t.Context(), page)
		if err != nil {
			t.Fatal(err)
		}
		corpTicket, _ := a.JSAPITicket(t.Context())
		ac, err := a.AgentConfig(t.Context(), page)
		if err != nil {
			t.Fatal(err)
		}
		agentTicket, _ := a.AgentTicket(t.Context())
		if corpTicket == agentTicket || !fake.ValidTicket(corpTicket) || !fake.ValidTicket(agentTicket) {
			t.Fatal("want two distinct valid tickets")
		}
		if kind, id, ok := fake.TicketOf(agentTicket); !ok || id != agent || kind == "" {
			t.Fatalf("agent ticket: %q %d %v", kind, id, ok)
		}
		if jc.AppID != corp || jc.Signature != sign(corpTicket, jc.NonceStr, jc.Timestamp, page) {
			t.Fatalf("wx.config %+v does not verify", jc)
		}
		if ac.CorpID != corp || ac.AgentID != strconv.FormatInt(agent, 10) || ac.Signature != sign(agentTicket, ac.NonceStr, ac.Timestamp, page) {
			t.Fatalf("wx.agentConfig %+v does not verify", ac)
		}
		if s := fake.Stats(); s.JSAPITickets != 1 || s.AgentTickets != 1 || s.TokenGrants != 1 {
			t.Fatalf("stats %+v; want one token and one ticket of each kind", s)
		}
	})
}

func sign(ticket, nonce string, ts int64, page string) string {
	page, _, _ = strings.Cut(page, "#")
	sum := sha1.Sum([]byte(fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", ticket, nonce, ts, page)))
	return hex.EncodeToString(sum[:])
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		corp, secret string
		opts         []wecom.Option
		want         string
	}{
		{"", secret, nil, "CorpID"},
		{"ww 1", secret, nil, "CorpID"},
		{strings.Repeat("w", 65), secret, nil, "CorpID"},
		{corp, "", nil, "secret"},
		{corp, secret, []wecom.Option{wecom.WithAgentID(0)}, "AgentID"},
		{corp, secret, []wecom.Option{wecom.WithBaseURLs("https://u:hunter2@x?q=1")}, "URL 1"},
		{corp, secret, []wecom.Option{wecom.WithCallback("tok", "short")}, "EncodingAESKey"},
	} {
		_, err := wecom.New(tc.corp, tc.secret, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, …): %v; want an error naming %s", tc.corp, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error quotes a password: %v", err)
		}
	}
	a, err := wecom.New(corp, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.AgentTicket(context.Background()); !errors.Is(err, wecom.ErrNeedParam) {
		t.Fatalf("agent ticket without an AgentID: %v; want ErrNeedParam", err)
	}
}

// The hot path of a WeCom token is the engine's: no lock, no allocation.
func BenchmarkAccessTokenHot(b *testing.B) {
	fake := fakeWeCom()
	a := newApp(b, fake, store.NewMemory(), corp, secret, wecom.WithAgentID(agent))
	ctx := context.Background()
	if _, err := a.AccessToken(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.AccessToken(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// WeCom's callback URL check: msg_signature covers the encrypted echostr,
// which is decrypted with the CorpID as receiver and echoed.
func TestCallbackURLCheck(t *testing.T) {
	const token, aesKey = "cbToken", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	fake := fakeWeCom()
	a, err := wecom.New(corp, secret, wecom.WithAgentID(agent), wecom.WithCallback(token, aesKey))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	q, want, err := fake.CallbackURLCheck(token, aesKey, corp)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Crypto()
	if err != nil {
		t.Fatal(err)
	}
	echo, err := c.VerifyWeComURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
	if err != nil || string(echo) != want {
		t.Fatalf("VerifyWeComURL: %q, %v; want %q", echo, err, want)
	}
	// Another corp's check does not verify with this app's crypto.
	q2, _, _ := fake.CallbackURLCheck(token, aesKey, corpB)
	if _, err := c.VerifyWeComURL(q2.Get("msg_signature"), q2.Get("timestamp"), q2.Get("nonce"), q2.Get("echostr")); err == nil {
		t.Fatal("another corp's echostr verified")
	}
	plain, err := wecom.New(corp, secret)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Crypto(); !errors.Is(err, wecom.ErrNeedParam) {
		t.Fatalf("Crypto without WithCallback: %v; want ErrNeedParam", err)
	}
}

// gettoken returns the same token while it is valid, so the engine cannot
// refresh early: through two whole cycles of continuous calls every call
// gets a token WeCom accepts, and a new token is issued once per cycle.
func TestSameTokenOnRepeatThroughCycles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		a := newApp(t, fake, store.NewMemory(), corp, secret, wecom.WithAgentID(agent))
		calls, bad := 0, 0
		for range int(2 * wechattest.DefaultWeComTokenTTL / time.Second) {
			tok, err := a.AccessToken(t.Context())
			calls++
			if err != nil || !fake.Valid(tok) {
				bad++
				if bad < 5 {
					t.Errorf("call %d at %v: %v (valid %v)", calls, time.Now().Format(time.TimeOnly), err, fake.Valid(tok))
				}
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
		s := fake.Stats()
		t.Logf("%d calls over 2 cycles: %d new tokens, %d repeat gettoken answers, %d refused", calls, s.TokenGrants, s.TokenRepeats, bad)
		if s.TokenGrants != 2 {
			t.Fatalf("%d new tokens over 2 cycles; want 2", s.TokenGrants)
		}
	})
}

// A stray 40014 on a token WeCom still holds current: gettoken answers the
// same token, which is WeCom's word that it is the current one; the call is
// retried with it and works, instead of failing until the token expires.
func TestStrayRejectionOfTheCurrentToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeWeCom()
		a := newApp(t, fake, store.NewMemory(), corp, secret, wecom.WithAgentID(agent))
		tok, err := a.AccessToken(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		err = a.Do(t.Context(), func(got string) error {
			calls++
			if calls == 1 {
				return &wecom.APIError{Endpoint: wechattest.PathWeComAgentGet, Code: 40014, Msg: "invalid access_token", Platform: wecom.Platform}
			}
			return protected(t.Context(), fake, got, agent)
		})
		if err != nil || calls != 2 {
			t.Fatalf("Do: %v after %d calls; want the retry with the same, current token to work", err, calls)
		}
		if cur, _ := a.AccessToken(t.Context()); cur != tok {
			t.Fatalf("token changed; want WeCom's current one kept")
		}
		if s := fake.Stats(); s.TokenGrants != 1 || s.TokenRepeats != 1 {
			t.Fatalf("stats %+v; want 1 grant and 1 repeat answer", s)
		}
	})
}
