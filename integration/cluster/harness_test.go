package cluster

// The parent's side: starting nodes (child processes, or in-process for
// bbolt), sending them commands, collecting replies, and the checks the
// suites share.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/integration/backends"
	"github.com/wechatconf/wechatconf/integration/internal/procout"
	"github.com/wechatconf/wechatconf/internal/secret"
	"github.com/wechatconf/wechatconf/wechattest"
)

// Bounds on how long the parent waits for a node. They only turn a hung
// node into a clear failure instead of the go test timeout; nothing here
// measures speed.
const (
	readyWait  = time.Minute      // a node's setup (process start, store dial)
	replySlack = 30 * time.Second // beyond the command's own ctx
	quitWait   = 20 * time.Second
)

// bed is one backend under test, shared by the suites that run on it.
type bed struct {
	d *backends.Deployment
	// inProcess runs the nodes as goroutines of the test process (bbolt:
	// one process at a time may open its file).
	inProcess bool
	seq       atomic.Int64
}

// namespace returns a namespace no other suite on this backend uses, so
// every suite starts from an empty store.
func (b *bed) namespace(suite string) string {
	return fmt.Sprintf("%s%d:", suite, b.seq.Add(1))
}

// logf logs with the backend's name in front: the backends run in
// parallel, and their lines interleave in the test log.
func (b *bed) logf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("[%s] "+format, append([]any{b.d.Kind}, args...)...)
}

// newFake starts a fake WeChat for one suite, closed when the test ends
// (after its nodes, which are started later and so cleaned up first).
func newFake(t *testing.T, opts ...wechattest.Option) *wechattest.Server {
	t.Helper()
	srv := wechattest.NewServer(opts...)
	t.Cleanup(srv.Close)
	return srv
}

// baseSpec is a node of the fake's default app on namespace ns.
func baseSpec(srv *wechattest.Server, ns string) nodeSpec {
	return nodeSpec{Namespace: ns, APIBase: srv.URL(), AppID: wechattest.DefaultAppID, Secret: wechattest.DefaultAppSecret}
}

// peer is a running node as the parent sees it.
type peer struct {
	name string
	send func(command) error
	out  <-chan reply

	// Child processes only.
	proc    *exec.Cmd
	stderr  *procout.Buffer
	exited  chan struct{} // closed once the process was reaped
	waitErr error         // its exit status, valid after exited
	killed  atomic.Bool

	pending []reply // replies read while looking for another
	quit    bool    // in-process: the node has quit
}

// cluster is the nodes of one suite.
type cluster struct {
	t     *testing.T
	nodes []*peer
	seq   atomic.Int64
}

// start launches one node per spec (named n0, n1, ... unless named) and
// returns once every node is ready. t.Cleanup stops them.
func (b *bed) start(t *testing.T, specs ...nodeSpec) *cluster {
	t.Helper()
	cl := &cluster{t: t}
	t.Cleanup(cl.stop) // also stops the nodes started before a failed start
	for i, spec := range specs {
		if spec.Name == "" {
			spec.Name = fmt.Sprintf("n%d", i)
		}
		var p *peer
		if b.inProcess {
			p = b.startInProcess(t, spec)
		} else {
			p = b.startProcess(t, spec)
		}
		cl.nodes = append(cl.nodes, p)
	}
	for _, p := range cl.nodes {
		cl.recv(p, 0, opReady, readyWait)
	}
	return cl
}

// same returns n copies of spec, for a cluster of identical nodes.
func same(n int, spec nodeSpec) []nodeSpec {
	specs := make([]nodeSpec, n)
	for i := range specs {
		specs[i] = spec
	}
	return specs
}

