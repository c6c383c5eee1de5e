package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/testserver"
)

// TestClassify checks which errors ask for a reload, and which of those
// allow any command to be repeated. Server replies come from a real server
// (a script returning the error), so that they are typed as go-redis types
// them.
func TestClassify(t *testing.T) {
	srv := testserver.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	reply := func(msg string) error {
		err := c.Eval(ctx, "return redis.error_reply(ARGV[1])", nil, msg).Err()
		if err == nil {
			t.Fatalf("no error for %q", msg)
		}
		return err
	}
	miss := c.Get(ctx, "absent").Err()
	refused := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer refused.Close()
	dialErr := refused.Get(ctx, "k").Err()
	cctx, cancel := context.WithCancel(ctx)
	cancel()

	for _, tc := range []struct {
		name string
		err  error
		want failure
	}{
		{"nil", nil, healthy},
		{"miss", miss, healthy},
		{"wrong type", reply("WRONGTYPE Operation against a key holding the wrong kind of value"), healthy},
		{"script error", reply("ERR something in the script"), healthy},
		{"noscript", reply("NOSCRIPT No matching script"), healthy},
		{"cancelled", context.Canceled, healthy},
		{"cancelled call", c.Get(cctx, "k").Err(), healthy},
		{"closed client", redis.ErrClosed, healthy},
		{"clusterdown", reply("CLUSTERDOWN The cluster is down"), unsent},
		{"tryagain", reply("TRYAGAIN Multiple keys request during rehashing of slot"), unsent},
		{"masterdown", reply("MASTERDOWN Link with MASTER is down"), unsent},
		{"loading", reply("LOADING Redis is loading the dataset in memory"), unsent},
		{"readonly", reply("READONLY You can't write against a read only replica."), unsent},
		{"moved", reply("MOVED 3999 127.0.0.1:6381"), unsent},
		{"ask", reply("ASK 3999 127.0.0.1:6381"), unsent},
		{"untyped clusterdown", errors.New("CLUSTERDOWN Hash slot not served"), unsent},
		{"refused", dialErr, unsent},
		{"refused errno", fmt.Errorf("x: %w", syscall.ECONNREFUSED), unsent},
		{"no nodes", errors.New("redis: cluster has no nodes"), unsent},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, unsure},
		{"eof", io.EOF, unsure},
		{"deadline", context.DeadlineExceeded, unsure},
		{"timeout", &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, unsure},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("%s (%v): %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestReloadRateLimit checks that reload asks at most once per gap however
// many calls fail at once, and again once the gap has passed.
func TestReloadRateLimit(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, DialerRetries: 1})
	defer cc.Close()
	r := &reloader{cc: cc, gap: int64(time.Hour)}
	done := make(chan bool)
	for range 50 {
		go func() { done <- r.reload(context.Background()) }()
	}
	asked := 0
	for range 50 {
		if <-done {
			asked++
		}
	}
	if asked != 1 || r.n.Load() != 1 {
		t.Fatalf("50 concurrent failures asked for %d reloads (counted %d), want 1", asked, r.n.Load())
	}
	r.next.Store(0) // the gap has passed
	if !r.reload(context.Background()) || r.n.Load() != 2 {
		t.Fatalf("no reload after the gap: %d", r.n.Load())
	}
}
