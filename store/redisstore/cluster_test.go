package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

// startClusterNode runs redis-server in cluster mode as a one-node cluster
// that owns all 16384 slots, and returns its address. testserver does not
// start cluster nodes, so this test does it itself, with the same rule:
// a missing binary skips, except under CI=true.
func startClusterNode(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found; install Debian's redis-server package"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf",
		"--save", "", "--appendonly", "no", "--dir", dir)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for c.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("cluster node did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster state not ok: %q, %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOneNodeCluster runs the store through a ClusterClient against a real
// cluster-mode server: the scripts must declare their keys, and the item and
// its lease must hash to the app's slot (checked against CLUSTER KEYSLOT).
// Slot migration between nodes is out of scope here.
func TestOneNodeCluster(t *testing.T) {
	addr := startClusterNode(t)
	ctx := context.Background()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	defer c.Close()
	const p = "wechatconf:"
	s := redisstore.MustNew(t, c, redisstore.WithPrefix(p))

	for _, k := range []string{p + key, p + key + ":lock"} {
		got, err := c.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got != int64(slot(k)) || got != int64(slot("wx123")) {
			t.Fatalf("CLUSTER KEYSLOT %q = %d; computed %d, app slot %d", k, got, slot(k), slot("wx123"))
		}
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx, key)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	it := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(ctx, key, it); err != nil {
		t.Fatalf("Set: %v", err)
	}
	receive(t, ch, "Set through a ClusterClient")
	if err := s.Set(ctx, key, store.Item{Value: "older", ExpiresAt: it.ExpiresAt.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, key); err != nil || got.Value != "v" {
		t.Fatalf("Get = %v, %v; want v", got, err)
	}
	if err := l.(store.Extender).Extend(ctx, time.Minute); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	l2, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	l2.Unlock(ctx)
}
