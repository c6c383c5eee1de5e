package cluster

// The node: one member of the cluster under test, a conf.Conf over a shared
// store. It runs as a child process (the test binary re-executed with
// nodeEnv set, see TestMain), or inside the test process for bbolt, whose
// file only one process may open. Either way it obeys the same commands and
// answers with the same replies, so each suite is written once.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/integration/backends"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

// nodeEnv carries a node's spec (JSON) to a child process; its presence
// makes the test binary run as a node instead of running tests.
const nodeEnv = "WECHATCONF_CLUSTER_NODE"

// nodeSpec configures one node. Zero durations keep conf's defaults.
type nodeSpec struct {
	Name        string        `json:"name"`
	Namespace   string        `json:"namespace"`
	APIBase     string        `json:"api_base"`
	AppID       string        `json:"appid"`
	Secret      string        `json:"secret"`
	Margin      time.Duration `json:"margin,omitempty"`
	Reread      time.Duration `json:"reread,omitempty"`
	LeaseTTL    time.Duration `json:"lease_ttl,omitempty"`
	RefreshOnly bool          `json:"refresh_only,omitempty"`
	// NoSpread turns the refresh spread off, so that every node's copy
	// goes stale at the same instant (the herd).
	NoSpread bool `json:"no_spread,omitempty"`
	// CorpID makes the node a WeCom app (package wecom) of CorpID with
	// AgentID and Secret, instead of an Official Account.
	CorpID  string `json:"corp_id,omitempty"`
	AgentID int64  `json:"agent_id,omitempty"`
	// PrivateStore gives the node a store.NewMemory of its own instead of
	// the shared backend: a misconfigured deployment, for checking that a
	// suite notices one (every node then grants for itself).
	PrivateStore bool `json:"private_store,omitempty"`
}

// The commands a node obeys.
const (
	// opGet: Callers goroutines each call GetAccessToken once, all
	// released together; the reply has one call per caller.
	opGet = "get"
	// opGrant: one forced GrantAccessToken.
	opGrant = "grant"
	// opDo: Callers goroutines each call conf.Do with the protected WeChat
	// call. Each caller's first fn call blocks once it holds its token; when
	// all do, the node replies opHolding and waits for opRelease. The
	// final reply (op "do") lists every token fn was given.
	opDo      = "do"
	opHolding = "holding"
	opRelease = "release"
	// opLoad starts Callers goroutines calling GetAccessToken every Every,
	// until opUnload, whose reply carries the counts.
	opLoad   = "load"
	opUnload = "unload"
	// opFlood: Callers goroutines each, for Timeout, report the token
	// their node serves as rejected (Invalidate) as fast as they can; the
	// reply's Load counts the invalidations, the refused (limited) ones
	// and other errors.
	opFlood = "flood"
	// opReady is the node's first reply, once it is set up.
	opReady = "ready"
	opQuit  = "quit"
)

// command is one line the parent sends to a node.
type command struct {
	ID      int64         `json:"id"`
	Op      string        `json:"op"`
	Callers int           `json:"callers,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"` // each call's ctx
	Every   time.Duration `json:"every,omitempty"`   // opLoad: pause between calls
	// Protected makes each opLoad call a conf.Do with the protected WeChat
	// call (refreshed and retried once on a rejection) instead of a bare
	// GetAccessToken; an error is a call that failed after its retry.
	Protected bool `json:"protected,omitempty"`
}

// call is what one caller saw.
type call struct {
	Token     string        `json:"token,omitempty"`
	ExpiresAt time.Time     `json:"expires_at,omitzero"`
	Wait      time.Duration `json:"wait"` // how long the call took
	Err       string        `json:"err,omitempty"`
	// opDo: the token each call of fn was given, and the errcode the
	// protected call answered with it (-1: the call did not complete).
	Seen  []string `json:"seen,omitempty"`
	Codes []int    `json:"codes,omitempty"`
}

