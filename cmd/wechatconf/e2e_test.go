package main

// End-to-end tests of the built binary: several processes against one
// store, serve as a subprocess under concurrent clients, SIGTERM, bad flags.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/testserver"
)

// hangBound only stops a hung subprocess from stalling the suite; nothing
// asserts how long anything takes.
const hangBound = 3 * time.Minute

// subprocess builds a subprocess of the binary with a clean environment (no
// WECHAT* variable of the machine leaks in).
func subprocess(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

type procResult struct {
	code           int
	stdout, stderr string
}

// runProcs starts n processes with the same args at once and waits for all.
func runProcs(t *testing.T, n int, args ...string) []procResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	errs := make([]*bytes.Buffer, n)
	for i := range cmds {
		cmds[i] = subprocess(ctx, t, args...)
		outs[i], errs[i] = &bytes.Buffer{}, &bytes.Buffer{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
	}
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	res := make([]procResult, n)
	for i, c := range cmds {
		err := c.Wait()
		res[i] = procResult{code: exitCode(t, err), stdout: outs[i].String(), stderr: errs[i].String()}
	}
	return res
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", err)
	return -1
}

// storeCase is a store shared by processes, started for one test.
type storeCase struct {
	name string
	url  func(t *testing.T) string
}

var sharedStores = []storeCase{
	{"bolt", func(t *testing.T) string { return "bolt:" + filepath.Join(t.TempDir(), "shared.db") }},
	{"redis", func(t *testing.T) string { return "redis://" + testserver.Redis(t).Addr + "/0" }},
	{"memcache", func(t *testing.T) string { return "memcache://" + testserver.Memcached(t).Addr }},
	{"postgres", func(t *testing.T) string { _, dsn := testserver.Postgres(t); return dsn }},
}

// Eight `token` processes started at once against one store make exactly
// one grant and print the same token; then eight `ticket` processes make
// one ticket and no new token.
func TestE2EConcurrentProcesses(t *testing.T) {
	for _, sc := range sharedStores {
		t.Run(sc.name, func(t *testing.T) {
			fake := newFake(t)
			args := []string{"--appid", appID, "--secret-file", writeFile(t, "secret", secret),
				"--store", sc.url(t), "--api-base", fake.URL()}

			res := runProcs(t, 8, append([]string{"token"}, args...)...)
			tok := checkSame(t, res)
			if s := fake.Stats(); s.TokenGrants != 1 {
				t.Errorf("%d token grants from 8 processes, want 1", s.TokenGrants)
			}
			if tok != fake.CurrentToken(appID) || !fake.Valid(tok) {
				t.Error("the printed token is not the platform's current, valid token")
			}

			res = runProcs(t, 8, append([]string{"ticket"}, args...)...)
			ticket := checkSame(t, res)
			if s := fake.Stats(); s.JSAPITickets != 1 || s.TokenGrants != 1 {
				t.Errorf("stats %+v: want one jsapi ticket and still one token grant", s)
			}
			if !fake.ValidTicket(ticket) {
				t.Error("the printed ticket is not valid")
			}
		})
	}
}

// checkSame wants every process to exit 0 with one identical line on stdout
// and nothing on stderr; it returns that line.
func checkSame(t *testing.T, res []procResult) string {
	t.Helper()
	first := strings.TrimSuffix(res[0].stdout, "\n")
	for i, r := range res {
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("process %d: exit %d, stderr %q", i, r.code, r.stderr)
		}
		if l := strings.TrimSuffix(r.stdout, "\n"); l == "" || strings.Contains(l, "\n") || l != first || !strings.HasSuffix(r.stdout, "\n") {
			t.Fatalf("process %d printed %q, process 0 %q: want the same single line", i, r.stdout, res[0].stdout)
		}
	}
	return first
}

// serveProc is a `wechatconf serve` subprocess.
type serveProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *watcher
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, once done is closed
}

var addrLine = regexp.MustCompile(`msg="wechatconf: serving" addr=(127\.0\.0\.1:[0-9]+)`)

func startServe(t *testing.T, args ...string) *serveProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	t.Cleanup(cancel)
	cmd := subprocess(ctx, t, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	w := &watcher{}
	cmd.Stderr = w
	found := w.await(addrLine)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, stderr: w, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case m := <-found:
		p.addr = m[1]
	case <-p.done:
		t.Fatalf("serve exited before listening: %v\n%s", p.err, w)
	}
	return p
}

// stop sends SIGTERM and returns the exit status.
func (p *serveProc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	return exitCode(t, p.err)
}

