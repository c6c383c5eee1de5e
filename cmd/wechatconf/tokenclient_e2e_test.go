package main

// The token server's Go client against the real `wechatconf serve`: the
// protocol tokenclient speaks is the one serve answers.

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

// Eight business nodes fed by serve (its first URL a closed port): one
// grant of each credential; WeChat revokes the token, the nodes see 40001
// through Do and report it: one more grant; revoked again at once: 429,
// the forced-refresh limit; serve restarts on the same store: the nodes
// keep their tokens and the new process serves the same.
func TestE2ETokenClient(t *testing.T) {
	fake := newFake(t)
	key := "e2e-server-key-0123456789abcdef"
	args := []string{"--appid", appID, "--secret-file", writeFile(t, "secret", secret),
		"--key-file", writeFile(t, "key", key), "--api-base", fake.URL(),
		"--store", "bolt:" + filepath.Join(t.TempDir(), "serve.db")}
	p := startServe(t, args...)

	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	tc, err := tokenclient.New(tokenclient.Config{URLs: []string{"http://" + closedPort(t), "http://" + p.addr}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*conf.Conf, 8)
	for i := range nodes {
		c, err := conf.New(append(tc.ConfOptions(), conf.WithAppID(appID, ""), conf.WithBaseURLs(fake.URL()))...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		nodes[i] = c
	}
	var wg sync.WaitGroup
	toks, tickets := make([]string, 32), make([]string, 32)
	errs := make([]error, 32)
	for i := range toks {
		wg.Go(func() {
			c := nodes[i%len(nodes)]
			if toks[i], errs[i] = c.AccessToken(ctx); errs[i] == nil {
				tickets[i], errs[i] = c.JSAPITicket(ctx)
			}
		})
	}
	wg.Wait()
	for i := range toks {
		if errs[i] != nil || toks[i] != toks[0] || tickets[i] != tickets[0] {
			t.Fatalf("caller %d: %v, or not the same token and ticket as caller 0", i, errs[i])
		}
	}
	if s := fake.Stats(); s.TokenGrants != 1 || s.JSAPITickets != 1 || !fake.Valid(toks[0]) || !fake.ValidTicket(tickets[0]) {
		t.Fatalf("stats %+v: want one valid token and one valid ticket", s)
	}

	fake.Revoke(appID)
	for i := range 16 {
		wg.Go(func() {
			errs[i] = nodes[i%len(nodes)].Do(ctx, func(tok string) error { return callbackIP(ctx, fake.URL(), tok) })
		})
	}
	wg.Wait()
	for i, err := range errs[:16] {
		if err != nil {
			t.Fatalf("call %d after the revocation: %v", i, err)
		}
	}
	if s := fake.Stats(); s.TokenGrants != 2 {
		t.Errorf("%d grants after the revocation; want 2 in all", s.TokenGrants)
	}
	cur := fake.CurrentToken(appID)

	// Revoked again at once: serve's forced-refresh limit answers 429, a
	// RefreshLimitedError on the node, with serve's Retry-After.
	fake.Revoke(appID)
	start := time.Now()
	err = nodes[0].Do(ctx, func(tok string) error { return callbackIP(ctx, fake.URL(), tok) })
	var le *conf.RefreshLimitedError
	if !errors.Is(err, conf.ErrRefreshLimited) || !errors.As(err, &le) {
		t.Fatalf("a second revocation at once: %v; want ErrRefreshLimited", err)
	}
	if d := le.Next.Sub(start); d <= 0 || d > conf.DefaultForcedRefreshInterval+2*time.Second {
		t.Errorf("Next is %v away; want within serve's forced-refresh interval", d)
	}
	for _, s := range []string{key, cur} {
		if strings.Contains(err.Error(), s) {
			t.Error("the error shows the key or the token")
		}
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	for _, c := range nodes { // serve is down: the local copies serve
		if tok, err := c.AccessToken(ctx); err != nil || tok != cur {
			t.Fatalf("with serve down: %v, or not the current token", err)
		}
	}
	p2 := startServe(t, append(args, "--listen", p.addr)...)
	item, err := tc.Get(ctx, "access_token")
	if err != nil || item.Value != cur {
		t.Fatalf("from the restarted serve: %v, or not the current token", err)
	}
	if s := fake.Stats(); s.TokenGrants != 2 {
		t.Errorf("%d grants after the restart; want still 2", s.TokenGrants)
	}
	if code := p2.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	for _, w := range []*watcher{p.stderr, p2.stderr} {
		for _, s := range []string{secret, key, toks[0], cur, tickets[0]} {
			if strings.Contains(w.String(), s) {
				t.Errorf("serve's stderr shows a secret or credential")
			}
		}
	}
}

// callbackIP makes a protected call with tok and returns WeChat's errcode
// answer as an *conf.APIError.
func callbackIP(ctx context.Context, base, tok string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/cgi-bin/getcallbackip?access_token="+tok, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("getcallbackip: %w", err)
	}
	if body.ErrCode != 0 {
		return &conf.APIError{Endpoint: wechattest.PathCallbackIP, Code: body.ErrCode, Msg: body.ErrMsg}
	}
	return nil
}

// A WeCom business node with no secret, fed by a serve --config holding the
// WeCom app beside an Official Account: the node's token, corp ticket and
// agent ticket are the server's, wx.agentConfig signs with the server's
// agent ticket, and a revocation the node reports is replaced at the server
// (compare-then-refresh through /v1/apps/hr/invalidate).
func TestE2ETokenClientWeCom(t *testing.T) {
	oa := newFake(t, wechattest.WithApp(appShop, cfgSecretA))
	wc := newWeComFake(t)
	dir := configDir(t, map[string]string{"shop.secret": cfgSecretA, "hr.secret": wechattest.DefaultAgentSecret})
	cfg := writeFile(t, "wechatconf.json", fmt.Sprintf(`{
  "store": %q, "api_base": [%q],
  "apps": [
    {"id": "shop", "kind": "official_account", "appid": %q, "secret_file": %q},
    {"id": "hr", "kind": "wecom", "corpid": %q, "agentid": %d, "secret_file": %q, "api_base": [%q]}
  ],
  "keys": [{"name": "portal", "sha256": %q, "apps": ["hr"]}]
}`, "bolt:"+filepath.Join(t.TempDir(), "serve.db"), oa.URL(), appShop, filepath.Join(dir, "shop.secret"),
		wechattest.DefaultCorpID, wechattest.DefaultAgentID, filepath.Join(dir, "hr.secret"), wc.URL(), hexSum(cfgKeyA)))
	p := startServe(t, "--config", cfg)

	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	tc, err := tokenclient.New(tokenclient.Config{URLs: []string{"http://" + p.addr}, Key: cfgKeyA, App: "hr"})
	if err != nil {
		t.Fatal(err)
	}
	node, err := wecom.New(wechattest.DefaultCorpID, "", append(tc.WeComOptions(),
		wecom.WithAgentID(wechattest.DefaultAgentID), wecom.WithBaseURLs(wc.URL()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	tok, err := node.AccessToken(ctx)
	if err != nil || !wc.Valid(tok) {
		t.Fatalf("the node's token: %v (valid %v)", err, wc.Valid(tok))
	}
	corp, err := node.JSAPITicket(ctx)
	if err != nil || !wc.ValidTicket(corp) {
		t.Fatalf("the corp ticket: %v", err)
	}
	agentCfg, err := node.AgentConfig(ctx, "https://hr.example.com/page")
	if err != nil {
		t.Fatal(err)
	}
	agent, _ := node.AgentTicket(ctx)
	if kind, id, ok := wc.TicketOf(agent); !ok || kind == "" || id != wechattest.DefaultAgentID {
		t.Fatalf("the agent ticket is not the app's: %q %d %v", kind, id, ok)
	}
	// Signed with the server's agent ticket (WeCom's SHA-1 of the sorted
	// query, computed here independently).
	want := sha1.Sum([]byte(fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s",
		agent, agentCfg.NonceStr, agentCfg.Timestamp, "https://hr.example.com/page")))
	if agentCfg.Signature != hex.EncodeToString(want[:]) || agentCfg.CorpID != wechattest.DefaultCorpID {
		t.Errorf("agentConfig %+v is not signed with the server's agent ticket", agentCfg)
	}
	// The server's own answer is what the node holds.
	req, _ := http.NewRequest("GET", "http://"+p.addr+"/v1/apps/hr/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+cfgKeyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var served credentialResponse
	json.NewDecoder(resp.Body).Decode(&served)
	resp.Body.Close()
	if served.AccessToken != tok {
		t.Error("the node's token is not the server's")
	}
	before := wc.Stats()
	wc.Revoke(wechattest.DefaultCorpID, wechattest.DefaultAgentSecret)
	fresh, err := node.Invalidate(ctx, wecom.AccessToken, tok)
	if err != nil || fresh == tok || !wc.Valid(fresh) {
		t.Fatalf("after the node's report: %v, a new valid token %v", err, fresh != tok && wc.Valid(fresh))
	}
	if after := wc.Stats(); after.TokenGrants != before.TokenGrants+1 {
		t.Errorf("the report cost %d grants at WeCom, want 1", after.TokenGrants-before.TokenGrants)
	}
	// The key is the portal's: the Official Account is not its.
	tcShop, _ := tokenclient.New(tokenclient.Config{URLs: []string{"http://" + p.addr}, Key: cfgKeyA, App: "shop"})
	if _, err := tcShop.Get(ctx, "access_token"); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("the portal's key on shop: %v, want a 403", err)
	}
	if code := p.stop(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}