// loadStats counts the calls of an opLoad.
type loadStats struct {
	Calls  int `json:"calls"`
	Errors int `json:"errors"`
	// Expired counts calls that returned a token already past its expiry.
	Expired     int      `json:"expired"`
	FirstErrors []string `json:"first_errors,omitempty"`
	// Worst is the longest call.
	Worst time.Duration `json:"worst"`
	// Limited counts opFlood invalidations refused by the forced-refresh
	// limit (conf.ErrRefreshLimited); they are not errors.
	Limited int `json:"limited,omitempty"`
}

// events counts what the node's refresh engine reported (conf.WithObserver).
type events struct {
	Granted     []time.Time `json:"granted,omitempty"` // when each grant was reported
	GrantFailed int         `json:"grant_failed,omitempty"`
	Loaded      int         `json:"loaded,omitempty"`
	LeaseWaited int         `json:"lease_waited,omitempty"`
	Invalidated int         `json:"invalidated,omitempty"`
	StoreErrors int         `json:"store_errors,omitempty"`
}

// reply is one line a node sends back. ID and Op name the command it
// answers; every reply carries the engine's events so far.
type reply struct {
	ID     int64      `json:"id"`
	Op     string     `json:"op"`
	Node   string     `json:"node"`
	Err    string     `json:"err,omitempty"`
	Calls  []call     `json:"calls,omitempty"`
	Load   *loadStats `json:"load,omitempty"`
	Events events     `json:"events"`
}

// node runs commands against its Conf. handle never blocks for long: each
// command runs in a goroutine of its own and emits its reply when done.
// face is what the suites ask of a node's keeper of credentials: a
// conf.Conf for an Official Account, a wecom.App for WeCom.
type face interface {
	GetAccessToken(ctx context.Context) (store.Item, error)
	AccessToken(ctx context.Context) (string, error)
	Do(ctx context.Context, fn func(token string) error) error
	Close() error
}

type node struct {
	name  string
	c     face
	oa    *conf.Conf // nil for a WeCom node
	agent int64      // a WeCom node's AgentID
	api   string
	hc    *http.Client
	emit  func(reply)

	mu       sync.Mutex
	ev       events
	release  chan struct{} // the opDo barrier in progress
	stopLoad context.CancelFunc
	loadDone chan struct{}
	load     loadStats

	ops sync.WaitGroup // commands in progress
}

func newNode(spec nodeSpec, shared store.Store, emit func(reply)) (*node, error) {
	n := &node{name: spec.Name, api: spec.APIBase, hc: &http.Client{Timeout: 30 * time.Second}, emit: emit}
	st := shared
	if spec.PrivateStore {
		st = store.NewMemory()
	}
	if spec.CorpID != "" {
		return newWeComNode(n, spec, st)
	}
	opts := []conf.Option{
		conf.WithAppID(spec.AppID, spec.Secret),
		conf.WithStore(st),
		conf.WithBaseURLs(spec.APIBase),
		conf.WithObserver(n.observe),
	}
	if spec.Margin > 0 {
		opts = append(opts, conf.WithMargin(spec.Margin))
	}
	if spec.Reread > 0 {
		opts = append(opts, conf.WithReread(spec.Reread))
	}
	if spec.LeaseTTL > 0 {
		opts = append(opts, conf.WithLeaseTTL(spec.LeaseTTL))
	}
	if spec.RefreshOnly {
		opts = append(opts, conf.WithRefreshOnly())
	}
	if spec.NoSpread {
		opts = append(opts, conf.WithRefreshSpread(0))
	}
	c, err := conf.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", spec.Name, err)
	}
	n.c, n.oa = c, c
	return n, nil
}

