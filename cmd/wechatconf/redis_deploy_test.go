package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisProc runs redis-server with args (a config file first, if any) and
// waits until addr answers PING (with password, if set). A missing binary
// skips, except under CI=true.
func redisProc(t *testing.T, addr, password string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found")
		}
		t.Skip("redis-server not found; install Debian's redis-server package")
	}
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	t.Cleanup(stop)
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password})
	defer c.Close()
	if !waitFor(func() bool { return c.Ping(context.Background()).Err() == nil }) {
		stop() // out is ours once the process is gone
		t.Fatalf("redis-server at %s did not answer:\n%s", addr, out.String())
	}
}

// waitFor polls ok for up to 30 s.
func waitFor(ok func() bool) bool {
	for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// tokenTwice runs token twice on store: both print the fake's token, and
// only the first grants.
func tokenTwice(t *testing.T, store string) {
	t.Helper()
	fake := newFake(t)
	args := []string{"token", "--appid", appID, "--secret-file", writeFile(t, "secret", secret), "--store", store, "--api-base", fake.URL(), "--timeout", "30s"}
	for i := range 2 {
		r := runIn(t, nil, args...)
		if r.code != 0 || r.stdout != fake.CurrentToken(appID)+"\n" {
			t.Fatalf("run %d: exit %d, stdout %q, stderr %q", i+1, r.code, r.stdout, r.stderr)
		}
		if strings.Contains(r.stderr, storePassword) {
			t.Fatalf("stderr shows the password: %q", r.stderr)
		}
	}
	if n := fake.Stats().TokenGrants; n != 1 {
		t.Errorf("%d grants, want 1 (the store is shared)", n)
	}
}

// redis+cluster:// builds a ClusterClient that works against a real
// (one-node) cluster, password and all.
func TestStoreRedisClusterLive(t *testing.T) {
	addr := closedPort(t)
	_, port, _ := strings.Cut(addr, ":")
	dir := t.TempDir()
	redisProc(t, addr, storePassword, "--port", port, "--bind", "127.0.0.1", "--requirepass", storePassword,
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--save", "", "--appendonly", "no", "--dir", dir)
	c := redis.NewClient(&redis.Options{Addr: addr, Password: storePassword})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool {
		info, err := c.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	}) {
		t.Fatal("cluster state not ok")
	}
	tokenTwice(t, "redis+cluster://:"+storePassword+"@"+addr)
}

// redis+sentinel:// builds a FailoverClient that finds the master through
// a real sentinel.
func TestStoreRedisSentinelLive(t *testing.T) {
	master := closedPort(t)
	_, mport, _ := strings.Cut(master, ":")
	dir := t.TempDir()
	redisProc(t, master, storePassword, "--port", mport, "--bind", "127.0.0.1", "--requirepass", storePassword,
		"--save", "", "--appendonly", "no", "--dir", dir)

	sentinel := closedPort(t)
	_, sport, _ := strings.Cut(sentinel, ":")
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	body := fmt.Sprintf("port %s\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 %s 1\nsentinel auth-pass mymaster %s\n", sport, mport, storePassword)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	redisProc(t, sentinel, "", conf, "--sentinel")
	s := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer s.Close()
	if !waitFor(func() bool {
		a, err := s.GetMasterAddrByName(context.Background(), "mymaster").Result()
		return err == nil && len(a) == 2 && a[1] == mport
	}) {
		t.Fatal("the sentinel does not know mymaster")
	}
	tokenTwice(t, "redis+sentinel://"+sentinel+"?master_name=mymaster&password="+storePassword)
}

// serveOnce runs serve -v with args until it has answered one token
// request, and returns everything it wrote on stderr.
func serveOnce(t *testing.T, args ...string) string {
	t.Helper()
	const key = "a-server-key-that-is-long-enough"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &watcher{}
	addr := stderr.await(regexp.MustCompile(`addr=(127\.0\.0\.1:[0-9]+)`))
	args = append([]string{"serve", "-v", "--listen", "127.0.0.1:0", "--key-file", writeFile(t, "key", key),
		"--appid", appID, "--secret-file", writeFile(t, "secret", secret)}, args...)
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &strings.Builder{}, stderr, env{}.get) }()
	var a []string
	select {
	case a = <-addr:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	}
	req, _ := http.NewRequest("GET", "http://"+a[1]+"/v1/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /v1/access_token: %d", resp.StatusCode)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d: %s", code, stderr)
	}
	out := stderr.String()
	if strings.Contains(out, key) || strings.Contains(out, secret) {
		t.Errorf("serve logged its key or the AppSecret: %s", out)
	}
	return out
}

// serve -v on a password-protected Redis logs the store (masked) at every
// level, and never its password.
func TestServeLogsNoStorePassword(t *testing.T) {
	addr := closedPort(t)
	_, port, _ := strings.Cut(addr, ":")
	redisProc(t, addr, storePassword, "--port", port, "--bind", "127.0.0.1", "--requirepass", storePassword,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	fake := newFake(t)
	out := serveOnce(t, "--store", "redis://default:"+storePassword+"@"+addr+"/0", "--api-base", fake.URL())
	if strings.Contains(out, storePassword) || !strings.Contains(out, "redis://default:xxxxx@") || !strings.Contains(out, "level=DEBUG") {
		t.Errorf("serve -v log: %s", out)
	}
}