// fetch GETs path from a serve with key.
func fetch(client *http.Client, addr, path, key string) (int, credentialResponse, error) {
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, credentialResponse{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, credentialResponse{}, err
	}
	defer resp.Body.Close()
	var body credentialResponse
	if resp.StatusCode == 200 {
		err = json.NewDecoder(resp.Body).Decode(&body)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	return resp.StatusCode, body, err
}

// hammer sends n concurrent GETs of path, spread over addrs, and returns the
// access tokens they got.
func hammer(t *testing.T, n int, addrs []string, path, key string) []string {
	t.Helper()
	client := &http.Client{Timeout: hangBound}
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			code, body, err := fetch(client, addrs[i%len(addrs)], path, key)
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			got[i], errs[i] = body.AccessToken, err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	return got
}

// serve under 32 concurrent clients: all get the same valid token from one
// grant; SIGTERM ends it with status 0.
func TestE2EServe(t *testing.T) {
	fake := newFake(t)
	key := "e2e-server-key-0123456789abcdef"
	p := startServe(t, "--appid", appID, "--secret-file", writeFile(t, "secret", secret),
		"--key-file", writeFile(t, "key", key), "--api-base", fake.URL(),
		"--store", "bolt:"+filepath.Join(t.TempDir(), "serve.db"))

	got := hammer(t, 32, []string{p.addr}, "/v1/access_token", key)
	for i, tok := range got {
		if tok == "" || tok != got[0] {
			t.Fatalf("client %d got %q, client 0 %q: want the same token", i, tok, got[0])
		}
	}
	if s := fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("%d grants for 32 clients, want 1", s.TokenGrants)
	}
	if !fake.Valid(got[0]) {
		t.Error("the served token is not valid")
	}
	if code, _, err := fetch(http.DefaultClient, p.addr, "/v1/access_token", "wrong-key-wrong-key"); err != nil || code != 401 {
		t.Errorf("wrong key: %d, %v; want 401", code, err)
	}

	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := parseMetrics(t, string(body))
	if v := m[sr(`wechatconf_grants_total`, `kind="access_token"`)]; v != 1 {
		t.Errorf("grants metric %v, want 1", v)
	}
	if v := m[sr(`wechatconf_http_requests_total`, `code="200",path="/v1/access_token"`)]; v != 32 {
		t.Errorf("request metric %v, want 32", v)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM\n%s", code, p.stderr)
	}
	logs := p.stderr.String()
	if !strings.Contains(logs, "shutting down") || !strings.Contains(logs, "stopped") {
		t.Errorf("no graceful shutdown in the log:\n%s", logs)
	}
	for _, s := range []string{secret, key, got[0]} {
		if strings.Contains(logs, s) {
			t.Errorf("serve's stderr shows a secret or token:\n%s", logs)
		}
	}
}

// Two serve instances behind a load balancer, one Redis: one grant.
func TestE2ETwoServersOneStore(t *testing.T) {
	fake := newFake(t)
	key := "e2e-server-key-0123456789abcdef"
	args := []string{"--appid", appID, "--secret-file", writeFile(t, "secret", secret),
		"--key-file", writeFile(t, "key", key), "--api-base", fake.URL(),
		"--store", "redis://" + testserver.Redis(t).Addr + "/0"}
	a, b := startServe(t, args...), startServe(t, args...)

	got := hammer(t, 32, []string{a.addr, b.addr}, "/v1/access_token", key)
	for i, tok := range got {
		if tok == "" || tok != got[0] {
			t.Fatalf("client %d got %q, client 0 %q: want the same token", i, tok, got[0])
		}
	}
	if s := fake.Stats(); s.TokenGrants != 1 {
		t.Errorf("%d grants from two servers, want 1", s.TokenGrants)
	}
	for _, p := range []*serveProc{a, b} {
		if code := p.stop(t); code != 0 {
			t.Errorf("exit %d after SIGTERM\n%s", code, p.stderr)
		}
	}
}

// A bad flag is exit status 2 and one line on stderr, before anything
// starts.
func TestE2EBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no command", []string{}},
		{"unknown command", []string{"frobnicate"}},
		{"unknown flag", []string{"token", "--bogus"}},
		{"flag without value", []string{"serve", "--listen"}},
		{"bad ticket type", []string{"ticket", "--type", "card", "--appid", appID, "--secret", secret}},
		{"unknown store", []string{"token", "--store", "etcd://x", "--appid", appID, "--secret", secret}},
		{"missing app", []string{"token", "--store", "memory:"}},
		{"serve without key", []string{"serve", "--appid", appID, "--secret", secret, "--store", "memory:"}},
		{"sign without url", []string{"sign", "--appid", appID, "--secret", secret, "--store", "memory:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runProcs(t, 1, tc.args...)[0]
			if res.code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", res.code, res.stderr)
			}
			if l := lines(res.stderr); len(l) != 1 || !strings.HasPrefix(l[0], "wechatconf") {
				t.Errorf("stderr %q, want one wechatconf line", res.stderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout %q", res.stdout)
			}
			if strings.Contains(res.stderr, secret) {
				t.Error("stderr shows the secret")
			}
		})
	}
}

// The help goes to stdout with status 0.
func TestE2EHelp(t *testing.T) {
	res := runProcs(t, 1, "token", "-h")[0]
	sc := bufio.NewScanner(strings.NewReader(res.stdout))
	if res.code != 0 || !sc.Scan() || sc.Text() != "Usage: wechatconf token [flags]" {
		t.Errorf("exit %d, stdout %q", res.code, res.stdout)
	}
}
