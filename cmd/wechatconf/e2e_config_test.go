package main

// End-to-end tests of serve --config with the built binary: SIGHUP reloads
// under load, two instances on one store, --check-config.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/wechattest"
)

// e2eConfig is a two-app configuration: fmt-formatted with the store URL,
// the fake's URL, the directory of the secret files and the SHA-256 of
// the key of shop; extraKey is added to the keys verbatim.
func e2eConfig(storeURL, api, dir, extraKey string) string {
	return fmt.Sprintf(`{
  "store": %q,
  "api_base": [%q],
  "apps": [
    {"id": "shop", "kind": "official_account", "appid": %q, "secret_file": %q},
    {"id": "news", "kind": "official_account", "appid": %q, "secret_file": %q}
  ],
  "keys": [
    {"name": "shop", "sha256": %q, "apps": ["shop"]},
    {"name": "news", "file": %q, "apps": ["news"]}%s
  ]
}`, storeURL, api, appShop, filepath.Join(dir, "shop.secret"), appNews, filepath.Join(dir, "news.secret"),
		hexSum(cfgKeyA), filepath.Join(dir, "news.key"), extraKey)
}

func e2eConfigDir(t *testing.T) string {
	return configDir(t, map[string]string{"shop.secret": cfgSecretA, "news.secret": cfgSecretB, "news.key": cfgKeyB})
}

func twoAppFake(t *testing.T) *wechattest.Server {
	return newFake(t, wechattest.WithApp(appShop, cfgSecretA), wechattest.WithApp(appNews, cfgSecretB))
}

// SIGHUP under load: clients asking both apps all along, through a reload
// that adds a key and one that is refused, never get an error; the new key
// works after the first, the running set survives the second.
func TestE2EConfigReload(t *testing.T) {
	fake := twoAppFake(t)
	dir := e2eConfigDir(t)
	cfg := filepath.Join(dir, "wechatconf.json")
	storeURL := "bolt:" + filepath.Join(t.TempDir(), "serve.db")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(e2eConfig(storeURL, fake.URL(), dir, ""))
	p := startServe(t, "--config", cfg)

	var stop atomic.Bool
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	client := &http.Client{Timeout: hangBound}
	for i := range 8 {
		wg.Go(func() {
			path, key := "/v1/apps/shop/access_token", cfgKeyA
			if i%2 == 1 {
				path, key = "/v1/apps/news/access_token", cfgKeyB
			}
			for !stop.Load() {
				code, body, err := fetch(client, p.addr, path, key)
				calls.Add(1)
				if err != nil || code != 200 || body.AccessToken == "" {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %d %v", path, code, err))
				}
			}
		})
	}
	hup := func(want *regexp.Regexp) {
		t.Helper()
		found := p.stderr.await(want)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-found:
		case <-time.After(hangBound):
			t.Fatalf("no %q in the log after SIGHUP:\n%s", want, p.stderr)
		}
	}
	const keyC = "e2e-third-key-0123456789abcdef"
	time.Sleep(100 * time.Millisecond) // let the clients run before the reload
	write(e2eConfig(storeURL, fake.URL(), dir, fmt.Sprintf(`,
    {"name": "both", "sha256": %q, "apps": ["shop", "news"]}`, hexSum(keyC))))
	hup(regexp.MustCompile(`configuration reloaded.* apps=2 started=0 kept=2 retired=0`))
	if code, _, err := fetch(client, p.addr, "/v1/apps/news/access_token", keyC); err != nil || code != 200 {
		t.Errorf("the key added by the reload: %d %v", code, err)
	}
	write(`{"apps": [`)
	hup(regexp.MustCompile(`configuration NOT reloaded`))
	if code, _, err := fetch(client, p.addr, "/v1/apps/shop/access_token", keyC); err != nil || code != 200 {
		t.Errorf("after a refused reload: %d %v", code, err)
	}
	time.Sleep(100 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d calls failed across the reloads; first: %v", n, calls.Load(), firstErr.Load())
	}
	if s := fake.Stats(); s.TokenGrants != 2 {
		t.Errorf("%d grants for two apps across reloads, want 2", s.TokenGrants)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.stderr)
	}
	for _, s := range []string{cfgSecretA, cfgSecretB, cfgKeyA, cfgKeyB, keyC, fake.CurrentToken(appShop)} {
		if strings.Contains(p.stderr.String(), s) {
			t.Fatalf("the log shows a secret, key or token:\n%s", p.stderr)
		}
	}
	if !strings.Contains(p.stderr.String(), "line 1") {
		t.Errorf("the refused reload does not say where the file is wrong:\n%s", p.stderr)
	}
}