// startProcess re-executes the test binary as a node (see TestMain).
func (b *bed) startProcess(t *testing.T, spec nodeSpec) *peer {
	t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatalf("node %s: spec: %v", spec.Name, err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), b.d.Env()...), nodeEnv+"="+string(js))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("node %s: %v", spec.Name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("node %s: %v", spec.Name, err)
	}
	p := &peer{name: spec.Name, proc: cmd, stderr: &procout.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("node %s: start %s: %v", spec.Name, os.Args[0], err)
	}
	var mu sync.Mutex
	enc := json.NewEncoder(stdin)
	p.send = func(c command) error {
		mu.Lock()
		defer mu.Unlock()
		if c.Op == opQuit {
			defer stdin.Close()
		}
		return enc.Encode(c)
	}
	out := make(chan reply, 64)
	p.out = out
	go func() {
		dec := json.NewDecoder(stdout)
		for {
			var r reply
			if err := dec.Decode(&r); err != nil {
				break
			}
			out <- r
		}
		// Wait closes the pipe: only after every reply was read.
		p.waitErr = cmd.Wait()
		close(p.exited)
		close(out)
	}()
	return p
}

// startInProcess runs the node in this process over a store of the
// deployment (bbolt: the shared open file).
func (b *bed) startInProcess(t *testing.T, spec nodeSpec) *peer {
	t.Helper()
	// Roomy: the node must never block on a reply nobody reads any more
	// (a suite that failed half-way), or its shutdown would wait for it.
	out := make(chan reply, 1024)
	n, err := newNode(spec, b.d.Open(t, spec.Namespace), func(r reply) { out <- r })
	if err != nil {
		t.Fatalf("%v", err)
	}
	var mu sync.Mutex
	p := &peer{name: spec.Name, out: out}
	p.send = func(c command) error {
		mu.Lock()
		defer mu.Unlock()
		if p.quit {
			return errors.New("node has quit")
		}
		p.quit = !n.handle(c)
		return nil
	}
	n.send(command{Op: opReady}, reply{})
	return p
}

