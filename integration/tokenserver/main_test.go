// Package tokenserver proves the central token server (issue #14) with
// real processes: three `wechatconf serve` processes, built from the root
// module, on one Redis server in a container, in front of one fake WeChat
// (wechattest, in the test process, over loopback); and four business
// nodes, each this test binary re-executed as a client (see TestMain) with
// a tokenclient.Client over all three servers, in its own order, feeding a
// refresh-only conf.Conf that never holds the AppSecret.
//
// The clients call AccessToken in a loop for the whole test, and ask the
// servers directly besides, while one server is killed with SIGKILL and
// restarted, WeChat revokes the tokens and every client reports its own
// (Invalidate), and another server is stopped with SIGTERM and restarted;
// the test then waits for the next natural refresh. WeChat's tokens live
// conf.DefaultMargin + tokenLife (serve refreshes DefaultMargin before
// expiry, and has no flag to change it), so that a cycle passes in well
// under two minutes.
//
// The servers hold two apps of one configuration file (`serve --config`,
// issue #14's multi-app serve), an Official Account and a Mini Program;
// each client is a business node of both (tokenclient's Config.App:
// /v1/apps/{id}/...), and everything is asserted per app. A key the file
// allows for one app only is answered 403 for the other.
//
// Asserted, for each app: WeChat sees one grant for the cold start, one
// for the revoked token (however many clients report it, through whichever
// server), and no other grant before the previous token entered its
// refresh window — one grant per cycle, across the three servers; every grant reached the
// clients, and the clients got no token WeChat did not grant; no client
// call failed or answered an expired token; serve exits 0 on SIGTERM, and
// no process had a data race or printed a secret.
package tokenserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/integration/servers"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wechattest"
)

// TestMain runs the binary as a client when the parent asked for one
// (clientEnv set), and as the test suite otherwise.
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(clientEnv); ok {
		os.Exit(clientMain(spec))
	}
	os.Exit(m.Run())
}

const (
	numServers = 3
	numClients = 4
	// tokenLife is how long a token lives beyond serve's margin: the
	// shortest cycle. A token's refresh point is its expiry less the
	// margin, moved later by up to a third of the margin (the spread).
	tokenLife = 15 * time.Second
	tokenTTL  = conf.DefaultMargin + tokenLife
	// faultPause: how long the load runs between two faults.
	faultPause = 3 * time.Second
	// Bounds on waits; they turn a hang into a failure, and measure
	// nothing.
	callTimeout = 20 * time.Second
	replySlack  = 30 * time.Second
	// naturalWait bounds the wait for the first refresh after the
	// revocation's grant: the latest refresh point (spread included), or
	// the granting server's hold of half the token's life, whichever is
	// later, with room for a loaded machine.
	naturalWait = tokenTTL/2 + time.Minute
	serverKey   = "tokenserver-integration-key-0123456789abcdef"
)

// app is one app the servers hold.
type app struct {
	id     string // its id in serve's configuration file
	kind   string // official_account or mini_program (configuration file)
	appid  string
	secret string
}

// A second app, for serve's configuration file.
const (
	miniAppID  = "wx00000000000000b2"
	miniSecret = "0b2e7a1f0d94b3c8a6e1d2b7f0c9a4b2"
	// shopOnlyKey is a key the configuration allows for "shop" only.
	shopOnlyKey = "tokenserver-shop-only-key-0123456789abcdef"
)

// apps are the apps of the servers' configuration file.
var apps = []app{
	{id: "shop", kind: "official_account", appid: wechattest.DefaultAppID, secret: wechattest.DefaultAppSecret},
	{id: "mini", kind: "mini_program", appid: miniAppID, secret: miniSecret},
}