// newWeComNode makes n a WeCom app.
func newWeComNode(n *node, spec nodeSpec, st store.Store) (*node, error) {
	pol := credential.Policy{Margin: spec.Margin, Reread: spec.Reread, LeaseTTL: spec.LeaseTTL}
	if spec.NoSpread {
		pol.Spread = -1
	}
	opts := []wecom.Option{
		wecom.WithStore(st), wecom.WithBaseURLs(spec.APIBase), wecom.WithPolicy(pol),
		wecom.WithObserver(func(e credential.Event) {
			if e.Name == wecom.AccessToken.String() {
				n.observe(conf.Event{Type: e.Type, Kind: conf.AccessToken})
			}
		}),
	}
	if spec.AgentID != 0 {
		opts = append(opts, wecom.WithAgentID(spec.AgentID))
	}
	a, err := wecom.New(spec.CorpID, spec.Secret, opts...)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", spec.Name, err)
	}
	n.c, n.agent = a, spec.AgentID
	return n, nil
}

// observe counts the engine's events; it runs synchronously inside conf, so
// it only takes the node's own lock briefly.
func (n *node) observe(e conf.Event) {
	if e.Kind != conf.AccessToken {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Type {
	case conf.EventGranted:
		n.ev.Granted = append(n.ev.Granted, time.Now())
	case conf.EventGrantFailed:
		n.ev.GrantFailed++
	case conf.EventLoaded:
		n.ev.Loaded++
	case conf.EventLeaseWaited:
		n.ev.LeaseWaited++
	case conf.EventInvalidated:
		n.ev.Invalidated++
	case conf.EventStoreError:
		n.ev.StoreErrors++
	}
}

// send emits r for cmd with the events so far.
func (n *node) send(cmd command, r reply) {
	n.mu.Lock()
	ev := n.ev
	ev.Granted = append([]time.Time(nil), n.ev.Granted...)
	n.mu.Unlock()
	r.ID, r.Node, r.Events = cmd.ID, n.name, ev
	if r.Op == "" {
		r.Op = cmd.Op
	}
	n.emit(r)
}

// handle starts cmd and reports whether the node goes on (false after
// opQuit, whose reply it has sent once everything stopped).
func (n *node) handle(cmd command) bool {
	switch cmd.Op {
	case opGet:
		n.ops.Go(func() { n.send(cmd, reply{Calls: n.gets(cmd)}) })
	case opGrant:
		n.ops.Go(func() { n.send(cmd, n.grant(cmd)) })
	case opDo:
		release := make(chan struct{})
		n.mu.Lock()
		n.release = release
		n.mu.Unlock()
		n.ops.Go(func() { n.send(cmd, reply{Calls: n.do(cmd, release)}) })
	case opRelease:
		n.mu.Lock()
		if n.release != nil {
			close(n.release)
			n.release = nil
		}
		n.mu.Unlock()
	case opLoad:
		n.startLoad(cmd)
		n.send(cmd, reply{})
	case opUnload:
		n.send(cmd, reply{Load: n.endLoad()})
	case opFlood:
		n.ops.Go(func() { n.send(cmd, reply{Load: n.flood(cmd)}) })
	case opQuit:
		n.shutdown()
		n.send(cmd, reply{})
		return false
	default:
		n.send(cmd, reply{Err: fmt.Sprintf("unknown op %q", cmd.Op)})
	}
	return true
}

// shutdown ends every command in progress and closes the Conf.
func (n *node) shutdown() {
	n.endLoad()
	n.mu.Lock()
	if n.release != nil {
		close(n.release)
		n.release = nil
	}
	n.mu.Unlock()
	n.c.Close() // ends every wait inside conf
	n.ops.Wait()
}

func callCtx(cmd command) (context.Context, context.CancelFunc) {
	d := cmd.Timeout
	if d <= 0 {
		d = time.Minute
	}
	return context.WithTimeout(context.Background(), d)
}

// gets runs cmd.Callers GetAccessToken calls released at once.
func (n *node) gets(cmd command) []call {
	calls := make([]call, max(cmd.Callers, 1))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			<-start
			ctx, cancel := callCtx(cmd)
			defer cancel()
			t0 := time.Now()
			item, err := n.c.GetAccessToken(ctx)
			calls[i] = call{Token: item.Value, ExpiresAt: item.ExpiresAt, Wait: time.Since(t0)}
			if err != nil {
				calls[i].Err = err.Error()
			}
		})
	}
	close(start)
	wg.Wait()
	return calls
}