// kill ends a child node with SIGKILL (kill -9) and waits until it is gone.
func (p *peer) kill(t *testing.T) {
	t.Helper()
	if p.proc == nil {
		t.Fatalf("node %s runs in-process and cannot be killed", p.name)
	}
	p.killed.Store(true)
	if err := p.proc.Process.Kill(); err != nil {
		t.Fatalf("kill node %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(quitWait):
		t.Fatalf("node %s still running %v after SIGKILL", p.name, quitWait)
	}
}

// stop quits every node still running and reports any that failed: a
// non-zero exit (a data race in a child exits 66) or a hang.
func (cl *cluster) stop() {
	t := cl.t
	for _, p := range cl.nodes {
		if p.killed.Load() {
			continue
		}
		id := cl.seq.Add(1)
		if err := p.send(command{ID: id, Op: opQuit}); err != nil {
			t.Logf("node %s: send quit: %v", p.name, err)
		}
	}
	for _, p := range cl.nodes {
		if p.proc == nil || p.killed.Load() {
			continue
		}
		select {
		case <-p.exited:
		case <-time.After(quitWait):
			p.killed.Store(true)
			_ = p.proc.Process.Kill()
			<-p.exited
			t.Errorf("node %s did not quit within %v; killed. stderr:\n%s", p.name, quitWait, p.stderr.Tail())
			continue
		}
		if p.waitErr != nil {
			t.Errorf("node %s exited with %v. stderr:\n%s", p.name, p.waitErr, p.stderr.Tail())
		} else if t.Failed() && p.stderr.Len() > 0 {
			t.Logf("node %s stderr:\n%s", p.name, p.stderr.Tail())
		}
	}
}

// post sends cmd (with a fresh ID) to the given nodes and returns the ID.
func (cl *cluster) post(nodes []*peer, cmd command) int64 {
	cl.t.Helper()
	cmd.ID = cl.seq.Add(1)
	for _, p := range nodes {
		if err := p.send(cmd); err != nil {
			cl.t.Fatalf("node %s: send %s: %v", p.name, cmd.Op, err)
		}
	}
	return cmd.ID
}

// collect waits for each node's reply (id, op).
func (cl *cluster) collect(nodes []*peer, id int64, op string, wait time.Duration) []reply {
	cl.t.Helper()
	replies := make([]reply, len(nodes))
	deadline := time.Now().Add(wait)
	for i, p := range nodes {
		replies[i] = cl.recv(p, id, op, time.Until(deadline))
	}
	return replies
}

// run sends cmd to nodes and waits for all their replies. A reply with Err
// fails the test: it means the command itself could not run.
func (cl *cluster) run(nodes []*peer, cmd command) []reply {
	cl.t.Helper()
	id := cl.post(nodes, cmd)
	replies := cl.collect(nodes, id, cmd.Op, cmd.Timeout+replySlack)
	for _, r := range replies {
		if r.Err != "" {
			cl.t.Fatalf("node %s: %s: %s", r.Node, cmd.Op, r.Err)
		}
	}
	return replies
}

// all is run on every node.
func (cl *cluster) all(cmd command) []reply { return cl.run(cl.nodes, cmd) }

// recv returns p's reply (id, op), failing the test if none comes in wait.
func (cl *cluster) recv(p *peer, id int64, op string, wait time.Duration) reply {
	cl.t.Helper()
	for i, r := range p.pending {
		if r.ID == id && r.Op == op {
			p.pending = slices.Delete(p.pending, i, i+1)
			return r
		}
	}
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	expired := false
	for {
		var (
			r  reply
			ok bool
		)
		if expired { // a last look at what already arrived
			select {
			case r, ok = <-p.out:
			default:
				cl.t.Fatalf("node %s: no %s reply within %v. stderr:\n%s", p.name, op, wait, p.stderrTail())
			}
		} else {
			select {
			case r, ok = <-p.out:
			case <-timer.C:
				expired = true
				continue
			}
		}
		if !ok {
			cl.t.Fatalf("node %s ended (%v) before its %s reply. stderr:\n%s", p.name, p.waitErr, op, p.stderrTail())
		}
		if r.ID == id && r.Op == op {
			return r
		}
		p.pending = append(p.pending, r)
	}
}

func (p *peer) stderrTail() string {
	if p.stderr == nil {
		return "(in-process)"
	}
	return p.stderr.Tail()
}

// calls flattens the callers of replies.
func calls(replies []reply) []call {
	var cs []call
	for _, r := range replies {
		cs = append(cs, r.Calls...)
	}
	return cs
}

// verdict summarises what callers got against the token they should all
// hold; problems lists what is wrong, empty when every caller got want with
// no error and within its ctx.
func verdict(cs []call, want string, timeout time.Duration) (problems []string) {
	var errs, others, late int
	var firstErr string
	var longest time.Duration
	distinct := map[string]bool{}
	for _, c := range cs {
		switch {
		case c.Err != "":
			errs++
			if firstErr == "" {
				firstErr = c.Err
			}
		case c.Token != want:
			others++
		}
		if c.Token != "" {
			distinct[c.Token] = true
		}
		if timeout > 0 && c.Wait >= timeout {
			late++
			longest = max(longest, c.Wait)
		}
	}
	if late > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d callers waited past their ctx of %v (the longest %v)", late, len(cs), timeout, longest))
	}
	if errs > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d callers failed, first: %s", errs, len(cs), firstErr))
	}
	if others > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d callers got a token other than %s (%d distinct tokens in all)",
			others, len(cs), secret.Redact(want), len(distinct)))
	}
	return problems
}

// waits returns the p50, p99 and max of the callers' waits.
func waits(cs []call) (p50, p99, top time.Duration) {
	if len(cs) == 0 {
		return 0, 0, 0
	}
	w := make([]time.Duration, len(cs))
	for i, c := range cs {
		w[i] = c.Wait
	}
	slices.Sort(w)
	at := func(q float64) time.Duration {
		return w[max(int(math.Ceil(q*float64(len(w))))-1, 0)]
	}
	return at(0.50), at(0.99), w[len(w)-1]
}

// latest is the latest expiry among the callers' tokens.
func latest(cs []call) time.Time {
	var t time.Time
	for _, c := range cs {
		if c.ExpiresAt.After(t) {
			t = c.ExpiresAt
		}
	}
	return t
}

// eventually polls cond every interval until it holds or the bound passes.
// The bound is a deadline for correctness, not a speed requirement.
func eventually(ctx context.Context, interval time.Duration, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(interval):
		}
	}
}

// grantsBetween counts a node's grants reported in [from, to].
func grantsBetween(ev events, from, to time.Time) int {
	n := 0
	for _, g := range ev.Granted {
		if !g.Before(from) && !g.After(to) {
			n++
		}
	}
	return n
}
