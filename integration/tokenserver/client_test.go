package tokenserver

// The business node: this test binary re-executed as a client process (see
// TestMain) with a spec in clientEnv. It never holds a secret: for each of
// its apps a tokenclient.Client over every serve URL (in its own order)
// feeds a refresh-only conf.Conf, whose AccessToken its callers call in a
// loop; another goroutine asks the servers directly (tokenclient's Get,
// no local copy) so that they are under load whatever the copies do.
// Commands are JSON lines on stdin, replies JSON lines on stdout.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/integration/internal/procout"
	"github.com/wechatconf/wechatconf/tokenclient"
)

// clientEnv carries a client's spec (JSON) to a child process; its
// presence makes the test binary run as a client instead of the tests.
const clientEnv = "WECHATCONF_TOKENSERVER_CLIENT"

// clientApp is one app a client is a business node of.
type clientApp struct {
	AppID string `json:"appid"`
	// App is the app's id in serve's configuration file (tokenclient's
	// Config.App).
	App string `json:"app"`
	Key string `json:"key"`
}

// clientSpec configures one client process.
type clientSpec struct {
	Name    string        `json:"name"`
	URLs    []string      `json:"urls"`
	Apps    []clientApp   `json:"apps"`
	Callers int           `json:"callers"` // AccessToken loops per app
	Every   time.Duration `json:"every"`   // pause between a loop's calls
	Direct  time.Duration `json:"direct"`  // pause between direct Gets
}

// The commands a client obeys.
const (
	opReady  = "ready"  // the client's first reply, once set up
	opStats  = "stats"  // the counts so far
	opReject = "reject" // report each app's current token rejected, once
	opQuit   = "quit"   // stop the loops; the reply has the final counts
)

type command struct {
	Op string `json:"op"`
}

// appStats is what a client saw of one app.
type appStats struct {
	Calls   int `json:"calls"`   // AccessToken calls
	Errors  int `json:"errors"`  // of them, failed
	Expired int `json:"expired"` // of them, answered a token past its expiry
	Direct  int `json:"direct"`  // direct Gets to the servers
	// DirectErrors counts direct Gets that failed.
	DirectErrors int      `json:"direct_errors"`
	FirstErrors  []string `json:"first_errors,omitempty"`
	// Tokens lists every token the Conf served, in first-seen order; Last
	// is the one of its latest call. DirectTokens: the direct Gets'.
	Tokens       []string `json:"tokens,omitempty"`
	Last         string   `json:"last,omitempty"`
	DirectTokens []string `json:"direct_tokens,omitempty"`
	// Rejected and Replacement are opReject's: the token reported and
	// what the servers answered.
	Rejected    string `json:"rejected,omitempty"`
	Replacement string `json:"replacement,omitempty"`
}

type clientReply struct {
	Op   string              `json:"op"`
	Node string              `json:"node"`
	Err  string              `json:"err,omitempty"`
	Apps map[string]appStats `json:"apps,omitempty"` // by AppID
}

// clientApp's running state in the child.
type appNode struct {
	spec clientApp
	tc   *tokenclient.Client
	c    *conf.Conf

	mu sync.Mutex
	st appStats
}

func (a *appNode) note(direct bool, tok string, exp time.Time, err error) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if direct {
		a.st.Direct++
	} else {
		a.st.Calls++
	}
	switch {
	case err != nil:
		if direct {
			a.st.DirectErrors++
		} else {
			a.st.Errors++
		}
		if len(a.st.FirstErrors) < 5 {
			a.st.FirstErrors = append(a.st.FirstErrors, fmt.Sprintf("%s direct=%v %v", now.Format("15:04:05.000"), direct, err))
		}
	case !now.Before(exp):
		a.st.Expired++
	case direct:
		if !slices.Contains(a.st.DirectTokens, tok) {
			a.st.DirectTokens = append(a.st.DirectTokens, tok)
		}
	default:
		a.st.Last = tok
		if !slices.Contains(a.st.Tokens, tok) {
			a.st.Tokens = append(a.st.Tokens, tok)
		}
	}
}

func (a *appNode) stats() appStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.FirstErrors = slices.Clone(a.st.FirstErrors)
	s.Tokens = slices.Clone(a.st.Tokens)
	s.DirectTokens = slices.Clone(a.st.DirectTokens)
	return s
}

