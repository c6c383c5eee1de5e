// Package servers starts the real Redis, Memcached and PostgreSQL servers that
// the integration suites run against, each in its own Docker container started
// with testcontainers-go and removed by t.Cleanup.
//
// The root module's internal/testserver starts the same three servers as
// plain processes from Debian's packages. Both exist on purpose: that one
// lets the unit tests run with no Docker and no testcontainers in the root
// module's go.sum; this one gives the integration suites containers, which
// can be paused (a hung server that keeps its connections, not a refused
// dial), stopped and started on the same address, and run the images a
// deployment runs, for fault injection across many nodes.
//
// # Images
//
// The image of each server comes from an environment variable, defaulting to
// the official image, so that a machine with Docker Hub needs nothing more:
//
//	WECHATCONF_REDIS_IMAGE      redis:7
//	WECHATCONF_MEMCACHED_IMAGE  memcached:1.6
//	WECHATCONF_POSTGRES_IMAGE   postgres:15
//
// Machines without a registry build one local image from Debian's packages
// with scripts/images.sh (make images) and point all three variables at it.
// That image carries the label org.wechatconf.image=debian-servers; the
// helpers read the label and start each server with the command the Debian
// packages need (bind 0.0.0.0, Redis protected mode off, memcached as
// nobody, PostgreSQL through the wechatconf-postgres entrypoint baked into
// the image), so a retagged image works as well as the original name.
//
// # Docker
//
// Docker must answer. When it does not, the test is skipped with a message,
// except under CI=true, where it fails: a skip must never pass for a green
// integration run. Unless already set, the package sets
// TESTCONTAINERS_RYUK_DISABLED=true (the reaper image cannot be pulled
// without a registry; containers are removed by t.Cleanup instead) and,
// for a local engine, TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 (otherwise
// testcontainers may take a VM's gateway for the container host, and every
// dial is refused).
//
// # Outages
//
// Each server is published on a host port chosen here, free at the time,
// and bound explicitly rather than left to Docker. Docker gives a container
// a new ephemeral port each time it starts; with the port fixed, Stop and
// Start bring the server back at the same address, so the clients under
// test see a real outage and reconnect on their own, as they would in
// production, and no test needs to rebuild its clients. The cost is a small
// window in which another process could take the chosen port: creation
// retries with another port; a Start after Stop reports the clash.
package servers

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, for the readiness check
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Environment variables that name the image of each server.
const (
	RedisImageEnv     = "WECHATCONF_REDIS_IMAGE"
	MemcachedImageEnv = "WECHATCONF_MEMCACHED_IMAGE"
	PostgresImageEnv  = "WECHATCONF_POSTGRES_IMAGE"
)

// Official images used when the variables above are unset.
const (
	DefaultRedisImage     = "redis:7"
	DefaultMemcachedImage = "memcached:1.6"
	DefaultPostgresImage  = "postgres:15"
)

// FlavorLabel is the image label that scripts/images.sh sets, with the value
// DebianFlavor, on the local image built from Debian packages.
const (
	FlavorLabel  = "org.wechatconf.image"
	DebianFlavor = "debian-servers"
)

// startTimeout bounds how long a server may take to become ready, at first
// start and after Start. Generous: the machine running the tests is shared.
const startTimeout = 2 * time.Minute

// Server is one server running in a container for the length of a test.
type Server struct {
	// Kind is "redis", "memcached" or "postgres".
	Kind string
	// Image is the image the container runs.
	Image string
	// Host and Port are where the server is reachable from the tests; Addr
	// is the two joined. They do not change across Stop and Start.
	Host string
	Port int
	Addr string
	// DSN is a connection string for PostgreSQL (user postgres, trust
	// auth, database postgres, no TLS); empty for the other kinds.
	DSN string

	ctr testcontainers.Container
	mu  sync.Mutex // serialises Stop, Start, Pause, Unpause
}

// Option adjusts a server before it starts.
type Option func(*options)

type options struct {
	args []string
}

// Args appends arguments to the server's command line, for example
// Args("--appendonly", "yes") to make Redis keep its data across Stop and
// Start, or Args("-c", "max_connections=300") for PostgreSQL.
func Args(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

var envOnce sync.Once

// setEnvDefaults sets what testcontainers needs on a machine without a
// registry, unless the user chose otherwise. It runs before the first call
// into testcontainers, which reads its configuration once.
func setEnvDefaults() {
	envOnce.Do(func() {
		if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
			os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
		}
		host := os.Getenv("DOCKER_HOST")
		local := host == "" || strings.HasPrefix(host, "unix://")
		if _, ok := os.LookupEnv("TESTCONTAINERS_HOST_OVERRIDE"); !ok && local {
			os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
		}
	})
}

var (
	dockerOnce sync.Once
	dockerErr  error
)