// Two instances of one configuration on one Redis: one grant per app, and
// the forced-refresh limit holds across them (a report of the fresh token
// to the other instance is 429 with Retry-After).
func TestE2EConfigTwoServers(t *testing.T) {
	fake := twoAppFake(t)
	dir := e2eConfigDir(t)
	cfg := writeFile(t, "wechatconf.json", e2eConfig("redis://"+testserver.Redis(t).Addr+"/0", fake.URL(), dir, ""))
	a, b := startServe(t, "--config", cfg), startServe(t, "--config", cfg)
	addrs := []string{a.addr, b.addr}
	shop := hammer(t, 32, addrs, "/v1/apps/shop/access_token", cfgKeyA)
	news := hammer(t, 32, addrs, "/v1/apps/news/access_token", cfgKeyB)
	for i := range shop {
		if shop[i] != shop[0] || news[i] != news[0] || shop[0] == news[0] {
			t.Fatalf("client %d: shop %q news %q; want one token per app", i, shop[i], news[i])
		}
	}
	if s := fake.Stats(); s.TokenGrants != 2 {
		t.Errorf("%d grants from two servers for two apps, want 2", s.TokenGrants)
	}
	post := func(addr, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/apps/shop/invalidate", strings.NewReader(fmt.Sprintf(`{"value": %q}`, token)))
		req.Header.Set("Authorization", "Bearer "+cfgKeyA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	fake.Revoke(appShop)
	if resp := post(a.addr, shop[0]); resp.StatusCode != 200 {
		t.Fatalf("first report: %d", resp.StatusCode)
	}
	fresh := fake.CurrentToken(appShop)
	// b still holds the old token: its report of it takes the fresh one
	// from the store, at no grant.
	if resp := post(b.addr, shop[0]); resp.StatusCode != 200 {
		t.Fatalf("the old token reported to the other server: %d", resp.StatusCode)
	}
	if code, got, err := fetch(http.DefaultClient, b.addr, "/v1/apps/shop/access_token", cfgKeyA); err != nil || code != 200 || got.AccessToken != fresh {
		t.Fatalf("the other server after the report: %d %v, want the fresh token", code, err)
	}
	// WeChat rejects the fresh one too (a second revocation): the other
	// server may not force a second refresh within the interval.
	resp := post(b.addr, fresh)
	if resp.StatusCode != 429 {
		t.Fatalf("a second forced refresh on the other server: %d, want 429", resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if s := fake.Stats(); s.TokenGrants != 3 {
		t.Errorf("%d grants, want 3 (two, and the one forced refresh)", s.TokenGrants)
	}
	for _, p := range []*serveProc{a, b} {
		if code := p.stop(t); code != 0 {
			t.Errorf("exit %d after SIGTERM\n%s", code, p.stderr)
		}
	}
}

// --check-config checks the file and starts nothing; a bad file is one line
// and exit status 2; flags the file says are refused.
func TestConfigCheckAndFlags(t *testing.T) {
	fake := twoAppFake(t)
	dir := e2eConfigDir(t)
	good := writeFile(t, "wechatconf.json", e2eConfig("redis://"+closedPort(t), fake.URL(), dir, ""))
	r := runIn(t, nil, "serve", "--config", good, "--check-config")
	if r.code != 0 || !strings.Contains(r.stdout, "ok: 2 apps (2 official_account), 2 keys") || r.stderr != "" {
		t.Fatalf("check: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if fake.Stats().Requests != 0 {
		t.Error("--check-config called WeChat")
	}
	bad := writeFile(t, "bad.json", `{"apps": [], "keys": []}`)
	r = runIn(t, nil, "serve", "--config", bad, "--check-config")
	if r.code != 2 || len(lines(r.stderr)) != 1 || !strings.Contains(r.stderr, "no apps") {
		t.Errorf("bad file: %d %q", r.code, r.stderr)
	}
	for _, args := range [][]string{
		{"--key", "k0123456789abcdefgh"}, {"--appid", appID}, {"--dev"}, {"--api-base", fake.URL()},
	} {
		r := runIn(t, nil, append([]string{"serve", "--config", good}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "--config") {
			t.Errorf("%v with --config: %d %q", args, r.code, r.stderr)
		}
	}
	if r := runIn(t, nil, "serve", "--check-config"); r.code != 2 || !strings.Contains(r.stderr, "give --config") {
		t.Errorf("--check-config alone: %d %q", r.code, r.stderr)
	}
}

// hash-key prints the SHA-256 of the key on stdin, and refuses a short one.
func TestHashKey(t *testing.T) {
	old := stdin
	t.Cleanup(func() { stdin = old })
	stdin = strings.NewReader(cfgKeyA + "\n")
	r := runIn(t, nil, "hash-key")
	if r.code != 0 || r.stdout != hexSum(cfgKeyA)+"\n" || r.stderr != "" {
		t.Errorf("hash-key: %d %q %q", r.code, r.stdout, r.stderr)
	}
	stdin = strings.NewReader("short")
	if r := runIn(t, nil, "hash-key"); r.code != 2 || !strings.Contains(r.stderr, "too short") || strings.Contains(r.stderr, "short\"") {
		t.Errorf("short key: %d %q", r.code, r.stderr)
	}
	if r := runIn(t, nil, "hash-key", "--key-file", writeFile(t, "k", cfgKeyB)); r.code != 0 || r.stdout != hexSum(cfgKeyB)+"\n" {
		t.Errorf("--key-file: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runIn(t, nil, "hash-key", "--appid", "x"); r.code != 2 {
		t.Errorf("hash-key takes no app flags: %d", r.code)
	}
}