// clientMain runs this process as a client and returns its exit status.
func clientMain(specJSON string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "tokenserver client: "+format+"\n", args...)
		return 2
	}
	var spec clientSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail("bad %s: %v", clientEnv, err)
	}
	var apps []*appNode
	for _, ap := range spec.Apps {
		tc, err := tokenclient.New(tokenclient.Config{URLs: spec.URLs, Key: ap.Key, App: ap.App})
		if err != nil {
			return fail("%s: %v", spec.Name, err)
		}
		c, err := conf.New(append(tc.ConfOptions(), conf.WithAppID(ap.AppID, ""))...)
		if err != nil {
			return fail("%s: %v", spec.Name, err)
		}
		defer c.Close()
		apps = append(apps, &appNode{spec: ap, tc: tc, c: c})
	}

	var outMu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	send := func(r clientReply) {
		outMu.Lock()
		defer outMu.Unlock()
		r.Node = spec.Name
		if err := out.Encode(r); err != nil {
			fmt.Fprintf(os.Stderr, "tokenserver client %s: write reply: %v\n", spec.Name, err)
		}
	}
	all := func(op string) clientReply {
		r := clientReply{Op: op, Apps: map[string]appStats{}}
		for _, a := range apps {
			r.Apps[a.spec.AppID] = a.stats()
		}
		return r
	}

	ctx, stop := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	for _, a := range apps {
		for range max(spec.Callers, 1) {
			loops.Go(func() {
				for ctx.Err() == nil {
					cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
					item, err := a.c.GetAccessToken(cctx)
					cancel()
					a.note(false, item.Value, item.ExpiresAt, err)
					sleep(ctx, spec.Every)
				}
			})
		}
		loops.Go(func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				item, err := a.tc.Get(cctx, "access_token")
				cancel()
				a.note(true, item.Value, item.ExpiresAt, err)
				sleep(ctx, spec.Direct)
			}
		})
	}
	send(clientReply{Op: opReady})

	in := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var cmd command
		err := in.Decode(&cmd)
		if err != nil || cmd.Op == opQuit {
			stop()
			loops.Wait()
			if err != nil && !errors.Is(err, io.EOF) {
				return fail("%s: read command: %v", spec.Name, err)
			}
			send(all(opQuit))
			return 0
		}
		switch cmd.Op {
		case opStats:
			send(all(opStats))
		case opReject:
			r := clientReply{Op: opReject, Apps: map[string]appStats{}}
			for _, a := range apps {
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				tok, err := a.c.AccessToken(cctx)
				var repl string
				if err == nil {
					repl, err = a.c.Invalidate(cctx, conf.AccessToken, tok)
				}
				cancel()
				if err != nil {
					r.Err = fmt.Sprintf("app %s: %v", a.spec.AppID, err)
				}
				r.Apps[a.spec.AppID] = appStats{Rejected: tok, Replacement: repl}
			}
			send(r)
		default:
			send(clientReply{Op: cmd.Op, Err: "unknown op"})
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// client is a running client process as the parent sees it.
type client struct {
	name   string
	cmd    *exec.Cmd
	enc    *json.Encoder
	out    chan clientReply
	stderr *procout.Buffer
	done   chan struct{}
	err    error
}

// startClient re-executes the test binary as a client.
func startClient(t *testing.T, spec clientSpec) *client {
	t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), clientEnv+"="+string(js))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &client{name: spec.Name, cmd: cmd, enc: json.NewEncoder(stdin), out: make(chan clientReply, 16), stderr: &procout.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("client %s: %v", spec.Name, err)
	}
	go func() {
		dec := json.NewDecoder(stdout)
		for {
			var r clientReply
			if dec.Decode(&r) != nil {
				break
			}
			c.out <- r
		}
		c.err = cmd.Wait()
		close(c.done)
		close(c.out)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	c.recv(t, opReady)
	return c
}

// ask sends op and returns the reply.
func (c *client) ask(t *testing.T, op string) clientReply {
	t.Helper()
	r, err := c.tryAsk(op)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryAsk is ask for any goroutine: it reports instead of failing the test.
func (c *client) tryAsk(op string) (clientReply, error) {
	if err := c.enc.Encode(command{Op: op}); err != nil {
		return clientReply{}, fmt.Errorf("client %s: send %s: %w", c.name, op, err)
	}
	return c.tryRecv(op)
}

func (c *client) recv(t *testing.T, op string) clientReply {
	t.Helper()
	r, err := c.tryRecv(op)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (c *client) tryRecv(op string) (clientReply, error) {
	select {
	case r, ok := <-c.out:
		switch {
		case !ok:
			return r, fmt.Errorf("client %s ended (%v) before its %s reply. stderr:\n%s", c.name, c.err, op, c.stderr.Tail())
		case r.Op != op || r.Err != "":
			return r, fmt.Errorf("client %s: asked %s, got %s: %s", c.name, op, r.Op, r.Err)
		}
		return r, nil
	case <-time.After(callTimeout + replySlack):
		return clientReply{}, fmt.Errorf("client %s: no %s reply. stderr:\n%s", c.name, op, c.stderr.Tail())
	}
}

// quit stops the client and returns its final counts; the process must
// exit 0 (a data race in it exits 66).
func (c *client) quit(t *testing.T) clientReply {
	t.Helper()
	r := c.ask(t, opQuit)
	select {
	case <-c.done:
	case <-time.After(exitWait):
		t.Fatalf("client %s did not exit", c.name)
	}
	if c.err != nil {
		t.Errorf("client %s exited with %v. stderr:\n%s", c.name, c.err, c.stderr.Tail())
	}
	return r
}