// RequireDocker returns when a Docker engine answers. Otherwise it skips the
// test with a message saying how to get one, or fails it under CI=true.
// Every helper here calls it first; suites that use Docker in other ways
// call it themselves.
func RequireDocker(t testing.TB) {
	t.Helper()
	setEnvDefaults()
	dockerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cli, err := testcontainers.NewDockerClientWithOpts(ctx)
		if err != nil {
			dockerErr = err
			return
		}
		defer cli.Close()
		_, dockerErr = cli.Ping(ctx, client.PingOptions{})
	})
	if dockerErr == nil {
		return
	}
	msg := fmt.Sprintf("servers: no Docker engine answers (%v); run scripts/docker-up.sh (make test does) or start Docker", dockerErr)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " [CI=true: a missing Docker is a failure]")
	}
	t.Skip(msg)
}

// image returns the image named by env, or def when env is unset or empty.
func image(env, def string) string {
	if v := strings.TrimSpace(os.Getenv(env)); v != "" {
		return v
	}
	return def
}

// isDebian reports whether img is the local image that scripts/images.sh
// builds, by its label. An image that is not present yet (an official one,
// to be pulled) is not.
func isDebian(ctx context.Context, img string) (bool, error) {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return false, err
	}
	defer cli.Close()
	res, err := cli.ImageInspect(ctx, img)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect image %s: %w", img, err)
	}
	if res.Config == nil {
		return false, nil
	}
	return res.Config.Labels[FlavorLabel] == DebianFlavor, nil
}

// spec is what differs between servers and between image flavors.
type spec struct {
	kind  string
	port  string // container port, e.g. "6379/tcp"
	cmd   []string
	env   map[string]string
	ready func(port string) wait.Strategy
}

// Redis starts a Redis server without persistence (Stop loses the data
// unless Args asks for it) and returns it once it answers PING.
func Redis(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return start(t, RedisImageEnv, DefaultRedisImage, func(debian bool, args []string) spec {
		cmd := []string{"redis-server", "--port", "6379", "--save", "", "--appendonly", "no"}
		if debian {
			cmd = append(cmd, "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/tmp")
		}
		return spec{
			kind: "redis",
			port: "6379/tcp",
			cmd:  append(cmd, args...),
			ready: func(port string) wait.Strategy {
				// Not a log line: after Start the old one is still in the log.
				return wait.ForAll(
					wait.ForListeningPort(port),
					wait.ForExec([]string{"redis-cli", "-p", "6379", "ping"}).
						WithResponseMatcher(func(body io.Reader) bool { return contains(body, "PONG") }),
				)
			},
		}
	}, opts)
}

// Memcached starts a memcached server and returns it once its port listens.
// Memcached keeps nothing across Stop and Start.
func Memcached(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return start(t, MemcachedImageEnv, DefaultMemcachedImage, func(debian bool, args []string) spec {
		cmd := []string{"memcached", "-p", "11211"}
		if debian {
			cmd = append(cmd, "-u", "nobody", "-l", "0.0.0.0")
		}
		return spec{
			kind: "memcached",
			port: "11211/tcp",
			cmd:  append(cmd, args...),
			ready: func(port string) wait.Strategy {
				return wait.ForListeningPort(port)
			},
		}
	}, opts)
}

// Postgres starts a PostgreSQL 15 server with trust authentication and
// returns it once it answers a query on Server.DSN. fsync is off, for speed:
// that only risks data if the machine itself crashes. Commits stay
// synchronous, so every committed row survives Stop (a kill) and Start; with
// synchronous_commit off, a kill could lose the last commits, and an outage
// test would wrongly see the store forget a token.
func Postgres(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return start(t, PostgresImageEnv, DefaultPostgresImage, func(debian bool, args []string) spec {
		settings := []string{"-c", "fsync=off"}
		s := spec{
			kind: "postgres",
			port: "5432/tcp",
			ready: func(port string) wait.Strategy {
				return wait.ForAll(
					wait.ForListeningPort(port),
					wait.ForSQL(port, "pgx", func(host string, p network.Port) string {
						return postgresDSN(host, int(p.Num()))
					}),
				)
			},
		}
		if debian {
			s.cmd = append(append([]string{"wechatconf-postgres"}, settings...), args...)
		} else {
			s.cmd = append(append([]string{"postgres"}, settings...), args...)
			s.env = map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"}
		}
		return s
	}, opts)
}

func postgresDSN(host string, port int) string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", net.JoinHostPort(host, strconv.Itoa(port)))
}

