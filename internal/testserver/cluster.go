package testserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the cluster-node-timeout of the clusters that
// RedisCluster starts: a master unreachable for this long is marked failed
// and its replica elected in its place, within a few seconds rather than the
// 15 s of Redis's default.
const ClusterNodeTimeout = 1000 * time.Millisecond

// SentinelDownAfter is the down-after-milliseconds of the Sentinel setups
// that RedisSentinel starts.
const SentinelDownAfter = 1000 * time.Millisecond

// setupTimeout bounds the wait for a cluster or Sentinel setup to settle.
const setupTimeout = 60 * time.Second

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// lowPort returns a loopback port that nothing listens on, below the
// kernel's ephemeral range (32768 and up on Linux), so that no outgoing
// connection takes it before the server binds it. Cluster nodes need two
// ports each (clients and the cluster bus), many at once. Ports handed out
// by this process are never handed out again.
func lowPort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		p := 20000 + rand.IntN(12000)
		if portsUsed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsUsed[p] = true
		return p
	}
	t.Fatal("testserver: no free port below 32000")
	return 0
}

// redisBinary returns the path of redis-server, or fails or skips the test.
func redisBinary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missing(t, "redis-server", "redis-server")
	}
	return bin
}

// client returns a go-redis client for one server, closed by t.Cleanup. It
// does not retry: the helpers below poll on their own.
func client(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return c
}

// poll calls f every 50 ms until it returns nil or timeout has passed, then
// fails the test with what f last said.
func poll(t testing.TB, what string, timeout time.Duration, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testserver: %s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cluster is a running Redis Cluster of three masters with one replica each,
// on loopback ports, with a cluster-node-timeout of ClusterNodeTimeout.
type Cluster struct {
	// Nodes are the six servers, masters and replicas alike; which is
	// which changes on failover (see Master).
	Nodes []*Server

	t testing.TB
}

// RedisCluster starts six cluster-mode redis-server processes, creates a
// cluster of them with redis-cli --cluster create (three masters, one
// replica each) and returns once every node sees all slots served and every
// replica is in sync with its master, so that any master can be failed over.
// The processes are killed by t.Cleanup.
//
// Replicas may fail over whatever the age of their data
// (cluster-replica-validity-factor 0): a test's replica has always just
// synced.
func RedisCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := redisBinary(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		missing(t, "redis-cli", "redis-tools")
	}
	c := &Cluster{t: t}
	var addrs []string
	for i := range 6 {
		port, bus := lowPort(t), lowPort(t)
		dir := filepath.Join(t.TempDir(), strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("testserver: %v", err)
		}
		args := []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout / time.Millisecond)),
			"--cluster-replica-validity-factor", "0",
			"--save", "", "--appendonly", "no", "--dir", dir,
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c.Nodes = append(c.Nodes, start(t, bin, args, nil, dir, addr, nil))
		addrs = append(addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testserver: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		rc := client(t, n.Addr)
		poll(t, "cluster state ok on "+n.Addr, setupTimeout, func(ctx context.Context) error {
			info, err := rc.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:6") ||
				!strings.Contains(info, "cluster_slots_assigned:16384") {
				return fmt.Errorf("CLUSTER INFO: %s", info)
			}
			repl, err := rc.Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return fmt.Errorf("replica not in sync: %s", repl)
			}
			return nil
		})
	}
	// Every node must know each master's replica before a failover can
	// elect it.
	poll(t, "a replica for every master", setupTimeout, func(ctx context.Context) error {
		for _, n := range c.Nodes {
			nodes, err := c.nodes(ctx, n.Addr)
			if err != nil {
				return err
			}
			masters := 0
			for _, m := range nodes {
				if !m.has("master") || len(m.slots) == 0 {
					continue
				}
				masters++
				if len(replicasOf(nodes, m.id)) == 0 {
					return fmt.Errorf("%s: master %s has no replica", n.Addr, m.addr)
				}
			}
			if masters != 3 {
				return fmt.Errorf("%s: %d masters serve slots, want 3", n.Addr, masters)
			}
		}
		return nil
	})
	return c
}