func TestTokenServer(t *testing.T) {
	redis := servers.Redis(t)
	bin := buildServe(t)
	opts := []wechattest.Option{wechattest.WithTokenTTL(tokenTTL)}
	for _, a := range apps {
		opts = append(opts, wechattest.WithApp(a.appid, a.secret))
	}
	wx := newWeChat(t, opts...)
	args := serveArgs(t, "redis://"+redis.Addr+"/0", wx.URL())

	srvs := make([]*serveProc, numServers)
	urls := make([]string, numServers)
	for i := range srvs {
		srvs[i] = newServe(t, "serve"+string(rune('0'+i)), bin, args...)
		urls[i] = srvs[i].URL()
	}
	t.Logf("servers at %v on %s, WeChat at %s, token lifetime %v, apps %s and %s", urls, redis.Addr, wx.URL(), tokenTTL, apps[0].id, apps[1].id)

	clients := make([]*client, numClients)
	for i := range clients {
		order := append(slices.Clone(urls[i%numServers:]), urls[:i%numServers]...)
		if i >= numServers {
			slices.Reverse(order)
		}
		spec := clientSpec{Name: "client" + string(rune('0'+i)), URLs: order, Callers: 4, Every: 20 * time.Millisecond, Direct: 50 * time.Millisecond}
		for _, a := range apps {
			spec.Apps = append(spec.Apps, clientApp{AppID: a.appid, App: a.id, Key: serverKey})
		}
		clients[i] = startClient(t, spec)
	}

	// Cold start: every client of every app holds a token; one grant each.
	if !pollStats(t, clients, callTimeout, func(s appStats) bool { return s.Last != "" }) {
		t.Fatal("not every client got a token")
	}
	for _, a := range apps {
		if n := len(wx.grantsOf(a.appid)); n != 1 {
			t.Errorf("app %s: %d grants at the cold start; want 1", a.appid, n)
		}
	}
	checkForbidden(t, urls)

	// A server killed under load, and restarted on the same port.
	time.Sleep(faultPause)
	t.Logf("SIGKILL %s", srvs[0].name)
	srvs[0].kill(t)
	time.Sleep(faultPause)
	srvs[0].start(t)

	// WeChat revokes the tokens; every client reports its own, at once.
	time.Sleep(faultPause)
	for _, a := range apps {
		wx.Revoke(a.appid)
	}
	rejectFrom := time.Now()
	rejects := askAll(t, clients, opReject)
	rejectTo := time.Now()

	// Another server stopped gracefully under load, and restarted.
	time.Sleep(faultPause)
	t.Logf("SIGTERM %s", srvs[1].name)
	if code := srvs[1].term(t); code != 0 {
		t.Errorf("%s exited %d on SIGTERM; want 0", srvs[1].name, code)
	}
	time.Sleep(faultPause)
	srvs[1].start(t)

	// The next natural refresh, and a client that got its token.
	forced := map[string]grant{}
	for _, a := range apps {
		var in []grant
		for _, g := range wx.grantsOf(a.appid) {
			if !g.At.Before(rejectFrom) && !g.At.After(rejectTo) {
				in = append(in, g)
			}
		}
		if len(in) != 1 {
			t.Fatalf("app %s: %d grants while %d clients reported the revoked token; want 1", a.appid, len(in), numClients)
		}
		forced[a.appid] = in[0]
	}
	for _, a := range apps {
		ok := eventually(naturalWait, func() bool {
			gs := wx.grantsOf(a.appid)
			return gs[len(gs)-1].At.After(forced[a.appid].At)
		})
		if !ok {
			t.Fatalf("app %s: no refresh within %v of the revocation's grant; the suite proves no cycle", a.appid, naturalWait)
		}
	}
	latest := func(appid string) string { gs := wx.grantsOf(appid); return gs[len(gs)-1].Token }
	if !pollStats(t, clients, callTimeout, func(s appStats) bool { return true }, func(appid string, all []appStats) bool {
		tok := latest(appid)
		return slices.ContainsFunc(all, func(s appStats) bool { return slices.Contains(s.Tokens, tok) || slices.Contains(s.DirectTokens, tok) })
	}) {
		t.Errorf("no client got the latest grant")
	}

	final := make([]clientReply, len(clients))
	for i, c := range clients {
		final[i] = c.quit(t)
	}
	for _, s := range srvs {
		if code := s.term(t); code != 0 {
			t.Errorf("%s exited %d on SIGTERM; want 0", s.name, code)
		}
	}

	for _, a := range apps {
		checkApp(t, a, wx.grantsOf(a.appid), forced[a.appid], final, rejects)
	}
	for _, s := range srvs {
		out := s.stderr.String()
		if strings.Contains(out, "DATA RACE") {
			t.Errorf("%s had a data race:\n%s", s.name, s.stderr.Tail())
		}
		secrets := []string{serverKey, shopOnlyKey}
		for _, a := range apps {
			secrets = append(secrets, a.secret)
			for _, g := range wx.grantsOf(a.appid) {
				secrets = append(secrets, g.Token)
			}
		}
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Errorf("%s's stderr shows a secret, the key or a token", s.name)
				break
			}
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", s.name, s.stderr.Tail())
		}
	}
}

