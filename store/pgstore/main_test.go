package pgstore

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/wechatconf/wechatconf/internal/testserver"
)

// One PostgreSQL server serves the whole package (initdb takes seconds);
// tests keep apart by table name and prefix. The outage test starts a
// server of its own, since it stops it.
var shared struct {
	once     sync.Once
	tb       *packageTB
	dsn      string
	ready    sync.Once
	readyErr error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.tb != nil {
		shared.tb.cleanup()
	}
	os.Exit(code)
}

// serverDSN starts the shared server on first use and returns its DSN. When
// the server cannot start, it skips t (or fails it under CI=true, as
// testserver decided).
func serverDSN(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		shared.tb = &packageTB{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, shared.dsn = testserver.Postgres(shared.tb)
		}()
		<-done
	})
	tb := shared.tb
	switch {
	case tb.failed:
		t.Fatalf("shared PostgreSQL: %s", tb.msg)
	case tb.skipped:
		t.Skipf("shared PostgreSQL: %s", tb.msg)
	case shared.dsn == "":
		t.Fatal("shared PostgreSQL: no DSN")
	}
	shared.ready.Do(func() { shared.readyErr = waitReady(shared.dsn) })
	if shared.readyErr != nil {
		t.Fatalf("shared PostgreSQL: %v", shared.readyErr)
	}
	return shared.dsn
}

// waitReady waits until PostgreSQL accepts queries: testserver returns as
// soon as the port listens, while the server may still say "the database
// system is starting up" (after Start, it replays its WAL first).
func waitReady(dsn string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after a minute: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// packageTB lets testserver, which wants a testing.TB, run from TestMain's
// lifetime rather than one test's: its Cleanup functions run after m.Run.
// The embedded nil testing.TB supplies the unexported method; testserver
// calls only the methods defined here (Helper, Cleanup, TempDir, Fatal,
// Fatalf, Skip and the Log and Error families), and Fatal and Skip end the
// starting goroutine as the testing package would.
type packageTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  bool
	msg      string
}

func (p *packageTB) Helper()      {}
func (p *packageTB) Name() string { return "pgstore-shared-server" }
func (p *packageTB) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}
func (p *packageTB) cleanup() {
	p.mu.Lock()
	fs := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
func (p *packageTB) TempDir() string {
	d, err := os.MkdirTemp("", "pgstore-test-")
	if err != nil {
		p.Fatalf("TempDir: %v", err)
	}
	p.Cleanup(func() { os.RemoveAll(d) })
	return d
}
func (p *packageTB) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (p *packageTB) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (p *packageTB) Error(args ...any)               { p.fail(fmt.Sprint(args...), false) }
func (p *packageTB) Errorf(format string, args ...any) {
	p.fail(fmt.Sprintf(format, args...), false)
}
func (p *packageTB) Fatal(args ...any) { p.fail(fmt.Sprint(args...), true) }
func (p *packageTB) Fatalf(format string, args ...any) {
	p.fail(fmt.Sprintf(format, args...), true)
}
func (p *packageTB) FailNow() { p.fail("FailNow", true) }
func (p *packageTB) Skip(args ...any) {
	p.mu.Lock()
	p.skipped, p.msg = true, fmt.Sprint(args...)
	p.mu.Unlock()
	runtime.Goexit()
}
func (p *packageTB) Skipf(format string, args ...any) { p.Skip(fmt.Sprintf(format, args...)) }
func (p *packageTB) fail(msg string, now bool) {
	p.mu.Lock()
	p.failed, p.msg = true, msg
	p.mu.Unlock()
	if now {
		runtime.Goexit()
	}
}

// newPool opens a pool on the shared server, closed by t.Cleanup.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return poolFor(t, serverDSN(t))
}

func poolFor(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

var tableSeq atomic.Int64

// freshTable returns a table name no other test uses.
func freshTable() string { return fmt.Sprintf("t%d_%d", os.Getpid(), tableSeq.Add(1)) }

// newStore returns a Store on pool with opts, closed by t.Cleanup.
func newStore(t testing.TB, pool *pgxpool.Pool, opts ...Option) *Store {
	t.Helper()
	s, err := New(pool, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitListeners waits until exactly want goroutines run the LISTEN loop,
// failing t after a generous bound. It waits because a goroutine that has
// called wg.Done (letting Close return) is still on its way out for a
// moment, and a test may start while an earlier test's listener exits.
func waitListeners(t *testing.T, want int, why string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := listeners()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d listening goroutines, want %d", why, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listeners counts goroutines running the LISTEN loop.
func listeners() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "pgstore.(*Store).listen(")
		}
		buf = make([]byte, 2*len(buf))
	}
}
