package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wechatconf/wechatconf/wechattest"
)

const (
	appID  = wechattest.DefaultAppID
	secret = wechattest.DefaultAppSecret
)

// base returns the flags that point a command at fake with a bbolt store
// in a fresh directory.
func base(t *testing.T, fake *wechattest.Server) []string {
	t.Helper()
	return []string{"--appid", appID, "--secret-file", writeFile(t, "secret", secret+"\n"),
		"--store", "bolt:" + filepath.Join(t.TempDir(), "w.db"), "--api-base", fake.URL()}
}

// checkClean fails the test if out shows the AppSecret.
func checkClean(t *testing.T, out ...string) {
	t.Helper()
	for _, o := range out {
		if strings.Contains(o, secret) {
			t.Errorf("output shows the AppSecret: %q", o)
		}
	}
}

func TestToken(t *testing.T) {
	fake := newFake(t)
	r := runIn(t, nil, append([]string{"token"}, base(t, fake)...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	want := fake.CurrentToken(appID)
	if want == "" || r.stdout != want+"\n" {
		t.Fatalf("stdout %q, want the current token and a newline", r.stdout)
	}
	if s := fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("%d grants, want 1", s.TokenGrants)
	}
}

// A second run on the same store reuses the stored token: no new grant.
func TestTokenReusesStore(t *testing.T) {
	fake := newFake(t)
	args := append([]string{"token"}, base(t, fake)...)
	first := runIn(t, nil, args...)
	second := runIn(t, nil, args...)
	if first.code != 0 || second.code != 0 {
		t.Fatalf("exits %d, %d: %s %s", first.code, second.code, first.stderr, second.stderr)
	}
	if first.stdout != second.stdout {
		t.Errorf("second run printed another token")
	}
	if s := fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("%d grants, want 1", s.TokenGrants)
	}
}

// Everything can come from the environment.
func TestTokenFromEnvironment(t *testing.T) {
	fake := newFake(t)
	e := env{
		envAppID:   appID,
		envSecret:  secret,
		envStore:   "bolt:" + filepath.Join(t.TempDir(), "w.db"),
		envAPIBase: "http://" + closedPort(t) + " , " + fake.URL(), // failover to the second
	}
	r := runIn(t, e, "token")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != fake.CurrentToken(appID)+"\n" {
		t.Errorf("stdout %q is not the current token", r.stdout)
	}
}

// Flags win over the environment.
func TestFlagsOverrideEnvironment(t *testing.T) {
	fake := newFake(t)
	e := env{envAppID: "wx-from-env", envSecret: "wrong-secret-from-env", envAPIBase: "http://" + closedPort(t), envStore: "nope://"}
	r := runIn(t, e, append([]string{"token"}, base(t, fake)...)...)
	if r.code != 0 || r.stdout != fake.CurrentToken(appID)+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// Without --store the token is kept in the user's cache directory, so that
// repeated runs share it.
func TestDefaultStore(t *testing.T) {
	fake := newFake(t)
	cache := t.TempDir()
	e := env{"XDG_CACHE_HOME": cache}
	args := []string{"token", "--appid", appID, "--secret", secret, "--api-base", fake.URL()}
	if r := runIn(t, e, args...); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cache, "wechatconf", "wechatconf.db")); err != nil {
		t.Fatalf("default store not created: %v", err)
	}
	home := t.TempDir()
	if r := runIn(t, env{"HOME": home}, args...); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(home, ".cache", "wechatconf", "wechatconf.db")); err != nil {
		t.Fatalf("default store under HOME not created: %v", err)
	}
}