// Addrs returns the addresses of all nodes, for redis.ClusterOptions.Addrs.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, n := range c.Nodes {
		a = append(a, n.Addr)
	}
	return a
}

// Node returns the server listening on addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, masterID string
	flags              []string
	slots              [][2]int
}

func (n *clusterNode) has(flag string) bool {
	for _, f := range n.flags {
		if f == flag {
			return true
		}
	}
	return false
}

// nodes asks the node at addr for its view of the cluster.
func (c *Cluster) nodes(ctx context.Context, addr string) ([]*clusterNode, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, DialerRetries: 1})
	defer rc.Close()
	txt, err := rc.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []*clusterNode
	for _, line := range strings.Split(strings.TrimSpace(txt), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		n := &clusterNode{id: f[0], flags: strings.Split(f[2], ","), masterID: f[3]}
		n.addr, _, _ = strings.Cut(f[1], "@")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being imported or migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("CLUSTER NODES slots %q", r)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		out = append(out, n)
	}
	return out, nil
}

// owner returns the healthy master that serves slot in nodes, or nil.
func owner(nodes []*clusterNode, slot int) *clusterNode {
	for _, n := range nodes {
		if !n.has("master") || n.has("fail") || n.has("fail?") {
			continue
		}
		for _, r := range n.slots {
			if r[0] <= slot && slot <= r[1] {
				return n
			}
		}
	}
	return nil
}

func replicasOf(nodes []*clusterNode, id string) []*clusterNode {
	var r []*clusterNode
	for _, n := range nodes {
		if n.masterID == id && !n.has("fail") {
			r = append(r, n)
		}
	}
	return r
}

// Master returns the node that serves slot as a healthy master, as a live
// node other than except sees the cluster (pass nil to ask any). It fails
// the test if no live node names one.
func (c *Cluster) Master(slot int, except *Server) *Server {
	c.t.Helper()
	var m *Server
	poll(c.t, fmt.Sprintf("master of slot %d", slot), setupTimeout, func(ctx context.Context) error {
		var err error
		m, err = c.master(ctx, slot, except)
		return err
	})
	return m
}

func (c *Cluster) master(ctx context.Context, slot int, except *Server) (*Server, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if n == except {
			continue
		}
		nodes, err := c.nodes(ctx, n.Addr)
		if err != nil {
			lastErr = err
			continue
		}
		o := owner(nodes, slot)
		if o == nil {
			return nil, fmt.Errorf("%s sees no healthy master for slot %d", n.Addr, slot)
		}
		s := c.Node(o.addr)
		if s == nil {
			return nil, fmt.Errorf("unknown node %s", o.addr)
		}
		return s, nil
	}
	return nil, fmt.Errorf("no live node answers: %v", lastErr)
}

// WaitPromotion waits, up to timeout, until a live node other than old
// reports another node as the healthy master serving slot, and returns that
// node: the replica the cluster promoted after old failed.
func (c *Cluster) WaitPromotion(slot int, old *Server, timeout time.Duration) *Server {
	c.t.Helper()
	var m *Server
	poll(c.t, fmt.Sprintf("promotion of a new master for slot %d", slot), timeout, func(ctx context.Context) error {
		var err error
		m, err = c.master(ctx, slot, old)
		if err == nil && m == old {
			err = fmt.Errorf("%s still serves slot %d", old.Addr, slot)
		}
		return err
	})
	return m
}

// Sentinel is a running Sentinel setup: one master, one replica and three
// sentinels watching them under MasterName, with a down-after-milliseconds
// of SentinelDownAfter.
type Sentinel struct {
	// MasterName is the name the sentinels monitor the master under.
	MasterName string
	// Master and Replica are the data servers as started; after a
	// failover their roles are swapped.
	Master, Replica *Server
	// Sentinels are the three sentinel processes.
	Sentinels []*Server

	t testing.TB
}

