package redisstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultReloadGap is the least time between two cluster-state reloads that
// a Store asks its ClusterClient for after failed calls, unless
// WithFailoverReload says otherwise.
const DefaultReloadGap = 500 * time.Millisecond

// retryWait bounds how long a failed call waits for the reload it asked for
// to move the key's slot to another node before it is repeated. Only calls
// that already failed wait; successful calls never do.
const retryWait = 300 * time.Millisecond

// retryTick is how often a waiting call looks at the client's slot map.
const retryTick = 10 * time.Millisecond

// WithFailoverReload sets the least time between two reloads of the cluster
// state that the Store asks for (ClusterClient.ReloadState) when a call on a
// *redis.ClusterClient fails as calls to a dead node do: DefaultReloadGap
// (500 ms) unless set. A negative gap turns the reloads off, and with them
// the repeat of failed calls: the Store then recovers from a failover only
// when go-redis reloads on its own (ClusterOptions.ClusterStateReloadInterval,
// 60 s by default). It has no effect on other clients.
func WithFailoverReload(gap time.Duration) Option {
	return func(c *config) { c.fo = failoverConfig{gap: gap, set: true} }
}

// failoverConfig is what the options said about failover, kept in config
// until New wraps the client.
type failoverConfig struct {
	gap time.Duration
	set bool
}

// wrap returns c as the Store should use it: a *redis.ClusterClient
// (including one from redis.NewFailoverClusterClient) gets reloads on
// failure and one repeat of failed calls; any other client is returned as
// it is.
func (f failoverConfig) wrap(c redis.UniversalClient) redis.UniversalClient {
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		return c
	}
	gap := f.gap
	if !f.set {
		gap = DefaultReloadGap
	}
	if gap < 0 {
		return c
	}
	return &clusterClient{UniversalClient: c, cc: cc, r: &reloader{cc: cc, gap: int64(gap)}}
}

// epoch is the origin of reloader's monotonic clock.
var epoch = time.Now()

// reloader asks a ClusterClient to reload its state at most once per gap.
type reloader struct {
	cc   *redis.ClusterClient
	gap  int64        // nanoseconds
	next atomic.Int64 // earliest time of the next reload, ns since epoch
	n    atomic.Int64 // reloads asked for
}

// reload asks for a state reload unless one was asked for less than gap
// ago, and says whether it did. It never blocks: go-redis reloads in a
// goroutine of its own, which ends when the reload is done, and merges
// requests that arrive meanwhile.
func (r *reloader) reload(ctx context.Context) bool {
	now := int64(time.Since(epoch))
	next := r.next.Load()
	if now < next || !r.next.CompareAndSwap(next, now+r.gap) {
		return false
	}
	r.n.Add(1)
	r.cc.ReloadState(ctx)
	return true
}

// failure is what an error says about a call to a cluster node.
type failure int

const (
	// healthy: no error, a miss (redis.Nil), an error of the command
	// itself, or one of the caller's making (cancelled context, closed
	// client). Nothing to do.
	healthy failure = iota
	// unsure: the node may be gone (connection reset, EOF, timeout), and
	// the command may or may not have run.
	unsure
	// unsent: the command certainly did not run: the connection could not
	// be made, or the node refused it without running it (CLUSTERDOWN,
	// TRYAGAIN, MASTERDOWN, LOADING, READONLY, or a MOVED or ASK that
	// go-redis did not follow because MaxRedirects ran out).
	unsent
)

// classify says whether err is the kind of error calls to a failed or
// moved cluster node end with.
func classify(err error) failure {
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.Is(err, redis.ErrClosed),
		errors.Is(err, context.Canceled):
		return healthy
	case redis.IsClusterDownError(err), redis.IsTryAgainError(err), redis.IsMasterDownError(err),
		redis.IsLoadingError(err), redis.IsReadOnlyError(err):
		return unsent
	}
	if _, ok := redis.IsMovedError(err); ok {
		return unsent
	}
	if _, ok := redis.IsAskError(err); ok {
		return unsent
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" || errors.Is(err, syscall.ECONNREFUSED) {
		return unsent
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return unsure
	}
	s := err.Error()
	// Replies go-redis did not type (it types them when it reads them).
	for _, p := range []string{"CLUSTERDOWN ", "TRYAGAIN ", "MASTERDOWN ", "LOADING ", "READONLY ", "MOVED ", "ASK "} {
		if strings.HasPrefix(s, p) {
			return unsent
		}
	}
	// go-redis's own words when no node could be reached or a
	// FailoverClusterClient could reach no sentinel.
	if strings.Contains(s, "cluster has no nodes") || strings.Contains(s, "sentinels specified in configuration are unreachable") {
		return unsent
	}
	return healthy
}

