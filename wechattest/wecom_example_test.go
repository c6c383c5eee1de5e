package wechattest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wxcrypto"
)

// weComGet is what the code under test would do: a GET on WeCom's API,
// decoding errcode, access_token and ticket.
func weComGet(base, path string, q url.Values) (errcode int, token, ticket string) {
	resp, err := http.Get(base + path + "?" + q.Encode())
	if err != nil {
		return -2, "", ""
	}
	defer resp.Body.Close()
	var body struct {
		Errcode     int    `json:"errcode"`
		AccessToken string `json:"access_token"`
		Ticket      string `json:"ticket"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -3, "", ""
	}
	return body.Errcode, body.AccessToken, body.Ticket
}

// A WeCom corp with one app and a contacts-sync secret: each has its own
// token, gettoken repeats the token while it is valid, the agent ticket
// comes with the app's token, and a token used for another app gets
// 301002.
func ExampleNewWeComServer() {
	const corp = "ww0123456789abcdef"
	const appSecret = "appSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	const syncSecret = "syncSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	srv := wechattest.NewWeComServer(
		wechattest.WithCorpApp(corp, 1000002, appSecret),
		wechattest.WithCorpApp(corp, 0, syncSecret), // no AgentID
	)
	defer srv.Close()

	_, appToken, _ := weComGet(srv.URL(), wechattest.PathWeComToken, url.Values{"corpid": {corp}, "corpsecret": {appSecret}})
	_, again, _ := weComGet(srv.URL(), wechattest.PathWeComToken, url.Values{"corpid": {corp}, "corpsecret": {appSecret}})
	_, syncToken, _ := weComGet(srv.URL(), wechattest.PathWeComToken, url.Values{"corpid": {corp}, "corpsecret": {syncSecret}})
	fmt.Println("same token again:", again == appToken, "- own token per secret:", syncToken != appToken)

	_, _, ticket := weComGet(srv.URL(), wechattest.PathWeComAgentTicket, url.Values{"access_token": {appToken}, "type": {"agent_config"}})
	kind, agent, _ := srv.TicketOf(ticket)
	fmt.Println("ticket:", kind, agent)

	code, _, _ := weComGet(srv.URL(), wechattest.PathWeComAgentGet, url.Values{"access_token": {syncToken}, "agentid": {"1000002"}})
	fmt.Println("contacts token on the app:", code)

	s := srv.Stats()
	fmt.Println("grants:", s.TokenGrants, "repeats:", s.TokenRepeats, "agent tickets:", s.AgentTickets, "rejections:", s.Rejections)
	// Output:
	// same token again: true - own token per secret: true
	// ticket: agent_config 1000002
	// contacts token on the app: 301002
	// grants: 2 repeats: 1 agent tickets: 1 rejections: 1
}

// Revoke plays WeCom invalidating a token early: its next use gets 40014,
// and gettoken then issues a new one.
func ExampleWeCom_Revoke() {
	clock := wechattest.NewClock(time.Time{})
	srv := wechattest.NewWeComServer(wechattest.WithWeComClock(clock.Now))
	defer srv.Close()
	creds := url.Values{"corpid": {wechattest.DefaultCorpID}, "corpsecret": {wechattest.DefaultAgentSecret}}

	_, token, _ := weComGet(srv.URL(), wechattest.PathWeComToken, creds)
	srv.Revoke(wechattest.DefaultCorpID, wechattest.DefaultAgentSecret)
	code, _, _ := weComGet(srv.URL(), wechattest.PathWeComJSAPITicket, url.Values{"access_token": {token}})
	fmt.Println("revoked token:", code)
	_, fresh, _ := weComGet(srv.URL(), wechattest.PathWeComToken, creds)
	fmt.Println("new token:", fresh != token, srv.Valid(fresh))

	clock.Advance(2 * time.Hour)
	code, _, _ = weComGet(srv.URL(), wechattest.PathWeComJSAPITicket, url.Values{"access_token": {fresh}})
	fmt.Println("two hours later:", code)
	// Output:
	// revoked token: 40014
	// new token: true true
	// two hours later: 42001
}

// CallbackURLCheck builds the GET WeCom sends when a callback URL is saved;
// the server under test must answer with the decrypted echostr.
func ExampleWeCom_CallbackURLCheck() {
	const token, key, corp = "cbtoken", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "ww0123456789abcdef"
	clock := wechattest.NewClock(time.Time{})
	fake := wechattest.NewWeCom(wechattest.WithWeComClock(clock.Now))

	// The server under test, on the same clock.
	c, err := wxcrypto.New(wxcrypto.Safe, token, key, corp, wxcrypto.WithClock(clock.Now))
	if err != nil {
		fmt.Println(err)
		return
	}
	server := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		echo, err := c.VerifyWeComURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
		if err != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_, _ = w.Write(echo)
	})

	query, want, err := fake.CallbackURLCheck(token, key, corp)
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := httptest.NewRecorder()
	server.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/wecom/callback?"+query.Encode(), nil))
	body, _ := io.ReadAll(rec.Body)
	fmt.Println(rec.Code, string(body) == want)
	// Output: 200 true
}