func (n *node) grant(cmd command) reply {
	ctx, cancel := callCtx(cmd)
	defer cancel()
	t0 := time.Now()
	if n.oa == nil {
		return reply{Err: "grant: not an Official Account node"}
	}
	r, err := n.oa.GrantAccessToken(ctx)
	if err != nil {
		return reply{Err: err.Error()}
	}
	return reply{Calls: []call{{Token: r.AccessToken, Wait: time.Since(t0)}}}
}

// flood runs an opFlood.
func (n *node) flood(cmd command) *loadStats {
	var mu sync.Mutex
	var ls loadStats
	end := time.Now().Add(cmd.Timeout)
	var wg sync.WaitGroup
	for range max(cmd.Callers, 1) {
		wg.Go(func() {
			for time.Now().Before(end) {
				ctx, cancel := context.WithDeadline(context.Background(), end.Add(replyGrace))
				tok, err := n.c.AccessToken(ctx)
				if err == nil {
					if n.oa == nil {
						err = errors.New("flood: not an Official Account node")
					} else {
						_, err = n.oa.Invalidate(ctx, conf.AccessToken, tok)
					}
				}
				cancel()
				mu.Lock()
				ls.Calls++
				switch {
				case errors.Is(err, conf.ErrRefreshLimited):
					ls.Limited++
				case err != nil:
					ls.Errors++
					if len(ls.FirstErrors) < 5 {
						ls.FirstErrors = append(ls.FirstErrors, err.Error())
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return &ls
}

// replyGrace: a flood's last call may run this long past the flood's end.
const replyGrace = 10 * time.Second

// do runs cmd.Callers conf.Do calls with the protected call, holding each
// caller's first fn call at the barrier until release is closed.
func (n *node) do(cmd command, release <-chan struct{}) []call {
	calls := make([]call, max(cmd.Callers, 1))
	var holding, wg sync.WaitGroup
	holding.Add(len(calls))
	for i := range calls {
		wg.Go(func() {
			ctx, cancel := callCtx(cmd)
			defer cancel()
			c := &calls[i]
			held := false
			t0 := time.Now()
			err := n.c.Do(ctx, func(tok string) error {
				c.Seen = append(c.Seen, tok)
				if !held {
					held = true
					holding.Done()
					select {
					case <-release:
					case <-ctx.Done():
						c.Codes = append(c.Codes, -1)
						return ctx.Err()
					}
				}
				code, err := n.protected(ctx, tok)
				c.Codes = append(c.Codes, code)
				return err
			})
			if !held { // Do failed before calling fn: do not stall the barrier
				holding.Done()
			}
			c.Wait = time.Since(t0)
			if err != nil {
				c.Err = err.Error()
			}
		})
	}
	n.ops.Go(func() {
		holding.Wait()
		n.send(cmd, reply{Op: opHolding})
	})
	wg.Wait()
	return calls
}

// protected makes WeChat's protected call with tok and returns its errcode;
// an errcode becomes a *conf.APIError, which conf.Do recognises.
func (n *node) protected(ctx context.Context, tok string) (int, error) {
	path := wechattest.PathCallbackIP
	u := n.api + path + "?access_token=" + url.QueryEscape(tok)
	if n.oa == nil { // WeCom: the app's own agent/get (301002 for another app's token)
		path = wechattest.PathWeComAgentGet
		u = n.api + path + "?access_token=" + url.QueryEscape(tok) + "&agentid=" + strconv.FormatInt(n.agent, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return -1, fmt.Errorf("protected call: %w", err)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL holds the token: keep it out of the error
		}
		return -1, fmt.Errorf("protected call: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return -1, fmt.Errorf("protected call: HTTP %d: decode: %w", resp.StatusCode, err)
	}
	if body.Errcode != 0 {
		e := &conf.APIError{Endpoint: path, Code: body.Errcode, Msg: body.Errmsg}
		if n.oa == nil {
			e.Platform = wecom.Platform
		}
		return body.Errcode, e
	}
	return 0, nil
}

// startLoad starts the callers of an opLoad.
func (n *node) startLoad(cmd command) {
	n.endLoad()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.mu.Lock()
	n.stopLoad, n.loadDone, n.load = cancel, done, loadStats{}
	n.mu.Unlock()
	var wg sync.WaitGroup
	for range max(cmd.Callers, 1) {
		wg.Go(func() {
			t := time.NewTimer(0)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				// A call in progress finishes even when the load ends.
				cctx, ccancel := callCtx(cmd)
				began := time.Now()
				var item store.Item
				var err error
				if cmd.Protected {
					err = n.c.Do(cctx, func(tok string) error {
						_, err := n.protected(cctx, tok)
						return err
					})
					item.ExpiresAt = time.Now().Add(time.Hour) // not checked: WeChat accepted it
				} else {
					item, err = n.c.GetAccessToken(cctx)
				}
				now := time.Now()
				ccancel()
				n.mu.Lock()
				n.load.Calls++
				n.load.Worst = max(n.load.Worst, now.Sub(began))
				switch {
				case err != nil:
					n.load.Errors++
					if len(n.load.FirstErrors) < 5 {
						n.load.FirstErrors = append(n.load.FirstErrors, now.Format(time.TimeOnly)+" "+err.Error())
					}
				case !now.Before(item.ExpiresAt):
					n.load.Expired++
				}
				n.mu.Unlock()
				t.Reset(cmd.Every)
			}
		})
	}
	go func() {
		wg.Wait()
		close(done)
	}()
}

// endLoad stops the load in progress, if any, and returns its counts.
func (n *node) endLoad() *loadStats {
	n.mu.Lock()
	stop, done := n.stopLoad, n.loadDone
	n.stopLoad, n.loadDone = nil, nil
	n.mu.Unlock()
	if stop == nil {
		return &loadStats{}
	}
	stop()
	<-done
	n.mu.Lock()
	defer n.mu.Unlock()
	ls := n.load
	ls.FirstErrors = append([]string(nil), n.load.FirstErrors...)
	return &ls
}

// nodeMain runs this process as a node: the spec comes from nodeEnv, the
// backend from backends.FromEnv; commands are JSON lines on stdin, replies
// JSON lines on stdout. It returns the exit status.
func nodeMain(specJSON string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "cluster node: "+format+"\n", args...)
		return 2
	}
	var spec nodeSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail("bad %s: %v", nodeEnv, err)
	}
	kind, target, err := backends.FromEnv()
	if err != nil {
		return fail("%s: %v", spec.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	st, closeStore, err := backends.OpenTarget(ctx, kind, target, spec.Namespace)
	cancel()
	if err != nil {
		return fail("%s: %v", spec.Name, err)
	}
	defer closeStore()

	var outMu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	emit := func(r reply) {
		outMu.Lock()
		defer outMu.Unlock()
		if err := out.Encode(r); err != nil {
			fmt.Fprintf(os.Stderr, "cluster node %s: write reply: %v\n", spec.Name, err)
		}
	}
	n, err := newNode(spec, st, emit)
	if err != nil {
		return fail("%v", err)
	}
	n.send(command{Op: opReady}, reply{})

	in := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var cmd command
		if err := in.Decode(&cmd); err != nil {
			// The parent went away (or wrote garbage): stop cleanly.
			n.shutdown()
			if errors.Is(err, io.EOF) {
				return 0
			}
			return fail("%s: read command: %v", spec.Name, err)
		}
		if !n.handle(cmd) {
			return 0
		}
	}
}