// start runs the container described by build, retrying with another host
// port when the chosen one was taken meanwhile.
func start(t testing.TB, env, def string, build func(debian bool, args []string) spec, opts []Option) *Server {
	t.Helper()
	RequireDocker(t)
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	img := image(env, def)
	ctx, cancel := context.WithTimeout(context.Background(), 2*startTimeout)
	defer cancel()
	debian, err := isDebian(ctx, img)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	sp := build(debian, o.args)

	const attempts = 5
	for attempt := 1; ; attempt++ {
		hostPort, err := freePort()
		if err != nil {
			t.Fatalf("servers: %s: %v", sp.kind, err)
		}
		s, err := run(ctx, t, img, sp, hostPort)
		if err == nil {
			t.Logf("servers: %s (%s) listening on %s", sp.kind, img, s.Addr)
			return s
		}
		if attempt < attempts && isPortClash(err) {
			t.Logf("servers: %s: host port %d was taken meanwhile; trying another", sp.kind, hostPort)
			continue
		}
		t.Fatalf("servers: start %s from image %s: %v (set %s to another image, or run scripts/images.sh)", sp.kind, img, err, env)
	}
}

// run creates and starts one container publishing sp.port on hostPort. The
// container is removed by t.Cleanup whatever happens.
func run(ctx context.Context, t testing.TB, img string, sp spec, hostPort int) (*Server, error) {
	port := network.MustParsePort(sp.port)
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        img,
			Cmd:          sp.cmd,
			Env:          sp.env,
			ExposedPorts: []string{sp.port},
			Labels:       map[string]string{"org.wechatconf.integration": sp.kind},
			WaitingFor:   sp.ready(sp.port),
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.PortBindings = network.PortMap{
					port: {{HostPort: strconv.Itoa(hostPort)}},
				}
			},
		},
		Started: true,
		Logger:  tclog.TestLogger(t),
	}
	ctr, err := testcontainers.GenericContainer(ctx, req)
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		return nil, err
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	mapped, err := ctr.MappedPort(ctx, sp.port)
	if err != nil {
		return nil, fmt.Errorf("mapped port: %w", err)
	}
	if int(mapped.Num()) != hostPort {
		return nil, fmt.Errorf("published on port %d, not the %d asked for", mapped.Num(), hostPort)
	}
	s := &Server{
		Kind:  sp.kind,
		Image: img,
		Host:  host,
		Port:  hostPort,
		Addr:  net.JoinHostPort(host, strconv.Itoa(hostPort)),
		ctr:   ctr,
	}
	if sp.kind == "postgres" {
		s.DSN = postgresDSN(host, hostPort)
	}
	return s, nil
}

// freePort asks the kernel for a TCP port that is free on every interface,
// where Docker publishes by default.
func freePort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// isPortClash reports whether Docker refused the host port because something
// else holds it.
func isPortClash(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") ||
		strings.Contains(msg, "address already in use")
}

// Stop kills the server (no graceful shutdown: an outage, not a
// maintenance) and returns once the container has stopped. Clients see
// connections refused until Start. Stop on a stopped server does nothing.
// Unlike the constructors, Stop reports errors instead of failing the test,
// so that it can be called from any goroutine of a test under load.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	zero := time.Duration(0)
	if err := s.ctr.Stop(ctx, &zero); err != nil {
		return fmt.Errorf("servers: stop %s: %w", s.Kind, err)
	}
	return nil
}

// Start runs a stopped server again on the same address and returns once it
// is ready again. Redis and Memcached come back empty (unless Args asked
// Redis to persist); PostgreSQL keeps its data. If another process took the
// port while the server was down, Start fails and says so.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := s.ctr.Start(ctx); err != nil {
		if isPortClash(err) {
			return fmt.Errorf("servers: start %s again: port %d was taken while it was down: %w", s.Kind, s.Port, err)
		}
		return fmt.Errorf("servers: start %s again: %w", s.Kind, err)
	}
	return nil
}

// Pause freezes the server's processes: connections are still accepted but
// nothing answers, so clients wait until their deadline, the way they would
// with a server that hangs. Unpause ends it.
func (s *Server) Pause(ctx context.Context) error {
	return s.docker(ctx, "pause", func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerPause(ctx, id, client.ContainerPauseOptions{})
		return err
	})
}

// Unpause resumes a server frozen by Pause.
func (s *Server) Unpause(ctx context.Context) error {
	return s.docker(ctx, "unpause", func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{})
		return err
	})
}

func (s *Server) docker(ctx context.Context, op string, f func(*testcontainers.DockerClient, string) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("servers: %s %s: %w", op, s.Kind, err)
	}
	defer cli.Close()
	if err := f(cli, s.ctr.GetContainerID()); err != nil {
		return fmt.Errorf("servers: %s %s: %w", op, s.Kind, err)
	}
	return nil
}

// String names the server and its address, for test logs.
func (s *Server) String() string {
	return fmt.Sprintf("%s at %s (%s)", s.Kind, s.Addr, s.Image)
}

// contains reports whether r yields text with sub in it.
func contains(r io.Reader, sub string) bool {
	b, err := io.ReadAll(r)
	return err == nil && strings.Contains(string(b), sub)
}