// checkApp judges one app's run: its grants at WeChat and what the
// clients saw.
func checkApp(t *testing.T, a app, grants []grant, forced grant, final, rejects []clientReply) {
	t.Helper()
	granted := map[string]bool{}
	var natural int
	var cycles []string
	for i, g := range grants {
		granted[g.Token] = true
		if i == 0 {
			continue
		}
		gap := g.At.Sub(grants[i-1].At)
		cycles = append(cycles, gap.Round(100*time.Millisecond).String())
		if g.Token == forced.Token {
			continue
		}
		natural++
		// The previous token's refresh window opens tokenLife after its
		// grant (its expiry less the margin): a grant before is a second
		// one in that cycle. The second of slack is WeChat's whole-second
		// expires_in.
		if gap < tokenLife-time.Second {
			t.Errorf("app %s: grant %d came %v after the previous one, before its refresh window (%v): two grants in one cycle", a.appid, i, gap, tokenLife)
		}
	}
	if natural < 1 {
		t.Errorf("app %s: no natural refresh after the revocation", a.appid)
	}

	served := map[string]bool{}
	var calls, direct int
	for _, r := range final {
		s := r.Apps[a.appid]
		calls += s.Calls
		direct += s.Direct
		if s.Errors > 0 || s.DirectErrors > 0 || s.Expired > 0 {
			t.Errorf("app %s: client %s: %d of %d calls and %d of %d direct Gets failed, %d answered an expired token; first: %q",
				a.appid, r.Node, s.Errors, s.Calls, s.DirectErrors, s.Direct, s.Expired, s.FirstErrors)
		}
		if s.Calls == 0 || s.Direct == 0 {
			t.Errorf("app %s: client %s made %d calls and %d direct Gets", a.appid, r.Node, s.Calls, s.Direct)
		}
		for _, tok := range append(s.Tokens, s.DirectTokens...) {
			served[tok] = true
			if !granted[tok] {
				t.Errorf("app %s: client %s got a token WeChat never granted", a.appid, r.Node)
			}
		}
	}
	for i, g := range grants {
		if !served[g.Token] {
			t.Errorf("app %s: grant %d of %d never reached a client: a wasted grant", a.appid, i, len(grants))
		}
	}
	for _, r := range rejects {
		s := r.Apps[a.appid]
		if s.Replacement != forced.Token || s.Rejected == forced.Token {
			t.Errorf("app %s: client %s reported a token and got another than the revocation's grant", a.appid, r.Node)
		}
	}
	t.Logf("app %s: %d grants (cold start, the revocation's, %d natural); intervals %v; %d AccessToken calls and %d direct Gets by %d clients, none failed",
		a.appid, len(grants), natural, cycles, calls, direct, len(final))
}

// serveArgs are the flags of every serve process: the configuration file
// of every app, with the files it names, and the store.
func serveArgs(t *testing.T, storeURL, apiBase string) []string {
	t.Helper()
	keyFile := writeSecret(t, "key", serverKey)
	type fileApp struct {
		ID         string `json:"id"`
		Kind       string `json:"kind"`
		AppID      string `json:"appid"`
		SecretFile string `json:"secret_file"`
	}
	type fileKey struct {
		Name   string   `json:"name"`
		SHA256 string   `json:"sha256,omitempty"`
		File   string   `json:"file,omitempty"`
		Apps   []string `json:"apps"`
	}
	cfg := struct {
		APIBase []string  `json:"api_base"`
		Apps    []fileApp `json:"apps"`
		Keys    []fileKey `json:"keys"`
	}{APIBase: []string{apiBase}}
	var ids []string
	for _, a := range apps {
		cfg.Apps = append(cfg.Apps, fileApp{ID: a.id, Kind: a.kind, AppID: a.appid, SecretFile: writeSecret(t, a.id+".secret", a.secret)})
		ids = append(ids, a.id)
	}
	sum := sha256.Sum256([]byte(shopOnlyKey))
	cfg.Keys = []fileKey{
		{Name: "clients", File: keyFile, Apps: ids},
		{Name: "shop-only", SHA256: hex.EncodeToString(sum[:]), Apps: []string{"shop"}},
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--config", writeSecret(t, "serve.json", string(js)), "--store", storeURL}
}

// checkForbidden: the real serve answers a key not allowed for an app 403,
// which tokenclient makes a final *StatusError that says so, without
// asking the other servers; the same key works for its own app.
func checkForbidden(t *testing.T, urls []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	mini, err := tokenclient.New(tokenclient.Config{URLs: urls, Key: shopOnlyKey, App: "mini"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mini.Get(ctx, "access_token")
	var se *tokenclient.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusForbidden || se.Temporary() || se.Server != urls[0] ||
		!strings.Contains(err.Error(), `not allowed for app "mini"`) || strings.Contains(err.Error(), "no server answered") {
		t.Errorf("a key for shop only, asking for mini: %v; want the first server's final 403", err)
	}
	shop, err := tokenclient.New(tokenclient.Config{URLs: urls, Key: shopOnlyKey, App: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shop.Get(ctx, "access_token"); err != nil {
		t.Errorf("a key for shop, asking for shop: %v", err)
	}
}

// askAll sends op to every client at once and returns their replies.
func askAll(t *testing.T, clients []*client, op string) []clientReply {
	t.Helper()
	replies := make([]clientReply, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { replies[i], errs[i] = c.tryAsk(op) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return replies
}

// pollStats asks every client for its counts until each app's stats pass
// each (a function of one client's stats) and every whole (a function of
// all clients' stats of an app), or wait passes.
func pollStats(t *testing.T, clients []*client, wait time.Duration, each func(appStats) bool, whole ...func(appid string, all []appStats) bool) bool {
	t.Helper()
	return eventually(wait, func() bool {
		byApp := map[string][]appStats{}
		ok := true
		for _, c := range clients {
			for appid, s := range c.ask(t, opStats).Apps {
				byApp[appid] = append(byApp[appid], s)
				ok = ok && each(s)
			}
		}
		for appid, all := range byApp {
			for _, w := range whole {
				ok = ok && w(appid, all)
			}
		}
		return ok
	})
}

// eventually polls cond until it holds or wait passes: a deadline for
// correctness, not a speed requirement.
func eventually(wait time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(wait)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}