func TestStableToken(t *testing.T) {
	fake := newFake(t)
	r := runIn(t, nil, append([]string{"token", "--stable-token"}, base(t, fake)...)...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	tok := strings.TrimSuffix(r.stdout, "\n")
	s := fake.Stats()
	if s.StableTokenGrants != 1 || s.TokenGrants != 0 || !fake.Valid(tok) {
		t.Errorf("stats %+v, valid %v: want one stable grant and a valid token", s, fake.Valid(tok))
	}
}

func TestTicket(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		count func(wechattest.Stats) int
	}{
		{nil, func(s wechattest.Stats) int { return s.JSAPITickets }},
		{[]string{"--type", "jsapi"}, func(s wechattest.Stats) int { return s.JSAPITickets }},
		{[]string{"--type", "wx_card"}, func(s wechattest.Stats) int { return s.WXCardTickets }},
	} {
		t.Run(strings.Join(tc.args, "="), func(t *testing.T) {
			fake := newFake(t)
			r := runIn(t, nil, append(append([]string{"ticket"}, tc.args...), base(t, fake)...)...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			ticket := strings.TrimSuffix(r.stdout, "\n")
			if strings.Contains(ticket, "\n") || !fake.ValidTicket(ticket) {
				t.Fatalf("stdout %q is not one valid ticket", r.stdout)
			}
			if n := tc.count(fake.Stats()); n != 1 {
				t.Errorf("%d tickets of that type granted, want 1", n)
			}
		})
	}
}

func TestSign(t *testing.T) {
	fake := newFake(t)
	args := base(t, fake)
	page := "https://example.com/page?a=1&b=2#section"
	r := runIn(t, nil, append([]string{"sign", "--url", page}, args...)...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var cfg struct {
		AppID     string `json:"appId"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	if cfg.AppID != appID || cfg.NonceStr == "" || cfg.Timestamp == 0 {
		t.Fatalf("config %+v", cfg)
	}
	// The ticket it signed with is the one in the store: ticket prints it
	// without a new grant.
	tr := runIn(t, nil, append([]string{"ticket"}, args...)...)
	ticket := strings.TrimSuffix(tr.stdout, "\n")
	if s := fake.Stats(); s.JSAPITickets != 1 {
		t.Fatalf("%d jsapi tickets granted, want 1", s.JSAPITickets)
	}
	plain := fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", ticket, cfg.NonceStr, cfg.Timestamp, "https://example.com/page?a=1&b=2")
	sum := sha1.Sum([]byte(plain))
	if want := hex.EncodeToString(sum[:]); cfg.Signature != want {
		t.Errorf("signature %s, want %s", cfg.Signature, want)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		r := runIn(t, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "wechatconf serve") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	for _, c := range commands {
		r := runIn(t, nil, c.name, "-h")
		// The bare commands take no app flags.
		if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: wechatconf "+c.name) || strings.Contains(r.stdout, "-appid") == c.bare {
			t.Errorf("%s -h: exit %d, stdout %q", c.name, r.code, r.stdout)
		}
	}
}

// Every mistake and failure is one line on stderr, nothing on stdout, the
// right exit status, and no secret.
func TestErrors(t *testing.T) {
	fake := newFake(t)
	bolt := "bolt:" + filepath.Join(t.TempDir(), "w.db")
	secretFile := writeFile(t, "secret", secret)
	good := []string{"--appid", appID, "--secret-file", secretFile, "--store", bolt, "--api-base", fake.URL()}
	const pw = "hunter2-store-password"
	const key = "a-server-key-that-is-long-enough"
	keyFile := writeFile(t, "key", key)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	quota := newFake(t, wechattest.WithDailyQuota(0))
	whitelist := newFake(t)
	whitelist.FailNext(1, wechattest.Errcode(40164, "invalid ip, not in whitelist"))

	for _, tc := range []struct {
		name string
		env  env
		args []string
		code int
		want string // in the one line on stderr
	}{
		{"no command", nil, nil, 2, "no command"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"bad flag", nil, []string{"token", "--bogus"}, 2, "-bogus"},
		{"flag without value", nil, []string{"serve", "--listen"}, 2, "-listen"},
		{"bad duration", nil, []string{"token", "--timeout", "soon"}, 2, "-timeout"},
		{"negative timeout", nil, append([]string{"token", "--timeout", "-1s"}, good...), 2, "--timeout"},
		{"extra argument", nil, append([]string{"token", "extra"}, good...), 2, `unexpected argument "extra"`},
		{"missing appid", nil, []string{"token", "--secret", secret, "--store", bolt}, 2, "missing AppID"},
		{"missing secret", nil, []string{"token", "--appid", appID, "--store", bolt}, 2, "missing AppSecret"},
		{"missing secret (env appid)", env{envAppID: appID}, []string{"token", "--store", bolt}, 2, "missing AppSecret"},
		{"secret twice", nil, []string{"token", "--appid", appID, "--secret", secret, "--secret-file", secretFile}, 2, "not both"},
		{"secret file missing", nil, []string{"token", "--appid", appID, "--secret-file", "/nonexistent/secret"}, 2, "cannot read"},
		{"secret file empty", nil, []string{"token", "--appid", appID, "--secret-file", writeFile(t, "empty", "\n")}, 2, "is empty"},
		{"unknown store scheme", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "etcd://localhost:2379"}, 2, `unknown store scheme "etcd"`},
		{"unknown store scheme (env)", env{envStore: "consul://x"}, []string{"token", "--appid", appID, "--secret", secret}, 2, `unknown store scheme "consul"`},
		{"store without scheme", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "/var/lib/w.db"}, 2, "no scheme"},
		{"bolt without path", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "bolt:"}, 2, "needs a file path"},
		{"memory with junk", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memory:x"}, 2, "nothing after"},
		{"memcache without port", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memcache://localhost"}, 2, "not HOST:PORT"},
		{"memcache without hosts", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memcache:"}, 2, "memcache://HOST:PORT"},
		{"bad redis URL", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "redis://:" + pw + "@localhost:6379/notadb"}, 2, "invalid redis URL"},
		{"bad postgres URL", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "postgres://u:" + pw + "@localhost:notaport/db"}, 2, "invalid postgres URL"},
		{"unreachable redis", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "redis://:" + pw + "@" + closedPort(t) + "/0"}, 1, "unreachable"},
		{"unreachable memcache", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memcache://" + closedPort(t)}, 1, "unreachable"},
		{"unreachable postgres", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "postgres://u:" + pw + "@" + closedPort(t) + "/db?sslmode=disable"}, 1, "unreachable"},
		{"bad api base", nil, []string{"token", "--api-base", "ftp://example.com"}, 2, "-api-base"},
		{"bad api base (env)", env{envAPIBase: "api.weixin.qq.com"}, []string{"token", "--appid", appID, "--secret", secret, "--store", bolt}, 2, envAPIBase},
		{"dev with api base", nil, []string{"token", "--dev", "--api-base", fake.URL()}, 2, "drop --api-base"},
		{"bad ticket type", nil, append([]string{"ticket", "--type", "card"}, good...), 2, "--type must be jsapi or wx_card"},
		{"sign without url", nil, append([]string{"sign"}, good...), 2, "--url is required"},
		{"sign relative url", nil, append([]string{"sign", "--url", "/page"}, good...), 2, "absolute"},
		{"serve without key", nil, append([]string{"serve"}, good...), 2, "serve needs a key"},
		{"serve short key", nil, append([]string{"serve", "--key", "short"}, good...), 2, "too short"},
		{"serve key twice", nil, append([]string{"serve", "--key", key, "--key-file", keyFile}, good...), 2, "not both"},
		{"serve busy port", nil, append([]string{"serve", "--key-file", keyFile, "--listen", busy.Addr().String()}, good...), 1, "listen"},
		{"wrong secret", nil, []string{"token", "--appid", appID, "--secret", "0123456789abcdef0123456789abcdef", "--store", "memory:", "--api-base", fake.URL()}, 1, "errcode 40125"},
		{"unknown appid", nil, []string{"token", "--appid", "wx-unknown", "--secret", secret, "--store", "memory:", "--api-base", fake.URL()}, 1, "errcode 40013"},
		{"quota", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memory:", "--api-base", quota.URL()}, 1, "errcode 45009"},
		{"ip whitelist", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memory:", "--api-base", whitelist.URL()}, 1, "errcode 40164"},
		{"wechat unreachable", nil, []string{"token", "--appid", appID, "--secret", secret, "--store", "memory:", "--api-base", "http://" + closedPort(t)}, 1, "/cgi-bin/token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runIn(t, tc.env, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if l := lines(r.stderr); len(l) != 1 || !strings.Contains(l[0], tc.want) {
				t.Errorf("stderr %q, want one line with %q", r.stderr, tc.want)
			}
			checkClean(t, r.stderr)
			for _, s := range []string{pw, key} {
				if strings.Contains(r.stderr, s) {
					t.Errorf("stderr shows a secret: %q", r.stderr)
				}
			}
		})
	}
	if s := quota.Stats(); s.TokenGrants != 0 {
		t.Errorf("quota fake granted %d", s.TokenGrants)
	}
}

// --dev runs the whole thing with no account: the one-shot commands print a
// credential, and serve prints a ready curl line with its made-up key.
func TestDevToken(t *testing.T) {
	r := runIn(t, env{envAppID: "wx-must-be-ignored", envStore: "nope://"}, "token", "--dev")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if tok := strings.TrimSuffix(r.stdout, "\n"); len(tok) < 32 || strings.ContainsAny(tok, " \n") {
		t.Errorf("stdout %q is not one token", r.stdout)
	}
	if !strings.Contains(r.stderr, "dev mode: fake WeChat API") || !strings.Contains(r.stderr, "AppID "+appID) {
		t.Errorf("stderr %q does not say what dev mode did", r.stderr)
	}
	checkClean(t, r.stdout, r.stderr)
}

var (
	curlLine = regexp.MustCompile(`Bearer ([A-Z0-9]+)' (http://[0-9.:]+)/v1/access_token`)
	boltLine = regexp.MustCompile(`bbolt store at (\S+) \(removed at exit\)`)
)

func TestDevServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &watcher{}
	curl := stderr.await(curlLine)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--listen", "127.0.0.1:0"}, &strings.Builder{}, stderr, env{}.get)
	}()
	var m []string
	select {
	case m = <-curl:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	}
	key, url := m[1], m[2]
	if strings.Count(stderr.String(), key) != 1 {
		t.Errorf("the dev key is printed %d times, want once", strings.Count(stderr.String(), key))
	}
	dbPath := boltLine.FindStringSubmatch(stderr.String())
	if dbPath == nil {
		t.Fatalf("stderr %q does not name the dev store", stderr)
	}

	req, _ := http.NewRequest("GET", url+"/v1/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body credentialResponse
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || body.AccessToken == "" || body.ExpiresIn <= 0 {
		t.Fatalf("status %d, body %+v, err %v", resp.StatusCode, body, err)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d after cancel: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Dir(dbPath[1])); !os.IsNotExist(err) {
		t.Errorf("dev store directory %s left behind (stat: %v)", dbPath[1], err)
	}
	if strings.Contains(stderr.String(), body.AccessToken) {
		t.Error("serve logged the token")
	}
}

// serve with a key from a file and a real API base, in-process.
func TestServeKeyFile(t *testing.T) {
	fake := newFake(t)
	key := "0123456789-server-key-from-a-file"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &watcher{}
	addr := stderr.await(regexp.MustCompile(`addr=(127\.0\.0\.1:[0-9]+)`))
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--key-file", writeFile(t, "key", "  "+key+"\n")}, base(t, fake)...)
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &strings.Builder{}, stderr, env{}.get) }()
	var a []string
	select {
	case a = <-addr:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	}
	for _, tc := range []struct {
		key  string
		want int
	}{{key, 200}, {key + "x", 401}, {"", 401}} {
		req, _ := http.NewRequest("GET", "http://"+a[1]+"/v1/jsapi_ticket", nil)
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("key %q: status %d, want %d", tc.key, resp.StatusCode, tc.want)
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stderr.String(), key) {
		t.Error("serve printed its key")
	}
	checkClean(t, stderr.String())
	if s := fake.Stats(); s.JSAPITickets != 1 || s.TokenGrants != 1 {
		t.Errorf("stats %+v, want one token and one ticket", s)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:pw@h:6379/0":                 "redis://:xxxxx@h:6379/0",
		"postgres://u:pw@h/db?sslmode=disable": "postgres://u:xxxxx@h/db?sslmode=disable",
		"postgres://u@h/db?password=pw":        "postgres://u@h/db?password=xxxxx",
		"memcache://a:11211,b:11211":           "memcache://a:11211,b:11211",
		"redis://u:pw@a:1,b:2":                 "redis://u:xxxxx@a:1,b:2",
		"redis://u:p%zz@h:1":                   "redis://u:xxxxx@h:1", // unparseable
		"bolt:/var/lib/w.db":                   "bolt:/var/lib/w.db",
		"rediss://default:pw@h:6380":           "rediss://default:xxxxx@h:6380",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// With --dev and a key of the user's own, the key is never printed.
func TestDevServeOwnKey(t *testing.T) {
	const key = "my-own-dev-key-0123456789"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &watcher{}
	try := stderr.await(regexp.MustCompile(`Bearer YOUR-KEY' (http://[0-9.:]+)/`))
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--key", key, "--listen", "127.0.0.1:0"}, &strings.Builder{}, stderr, env{}.get)
	}()
	var m []string
	select {
	case m = <-try:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	}
	req, _ := http.NewRequest("GET", m[1]+"/v1/wx_card_ticket", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d with the user's key", resp.StatusCode)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stderr.String(), key) {
		t.Errorf("the user's key was printed:\n%s", stderr)
	}
}
