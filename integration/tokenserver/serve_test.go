package tokenserver

// The parent's side of the servers: the fake WeChat every serve process
// shares (in this process, over loopback), which records each grant, and
// the `wechatconf serve` processes, built from the root module.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/integration/internal/procout"
	"github.com/wechatconf/wechatconf/wechattest"
)

// Bounds on waits for a process. They turn a hang into a clear failure
// instead of the go test timeout; nothing here measures speed.
const (
	buildWait = 5 * time.Minute // go build of the serve binary (cold cache, -race)
	startWait = time.Minute     // a serve process until it listens
	exitWait  = 30 * time.Second
)

// serveBinEnv names a prebuilt serve binary (see buildServe).
const serveBinEnv = "WECHATCONF_TOKENSERVER_SERVE"

// grant is one access token WeChat issued.
type grant struct {
	AppID string
	Token string
	At    time.Time
}

// wechat is the fake WeChat of the whole test, recording every grant.
type wechat struct {
	*wechattest.Fake
	ts *httptest.Server

	mu     sync.Mutex
	grants []grant
}

func newWeChat(t *testing.T, opts ...wechattest.Option) *wechat {
	t.Helper()
	w := &wechat{Fake: wechattest.New(opts...)}
	w.ts = httptest.NewServer(w)
	t.Cleanup(w.ts.Close)
	return w
}

// URL is the fake's base URL, for serve's --api-base.
func (w *wechat) URL() string { return w.ts.URL }

// ServeHTTP serves the fake and records the tokens /cgi-bin/token issues.
func (w *wechat) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path != wechattest.PathToken {
		w.Fake.ServeHTTP(rw, r)
		return
	}
	tee := &teeWriter{ResponseWriter: rw}
	w.Fake.ServeHTTP(tee, r)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(tee.body.Bytes(), &body) == nil && body.AccessToken != "" {
		w.mu.Lock()
		w.grants = append(w.grants, grant{AppID: r.URL.Query().Get("appid"), Token: body.AccessToken, At: time.Now()})
		w.mu.Unlock()
	}
}

// grantsOf returns the grants made for appid so far, in order.
func (w *wechat) grantsOf(appid string) []grant {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gs []grant
	for _, g := range w.grants {
		if g.AppID == appid {
			gs = append(gs, g)
		}
	}
	return gs
}

type teeWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.body.Write(p)
	return t.ResponseWriter.Write(p)
}

// buildServe builds cmd/wechatconf in the root module (the one
// integration's go.mod replaces github.com/wechatconf/wechatconf with), with
// its own go.sum: serve's dependencies (Prometheus) are not integration's.
// With the race detector when this test has it.
//
// WECHATCONF_TOKENSERVER_SERVE names a serve binary to run instead (one
// built elsewhere, or of another version); it is not built then.
func buildServe(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv(serveBinEnv); bin != "" {
		t.Logf("serve: %s (%s)", bin, serveBinEnv)
		return bin
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if mod, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || !bytes.HasPrefix(mod, []byte("module github.com/wechatconf/wechatconf\n")) {
		t.Fatalf("%s is not the root module (%v)", root, err)
	}
	bin := filepath.Join(t.TempDir(), "wechatconf")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to build serve with: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, append(args, "./cmd/wechatconf")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/wechatconf: %v\n%s", err, out)
	}
	return bin
}

// writeSecret writes a file only its owner can read, as serve demands.
func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveAddr is the line serve logs once it listens.
var serveAddr = regexp.MustCompile(`msg="wechatconf: serving" addr=(127\.0\.0\.1:[0-9]+)`)

// serveProc is one `wechatconf serve`, across its restarts: the first start
// listens on a port the kernel picks, every restart on the same one, so
// that the clients' URLs stay right.
type serveProc struct {
	name string
	bin  string
	args []string
	home string
	addr string

	stderr procout.Buffer // every run's, in order
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // the exit status, valid once done is closed
	runs   int
}

func newServe(t *testing.T, name, bin string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{name: name, bin: bin, args: args, home: t.TempDir()}
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	p.start(t)
	return p
}

func (p *serveProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// URL is the server's base URL.
func (p *serveProc) URL() string { return "http://" + p.addr }

// start runs serve and returns once it listens.
func (p *serveProc) start(t *testing.T) {
	t.Helper()
	listen := "127.0.0.1:0"
	if p.addr != "" {
		listen = p.addr
	}
	p.runs++
	run := &lineWatch{re: serveAddr, found: make(chan string, 1), all: &p.stderr}
	p.stderr.Write([]byte("---- " + p.name + " run " + strconv.Itoa(p.runs) + " ----\n"))
	cmd := exec.Command(p.bin, append([]string{"serve", "--listen", listen}, p.args...)...)
	// A clean environment: no WECHAT_* of the machine's reaches serve.
	cmd.Env = []string{"HOME=" + p.home, "PATH=/usr/bin:/bin"}
	cmd.Stderr = run
	cmd.WaitDelay = exitWait
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start serve: %v", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() {
		p.err = cmd.Wait()
		close(done)
	}()
	select {
	case addr := <-run.found:
		p.addr = addr
	case <-done:
		t.Fatalf("%s exited before listening: %v\n%s", p.name, p.err, p.stderr.String())
	case <-time.After(startWait):
		t.Fatalf("%s not listening after %v\n%s", p.name, startWait, p.stderr.String())
	}
}

// kill ends serve with SIGKILL: no shutdown, connections reset.
func (p *serveProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("%s: kill: %v", p.name, err)
	}
	p.wait(t)
}

// term sends SIGTERM (a graceful shutdown) and returns the exit code.
func (p *serveProc) term(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: SIGTERM: %v", p.name, err)
	}
	p.wait(t)
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

func (p *serveProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(exitWait):
		t.Fatalf("%s still running %v after the signal", p.name, exitWait)
	}
}

// lineWatch copies a process's stderr to all and reports the first match
// of re's group.
type lineWatch struct {
	re    *regexp.Regexp
	found chan string
	all   *procout.Buffer

	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (w *lineWatch) Write(b []byte) (int, error) {
	w.all.Write(b)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.buf.Write(b)
		if m := w.re.FindSubmatch(w.buf.Bytes()); m != nil {
			w.done = true
			w.found <- string(m[1])
			w.buf.Reset()
		}
	}
	return len(b), nil
}
