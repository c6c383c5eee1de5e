// Package testserver starts real Redis, Memcached and PostgreSQL servers from
// the machine's own binaries (Debian's redis-server, memcached and
// postgresql-15 packages) for the backends' unit tests. Each server listens on
// a free loopback port, lives in a temporary directory and is stopped by
// t.Cleanup.
//
// When a binary is missing the test is skipped, except under CI=true, where a
// missing server is a failure: a skip must never hide an untested backend.
//
// # Why integration/servers exists too
//
// integration/servers starts the same three servers, in Docker containers.
// Both stay, on purpose: this package serves the root module's unit tests
// (go test ./... in the root), which must run on a machine with the Debian
// packages and no Docker, in a few seconds, with no testcontainers in the
// root module's go.sum; its Stop and Start are process restarts. The
// integration module's servers are containers, which buy what processes
// cannot: Pause (a hung server that keeps its connections, not a refused
// dial), network faults, and the same images a deployment runs, for the
// multi-node and fault-injection suites. Merging them would force Docker on
// the unit tests or give up those faults.
package testserver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a running server process. Stop and Start let a test inject an
// outage: the server comes back on the same address with the same data
// directory (Memcached and Redis without persistence come back empty).
type Server struct {
	// Addr is host:port on the loopback interface.
	Addr string

	t     testing.TB
	name  string
	args  []string
	ready func() error // beyond a listening port, if the server needs it
	cred  *syscall.Credential
	dir   string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *bytes.Buffer
}

// missing fails or skips the test because binary is not installed.
func missing(t testing.TB, binary, pkg string) {
	t.Helper()
	msg := fmt.Sprintf("testserver: %s not found; install Debian's %s package (make test does)", binary, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// freePort asks the kernel for an unused loopback TCP port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testserver: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs the server again after Stop, on the same address.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.name, s.args...)
	cmd.Dir = s.dir
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so that Stop kills the server's children too
	// (PostgreSQL's backends).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("testserver: start %s: %v", s.name, err)
	}
	s.cmd, s.out = cmd, out
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			if s.ready == nil {
				return
			}
			if err = s.ready(); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testserver: %s did not listen on %s: %v\n%s", s.name, s.Addr, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: an outage, not a shutdown) and waits for it
// to exit. Stop on a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

func start(t testing.TB, name string, args []string, cred *syscall.Credential, dir string, addr string, ready func() error) *Server {
	t.Helper()
	s := &Server{Addr: addr, t: t, name: name, args: args, cred: cred, dir: dir, ready: ready}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Redis starts redis-server with no persistence on a free port.
func Redis(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missing(t, "redis-server", "redis-server")
	}
	port := freePort(t)
	dir := t.TempDir()
	args := []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
	}
	return start(t, bin, args, nil, dir, fmt.Sprintf("127.0.0.1:%d", port), nil)
}

// Memcached starts memcached on a free port.
func Memcached(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		missing(t, "memcached", "memcached")
	}
	port := freePort(t)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	return start(t, bin, args, nil, t.TempDir(), fmt.Sprintf("127.0.0.1:%d", port), nil)
}

// PostgresBinDir is where Debian's postgresql-15 package puts initdb and
// postgres.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// Postgres runs initdb (trust authentication) in a temporary directory and
// starts postgres on a free port. It returns the server and a connection
// string for the "postgres" database. As root, the server runs as the
// "postgres" user, since PostgreSQL refuses to run as root.
func Postgres(t testing.TB) (*Server, string) {
	t.Helper()
	initdb := filepath.Join(PostgresBinDir, "initdb")
	postgres := filepath.Join(PostgresBinDir, "postgres")
	if _, err := os.Stat(postgres); err != nil {
		missing(t, postgres, "postgresql-15")
	}
	var cred *syscall.Credential
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testserver: running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		// t.TempDir's parent is root's and mode 0700: give the server
		// its own world-reachable directory instead.
		d, err := os.MkdirTemp("", "wechatconf-pg-")
		if err != nil {
			t.Fatalf("testserver: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("testserver: %v", err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatalf("testserver: %v", err)
		}
		dir = d
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	cmd.Dir = dir
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testserver: initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	args := []string{
		"-D", data, "-p", strconv.Itoa(port), "-k", dir, "-h", "127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
	}
	// An open port is not enough: PostgreSQL refuses connections while
	// "the database system is starting up". pg_isready says when it is
	// done.
	ready := func() error {
		return exec.Command(filepath.Join(PostgresBinDir, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres").Run()
	}
	s := start(t, postgres, args, cred, dir, fmt.Sprintf("127.0.0.1:%d", port), ready)
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return s, dsn
}