// clusterClient is the ClusterClient a Store talks through. The commands
// the Store sends (GET, SET NX and its scripts) are overridden so that a
// failure that looks like a dead or moved node asks for a state reload and,
// when the reload soon sends the key's slot elsewhere, repeats the command
// once; every other method is the ClusterClient's own.
//
// A repeat never has an effect the first attempt could not have had: GET
// reads; SET NX of a random owner is checked (the first attempt may have
// taken the lease before its answer was lost); a script is repeated only
// when it certainly did not run.
type clusterClient struct {
	redis.UniversalClient
	cc *redis.ClusterClient
	r  *reloader
}

// master is the client for the node that serves key's slot in the current
// slot map, or nil. It does no I/O once the map is loaded.
func (c *clusterClient) master(ctx context.Context, key string) *redis.Client {
	m, err := c.cc.MasterForKey(ctx, key)
	if err != nil {
		return nil
	}
	return m
}

// again is called after a command on key failed with err, having been sent
// to before (the slot's master when it started). It asks for a reload and
// reports whether to repeat the command: only when the failure is one of
// those allowed (unsure counts only when anyUnsure), ctx leaves time, and
// the slot map names another master for key within retryWait.
func (c *clusterClient) again(ctx context.Context, key string, before *redis.Client, err error, anyUnsure bool) bool {
	f := classify(err)
	if f == healthy {
		return false
	}
	c.r.reload(ctx)
	if f == unsure && !anyUnsure || ctx.Err() != nil {
		return false
	}
	wait := retryWait
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) / 2; left < wait {
			wait = left
		}
	}
	if wait < retryTick {
		return false
	}
	if m := c.master(ctx, key); m != nil && m != before {
		return true
	}
	tick := time.NewTicker(retryTick)
	defer tick.Stop()
	end := time.NewTimer(wait)
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-end.C:
			return false
		case <-tick.C:
			if m := c.master(ctx, key); m != nil && m != before {
				return true
			}
		}
	}
}

// Get is GET, repeated once after a failover.
func (c *clusterClient) Get(ctx context.Context, key string) *redis.StringCmd {
	before := c.master(ctx, key)
	cmd := c.UniversalClient.Get(ctx, key)
	if c.again(ctx, key, before, cmd.Err(), true) {
		cmd = c.UniversalClient.Get(ctx, key)
	}
	return cmd
}

// SetNX is SET NX, repeated once after a failover. When the repeat finds
// the key taken, and value is a string, the key is read: if it holds value,
// the first attempt set it and the caller holds it.
func (c *clusterClient) SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd {
	before := c.master(ctx, key)
	cmd := c.UniversalClient.SetNX(ctx, key, value, expiration)
	if !c.again(ctx, key, before, cmd.Err(), true) {
		return cmd
	}
	cmd = c.UniversalClient.SetNX(ctx, key, value, expiration)
	if v, ok := value.(string); ok && cmd.Err() == nil && !cmd.Val() {
		if got, err := c.UniversalClient.Get(ctx, key).Result(); err == nil && got == v {
			return redis.NewBoolResult(true, nil)
		}
	}
	return cmd
}

// script runs a script command and repeats it once after a failover, only
// when it certainly did not run.
func (c *clusterClient) script(ctx context.Context, keys []string, run func() *redis.Cmd) *redis.Cmd {
	if len(keys) == 0 {
		return run()
	}
	before := c.master(ctx, keys[0])
	cmd := run()
	if c.again(ctx, keys[0], before, cmd.Err(), false) {
		cmd = run()
	}
	return cmd
}

// Eval is EVAL, repeated once after a failover if it did not run.
func (c *clusterClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.script(ctx, keys, func() *redis.Cmd { return c.UniversalClient.Eval(ctx, script, keys, args...) })
}

// EvalSha is EVALSHA, repeated once after a failover if it did not run.
func (c *clusterClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.script(ctx, keys, func() *redis.Cmd { return c.UniversalClient.EvalSha(ctx, sha1, keys, args...) })
}

// EvalRO is EVAL_RO, repeated once after a failover if it did not run.
func (c *clusterClient) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.script(ctx, keys, func() *redis.Cmd { return c.UniversalClient.EvalRO(ctx, script, keys, args...) })
}

// EvalShaRO is EVALSHA_RO, repeated once after a failover if it did not run.
func (c *clusterClient) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.script(ctx, keys, func() *redis.Cmd { return c.UniversalClient.EvalShaRO(ctx, sha1, keys, args...) })
}
