package silenceper_test

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/adapters/silenceper"
	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store/redisstore"
	"github.com/wechatconf/wechatconf/wechattest"
)

// A child process runs as a node when these are set (see TestMain).
const (
	envNode  = "SILENCEPER_ADAPTER_NODE"
	envFake  = "SILENCEPER_ADAPTER_FAKE"
	envRedis = "SILENCEPER_ADAPTER_REDIS"
)

// Token lifetime and margin of the process test: a copy goes stale 2 s
// after its grant.
const (
	procLife   = 4 * time.Second
	procMargin = 2 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(envNode) != "" {
		os.Exit(runNode())
	}
	os.Exit(m.Run())
}

// runNode is one node process: a Conf on the shared Redis, a Handle, a
// silenceper OfficialAccount on it and Transport in util.DefaultHTTPClient,
// exactly as a production node would be set up. For each "go" line on
// stdin, it runs goroutines callers of GetCallbackIP and GetConfig at once
// and answers "done <failures> <first error>".
func runNode() int {
	fail := func(err error) int { fmt.Println("fatal", err); return 1 }
	rc := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedis)})
	defer rc.Close()
	st, err := redisstore.New(rc)
	if err != nil {
		return fail(err)
	}
	fake := os.Getenv(envFake)
	c, err := conf.New(
		conf.WithAppID(appID, secret),
		conf.WithStore(st),
		conf.WithBaseURLs(fake),
		conf.WithMargin(procMargin),
		conf.WithRefreshSpread(0),
	)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	h := silenceper.New(c)
	oa := adapted(h)
	u, err := url.Parse(fake)
	if err != nil {
		return fail(err)
	}
	restore := swapClient(silenceper.Transport(toFake{base: u}, h))
	defer restore()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "go" {
			continue
		}
		var (
			mu    sync.Mutex
			fails int
			first string
			wg    sync.WaitGroup
		)
		for range goroutines {
			wg.Go(func() {
				if err := callAndSign(oa); err != nil {
					mu.Lock()
					if fails == 0 {
						first = strings.ReplaceAll(err.Error(), "\n", " ")
					}
					fails++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		fmt.Printf("done %d %s\n", fails, first)
	}
	return 0
}

// proc is a node process seen from the parent.
type proc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startProc(t *testing.T, fake, redisAddr string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envNode+"=1", envFake+"="+fake, envRedis+"="+redisAddr)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// round tells every process to run its callers at once and returns their
// answers.
func round(t *testing.T, procs []*proc) {
	t.Helper()
	for _, p := range procs {
		if _, err := io.WriteString(p.in, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range procs {
		if !p.out.Scan() {
			t.Fatalf("node %d: no answer: %v", i, p.out.Err())
		}
		line := p.out.Text()
		if line != "done 0 " {
			t.Fatalf("node %d: %s", i, line)
		}
	}
}

// TestProcessesOneGrantPerCycle: 4 node processes (the test binary run
// again) on one Redis, each with 8 goroutines calling silenceper's
// GetBasic().GetCallbackIP() and GetJs().GetConfig() through the adapter:
// exactly one token and one ticket grant per cycle in total over 3 cycles;
// then WeChat revokes the token, and the next round, which meets 40001 in
// every process, makes one grant in total and every call works.
func TestProcessesOneGrantPerCycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and redis-server")
	}
	rs := testserver.Redis(t)
	srv := wechattest.NewServer(wechattest.WithTokenTTL(procLife), wechattest.WithTicketTTL(procLife))
	t.Cleanup(srv.Close)
	var procs []*proc
	for range nodes {
		procs = append(procs, startProc(t, srv.URL(), rs.Addr))
	}

	const cycles = 3
	for cycle := range cycles {
		before := srv.Stats()
		round(t, procs)
		after := srv.Stats()
		tokens, tickets := after.TokenGrants-before.TokenGrants, after.JSAPITickets-before.JSAPITickets
		t.Logf("cycle %d: %d token grant(s), %d ticket grant(s) for %d processes × %d callers", cycle, tokens, tickets, nodes, goroutines)
		if tokens != 1 || tickets != 1 {
			t.Fatalf("cycle %d: %d token and %d ticket grants, want 1 and 1", cycle, tokens, tickets)
		}
		if cycle < cycles-1 {
			time.Sleep(procMargin + 200*time.Millisecond)
		}
	}

	// Revocation, inside the token's life: the copies are fresh, so every
	// process first sends the revoked token.
	before := srv.Stats()
	srv.Revoke(appID)
	round(t, procs)
	after := srv.Stats()
	t.Logf("after Revoke: %d rejection(s), %d grant(s)", after.Rejections-before.Rejections, after.TokenGrants-before.TokenGrants)
	if g := after.TokenGrants - before.TokenGrants; g != 1 {
		t.Fatalf("%d grants after the revocation, want 1", g)
	}
	if after.Rejections == before.Rejections {
		t.Fatal("no call met the revoked token: the test proves nothing")
	}
}
