package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/wechattest"
)

// binary is the wechatconf command built once by TestMain for the end-to-end
// tests, with the race detector when the tests have it.
var binary string

func TestMain(m *testing.M) {
	quietRedis()
	dir, err := os.MkdirTemp("", "wechatconf-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "wechatconf")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a fake environment for run.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// result is what one in-process run produced.
type result struct {
	code           int
	stdout, stderr string
}

// runIn calls run in-process with the given environment.
func runIn(t *testing.T, e env, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, &stdout, &stderr, e.get)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// newFake starts a fake WeChat API for one test.
func newFake(t *testing.T, opts ...wechattest.Option) *wechattest.Server {
	t.Helper()
	srv := wechattest.NewServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

// writeFile writes content to a new file in a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// watcher is an io.Writer for a command's stderr that keeps everything and
// lets a test wait for a line matching a pattern.
type watcher struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	waits []*wait
}

type wait struct {
	re *regexp.Regexp
	ch chan []string
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	w.check()
	return len(p), nil
}

func (w *watcher) check() {
	kept := w.waits[:0]
	for _, wt := range w.waits {
		if m := wt.re.FindStringSubmatch(w.buf.String()); m != nil {
			wt.ch <- m
			continue
		}
		kept = append(kept, wt)
	}
	w.waits = kept
}

// await returns a channel that gets the submatches of re once the output
// matches it.
func (w *watcher) await(re *regexp.Regexp) <-chan []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt := &wait{re: re, ch: make(chan []string, 1)}
	w.waits = append(w.waits, wt)
	w.check()
	return wt.ch
}

func (w *watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