// RedisSentinel starts a master, its replica and three sentinels (quorum
// two) from redis-server, and returns once every sentinel knows the replica
// and the other two sentinels, so that a failover can be agreed on at once.
// The processes are killed by t.Cleanup.
func RedisSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin := redisBinary(t)
	s := &Sentinel{MasterName: "wechatconf", t: t}
	data := func(extra ...string) *Server {
		port := lowPort(t)
		dir := t.TempDir()
		args := append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
		}, extra...)
		return start(t, bin, args, nil, dir, fmt.Sprintf("127.0.0.1:%d", port), nil)
	}
	s.Master = data()
	mhost, mport, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = data("--replicaof", mhost, mport)
	rc := client(t, s.Replica.Addr)
	poll(t, "replica in sync", setupTimeout, func(ctx context.Context) error {
		repl, err := rc.Info(ctx, "replication").Result()
		if err == nil && !strings.Contains(repl, "master_link_status:up") {
			err = fmt.Errorf("INFO replication: %s", repl)
		}
		return err
	})
	for range 3 {
		port := lowPort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf(`port %[1]d
bind 127.0.0.1
dir %[2]s
sentinel monitor %[3]s %[4]s %[5]s 2
sentinel down-after-milliseconds %[3]s %[6]d
sentinel failover-timeout %[3]s 3000
sentinel parallel-syncs %[3]s 1
`, port, dir, s.MasterName, mhost, mport, int(SentinelDownAfter/time.Millisecond))
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatalf("testserver: %v", err)
		}
		args := []string{conf, "--sentinel"}
		s.Sentinels = append(s.Sentinels, start(t, bin, args, nil, dir, fmt.Sprintf("127.0.0.1:%d", port), nil))
	}
	for _, sn := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { sc.Close() })
		poll(t, "sentinel "+sn.Addr+" knows the replica and its peers", setupTimeout, func(ctx context.Context) error {
			reps, err := sc.Replicas(ctx, s.MasterName).Result()
			if err != nil {
				return err
			}
			ok := false
			for _, r := range reps {
				if r["name"] == s.Replica.Addr && !strings.Contains(r["flags"], "disconnected") &&
					r["master-link-status"] == "ok" {
					ok = true
				}
			}
			if !ok {
				return fmt.Errorf("SENTINEL REPLICAS: %v", reps)
			}
			peers, err := sc.Sentinels(ctx, s.MasterName).Result()
			if err != nil {
				return err
			}
			if len(peers) != 2 {
				return fmt.Errorf("SENTINEL SENTINELS: %d peers, want 2", len(peers))
			}
			return nil
		})
	}
	return s
}

// SentinelAddrs returns the sentinels' addresses, for
// redis.FailoverOptions.SentinelAddrs.
func (s *Sentinel) SentinelAddrs() []string {
	var a []string
	for _, sn := range s.Sentinels {
		a = append(a, sn.Addr)
	}
	return a
}

// WaitPromotion waits, up to timeout, until the replica reports itself a
// master and a sentinel names it as the master (it has published
// +switch-master), after the master was stopped.
func (s *Sentinel) WaitPromotion(timeout time.Duration) {
	s.t.Helper()
	rc := client(s.t, s.Replica.Addr)
	poll(s.t, "sentinel failover", timeout, func(ctx context.Context) error {
		repl, err := rc.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(repl, "role:master") {
			return fmt.Errorf("replica %s not promoted yet", s.Replica.Addr)
		}
		var lastErr error
		for _, sn := range s.Sentinels {
			sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, MaxRetries: -1, DialTimeout: time.Second})
			a, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
			sc.Close()
			if err == nil && len(a) == 2 && net.JoinHostPort(a[0], a[1]) == s.Replica.Addr {
				return nil
			}
			lastErr = fmt.Errorf("sentinel %s: master %v, %v", sn.Addr, a, err)
		}
		return lastErr
	})
}
