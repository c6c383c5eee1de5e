package memcachestore_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/wechatconf/wechatconf/internal/record/recordtest"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/memcachestore"
)

// key is shaped like the keys package conf uses.
const key = "{wx123}:access_token"

var prefixSeq atomic.Int64

// uniquePrefix gives each Store in a test run its own key space.
func uniquePrefix(t testing.TB) string {
	return fmt.Sprintf("test:%s:%d:", strings.ReplaceAll(t.Name(), "/", "."), prefixSeq.Add(1))
}

// newClient starts a memcached server for the test and returns a client for it.
func newClient(t testing.TB) (*testserver.Server, *memcache.Client) {
	t.Helper()
	srv := testserver.Memcached(t)
	c := memcache.New(srv.Addr)
	c.Timeout = 5 * time.Second // the machine is shared and slow at times
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// newStore returns a Store with a unique prefix, its client and its prefix.
func newStore(t testing.TB) (*testserver.Server, *memcache.Client, *memcachestore.Store, string) {
	t.Helper()
	srv, c := newClient(t)
	p := uniquePrefix(t)
	return srv, c, memcachestore.MustNew(t, c, memcachestore.WithPrefix(p)), p
}

// record builds a record the way the package documents it.
func record(exp time.Time, value string) []byte {
	return fmt.Appendf(nil, "%019d%s", exp.UnixNano(), value)
}

// ttl asks memcached (meta get, "mg <key> t") how many seconds full has
// left: -1 for none, and ok=false when it is absent.
func ttl(t *testing.T, addr, full string) (sec int, ok bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "mg %s t\r\n", full); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimSpace(line)
	if line == "EN" {
		return 0, false
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "HD" || !strings.HasPrefix(f[1], "t") {
		t.Fatalf("mg %s t: unexpected reply %q", full, line)
	}
	n, err := strconv.Atoi(f[1][1:])
	if err != nil {
		t.Fatalf("mg %s t: %q: %v", full, line, err)
	}
	return n, true
}

// TestRecords checks what follows from keeping items as internal/record
// records: the bytes under prefix+key, newer-wins to the nanosecond in the
// compare-and-swap loop, expired items never written, and foreign records.
func TestRecords(t *testing.T) {
	_, c := newClient(t)
	recordtest.Run(t, recordtest.Backend{
		Name: "memcachestore",
		New: func(t *testing.T) (store.Store, string) {
			p := uniquePrefix(t)
			return memcachestore.MustNew(t, c, memcachestore.WithPrefix(p)), p
		},
		Raw: func(t *testing.T, full string) ([]byte, bool) {
			it, err := c.Get(full)
			if err == memcache.ErrCacheMiss {
				return nil, false
			}
			if err != nil {
				t.Fatalf("raw get %q: %v", full, err)
			}
			return it.Value, true
		},
		Put: func(t *testing.T, full string, rec []byte) {
			if err := c.Set(&memcache.Item{Key: full, Value: rec, Expiration: 3600}); err != nil {
				t.Fatalf("raw set %q: %v", full, err)
			}
		},
	})
}

// TestItemTTL checks the expiration memcached keeps an item for: the time
// to its expiry, rounded up to a second, plus one.
func TestItemTTL(t *testing.T) {
	ctx := context.Background()
	srv, _, s, p := newStore(t)
	if err := s.Set(ctx, key, store.Item{Value: "tok-1", ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	if sec, ok := ttl(t, srv.Addr, p+key); !ok || sec <= 7000 || sec > 7201 {
		t.Fatalf("item TTL = %d s (present %v), want in (7000, 7201]", sec, ok)
	}
}

func TestDefaultPrefix(t *testing.T) {
	ctx := context.Background()
	_, c := newClient(t)
	s := memcachestore.MustNew(t, c)
	if err := s.Set(ctx, key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("wechatconf:" + key); err != nil {
		t.Fatalf("raw get wechatconf:%s: %v", key, err)
	}
	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("wechatconf:" + key + ":lock"); err != nil {
		t.Fatalf("raw get wechatconf:%s:lock: %v", key, err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSetRaces steps in between Set's gets and its add or cas, as another
// node would, and checks that the newer item wins every time.
func TestSetRaces(t *testing.T) {
	ctx := context.Background()
	base := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name   string
		before *store.Item // stored before Set, if any
		meddle func(c *memcache.Client, full string)
		want   string
	}{
		{
			name: "newer item added before our add",
			meddle: func(c *memcache.Client, full string) {
				c.Set(&memcache.Item{Key: full, Value: record(base.Add(time.Minute), "theirs")})
			},
			want: "theirs",
		},
		{
			name: "older item added before our add",
			meddle: func(c *memcache.Client, full string) {
				c.Set(&memcache.Item{Key: full, Value: record(base.Add(-time.Minute), "theirs")})
			},
			want: "ours",
		},
		{
			name:   "newer item written before our cas",
			before: &store.Item{Value: "first", ExpiresAt: base.Add(-30 * time.Minute)},
			meddle: func(c *memcache.Client, full string) {
				c.Set(&memcache.Item{Key: full, Value: record(base.Add(time.Minute), "theirs")})
			},
			want: "theirs",
		},
		{
			name:   "older item written before our cas",
			before: &store.Item{Value: "first", ExpiresAt: base.Add(-30 * time.Minute)},
			meddle: func(c *memcache.Client, full string) {
				c.Set(&memcache.Item{Key: full, Value: record(base.Add(-time.Minute), "theirs")})
			},
			want: "ours",
		},
		{
			name:   "item gone before our cas",
			before: &store.Item{Value: "first", ExpiresAt: base.Add(-30 * time.Minute)},
			meddle: func(c *memcache.Client, full string) { c.Delete(full) },
			want:   "ours",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c, s, p := newStore(t)
			if tc.before != nil {
				if err := s.Set(ctx, key, *tc.before); err != nil {
					t.Fatal(err)
				}
				if got, err := s.Get(ctx, key); err != nil || got.Value != tc.before.Value {
					t.Fatalf("Get of the first item = %v, %v", got, err)
				}
			}
			calls := 0
			memcachestore.SetBeforeWrite(s, func() {
				calls++
				if calls == 1 {
					tc.meddle(c, p+key)
				}
			})
			if err := s.Set(ctx, key, store.Item{Value: "ours", ExpiresAt: base}); err != nil {
				t.Fatalf("Set: %v", err)
			}
			got, err := s.Get(ctx, key)
			if err != nil || got.Value != tc.want {
				t.Fatalf("Get = %v, %v; want %s", got, err, tc.want)
			}
			if tc.want == "ours" && calls < 2 {
				t.Fatalf("Set wrote without looking again after the race (%d writes tried)", calls)
			}
		})
	}
}

func TestSetGivesUpUnderEndlessContention(t *testing.T) {
	ctx := context.Background()
	_, c, s, p := newStore(t)
	base := time.Now().Add(time.Hour)
	if err := s.Set(ctx, key, store.Item{Value: "first", ExpiresAt: base.Add(-30 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	memcachestore.SetBeforeWrite(s, func() {
		calls++ // another writer always gets in first, with an older item
		c.Set(&memcache.Item{Key: p + key, Value: record(base.Add(-time.Duration(calls)*time.Second), "theirs")})
	})
	err := s.Set(ctx, key, store.Item{Value: "ours", ExpiresAt: base})
	if !errors.Is(err, memcachestore.ErrContention) {
		t.Fatalf("Set: %v, want ErrContention", err)
	}
	if calls < 2 || calls > 1000 {
		t.Fatalf("Set tried %d writes; want a bounded retry", calls)
	}
}

func TestLease(t *testing.T) {
	ctx := context.Background()
	srv, c, s, p := newStore(t)
	lockKey := p + key + ":lock"

	l, err := s.Lock(ctx, key, 30*time.Second)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if _, ok := l.(store.Extender); !ok {
		t.Fatalf("lease %T does not implement store.Extender", l)
	}
	raw, err := c.Get(lockKey)
	if err != nil || len(raw.Value) < 16 {
		t.Fatalf("lock record %q: %v; want a random owner", lockKey, err)
	}
	owner := string(raw.Value)
	if sec, ok := ttl(t, srv.Addr, lockKey); !ok || sec < 30 || sec > 31 {
		t.Fatalf("lock TTL = %d s (present %v), want 30 or 31 (30 s rounded up, plus one)", sec, ok)
	}
	if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Lock: err = %v, want ErrLocked", err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get while locked: %v, want ErrNotFound (the lease lives apart)", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if _, err := c.Get(lockKey); err != memcache.ErrCacheMiss {
		t.Fatalf("lock record after Unlock: raw get %v, want a miss (cas with a negative expiration)", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("second Unlock: %v, want nil", err)
	}
	l2, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	if raw, _ := c.Get(lockKey); raw == nil || string(raw.Value) == owner {
		t.Fatal("two leases got the same owner value")
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestForeignLeaseRecord: a lease record that no Lock wrote (garbage left
// by another program, without expiration) used to block Lock for ever.
// Lock takes it over with cas, with the TTL it was asked for; a record
// shaped like an owner value still means the key is locked.
func TestForeignLeaseRecord(t *testing.T) {
	ctx := context.Background()
	srv, c, s, p := newStore(t)
	lockKey := p + key + ":lock"
	for _, raw := range []string{"x", "garbage that is not an owner", "abcdefghijklmnopqrstuvwxyz", "\x00\xff"} {
		if err := c.Set(&memcache.Item{Key: lockKey, Value: []byte(raw)}); err != nil { // no expiration
			t.Fatal(err)
		}
		l, err := s.Lock(ctx, key, 30*time.Second)
		if err != nil {
			t.Fatalf("Lock over the foreign lease record %q: %v; want the lease", raw, err)
		}
		if sec, ok := ttl(t, srv.Addr, lockKey); !ok || sec < 30 || sec > 31 {
			t.Fatalf("lock TTL after taking over %q = %d s (present %v), want 30 or 31", raw, sec, ok)
		}
		if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("second Lock after taking over %q: %v, want ErrLocked", raw, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An owner-shaped record is a lease, whoever wrote it.
	if err := c.Set(&memcache.Item{Key: lockKey, Value: []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Expiration: 60}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Lock over an owner-shaped lease record: %v, want ErrLocked", err)
	}
}

// TestUnlockRaces takes the lease over between Unlock's gets and its cas:
// the cas must fail and leave the new holder's lease alone.
func TestUnlockRaces(t *testing.T) {
	ctx := context.Background()
	for _, takeover := range []bool{false, true} {
		t.Run(fmt.Sprintf("takeover=%v", takeover), func(t *testing.T) {
			_, c, s, p := newStore(t)
			lockKey := p + key + ":lock"
			other := memcachestore.MustNew(t, c, memcachestore.WithPrefix(p))
			old, err := s.Lock(ctx, key, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var cur store.Lease
			calls := 0
			memcachestore.SetBeforeWrite(s, func() {
				calls++
				if calls > 1 {
					return
				}
				c.Delete(lockKey) // the old lease ran out here
				if takeover {
					if cur, err = other.Lock(ctx, key, time.Minute); err != nil {
						t.Errorf("takeover Lock: %v", err)
					}
				}
			})
			if err := old.Unlock(ctx); err != nil {
				t.Fatalf("Unlock that lost the race: %v, want nil", err)
			}
			if calls != 1 {
				t.Fatalf("Unlock tried %d cas, want 1 (then found the lease gone or not ours)", calls)
			}
			_, err = c.Get(lockKey)
			if !takeover {
				if err != memcache.ErrCacheMiss {
					t.Fatalf("raw get: %v, want a miss", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("the new holder's lease is gone: %v", err)
			}
			if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
				t.Fatalf("Lock: %v, want ErrLocked", err)
			}
			if err := old.(store.Extender).Extend(ctx, time.Hour); !errors.Is(err, store.ErrLeaseLost) {
				t.Fatalf("stale Extend: %v, want ErrLeaseLost", err)
			}
			if err := cur.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExtend(t *testing.T) {
	ctx := context.Background()
	srv, _, s, p := newStore(t)
	lockKey := p + key + ":lock"
	l, err := s.Lock(ctx, key, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ext := l.(store.Extender)
	if err := ext.Extend(ctx, time.Hour); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if sec, ok := ttl(t, srv.Addr, lockKey); !ok || sec < 3600 {
		t.Fatalf("lock TTL after Extend(1h) = %d s (present %v)", sec, ok)
	}
	if err := ext.Extend(ctx, 0); err == nil || errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Extend(0): %v, want an error naming the ttl", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ext.Extend(ctx, time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Extend after Unlock: %v, want ErrLeaseLost", err)
	}
	if _, ok := ttl(t, srv.Addr, lockKey); ok {
		t.Fatal("Extend after Unlock brought the lease back")
	}
}

func TestBadTTL(t *testing.T) {
	ctx := context.Background()
	_, _, s, _ := newStore(t)
	for _, d := range []time.Duration{0, -time.Second} {
		_, err := s.Lock(ctx, key, d)
		if err == nil || errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "ttl") {
			t.Fatalf("Lock(ttl %v): err = %v, want an error naming the ttl", d, err)
		}
	}
}

func TestExpiration(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		d    time.Duration
		want int32
	}{
		{time.Nanosecond, 2},
		{time.Millisecond, 2},
		{time.Second, 2},
		{time.Second + time.Nanosecond, 3},
		{7200 * time.Second, 7201},
		{30*day - time.Second, 30 * 24 * 3600},
		{30 * day, 30 * 24 * 3600}, // memcached reads more as a Unix time: clamp
		{40 * day, 30 * 24 * 3600},
		{1 << 62, 30 * 24 * 3600},
	} {
		if got := memcachestore.Expiration(tc.d); got != tc.want {
			t.Errorf("expiration(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestKeyValidation(t *testing.T) {
	ctx := context.Background()
	_, c := newClient(t)
	const p = "p:"
	s := memcachestore.MustNew(t, c, memcachestore.WithPrefix(p))
	item := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}

	// The longest item key fits; its lease key (":lock" more) does not.
	longest := strings.Repeat("k", 250-len(p))
	if err := s.Set(ctx, longest, item); err != nil {
		t.Fatalf("Set of a 250-byte key: %v", err)
	}
	if _, err := s.Get(ctx, longest); err != nil {
		t.Fatalf("Get of a 250-byte key: %v", err)
	}
	_, err := s.Lock(ctx, longest, time.Minute)
	if !errors.Is(err, memcachestore.ErrInvalidKey) || !strings.Contains(err.Error(), "255 bytes") {
		t.Fatalf("Lock of a key 255 bytes with ':lock': %v, want ErrInvalidKey naming the length", err)
	}
	l, err := s.Lock(ctx, longest[:len(longest)-5], time.Minute)
	if err != nil {
		t.Fatalf("Lock of the longest lockable key: %v", err)
	}
	l.Unlock(ctx)

	bad := map[string]string{
		"too long":  longest + "k",
		"space":     "{wx1} access_token",
		"newline":   "{wx1}\naccess_token",
		"tab":       "{wx1}\taccess_token",
		"nul":       "{wx1}\x00",
		"del":       "{wx1}\x7f",
		"cr-lf cmd": "x\r\ndelete p:victim",
	}
	for name, k := range bad {
		_, getErr := s.Get(ctx, k)
		_, lockErr := s.Lock(ctx, k, time.Minute)
		for op, err := range map[string]error{"get": getErr, "set": s.Set(ctx, k, item), "lock": lockErr} {
			var oe *store.OpError
			if !errors.Is(err, memcachestore.ErrInvalidKey) || !errors.As(err, &oe) || oe.Op != op {
				t.Errorf("%s key, %s: %v; want an OpError matching ErrInvalidKey", name, op, err)
			}
		}
	}
	// A bad prefix is caught the same way.
	// A bad prefix is refused by New, naming the byte.
	if _, err := memcachestore.New(c, memcachestore.WithPrefix("my app:")); !errors.Is(err, memcachestore.ErrInvalidKey) || !strings.Contains(err.Error(), "0x20") || !strings.Contains(err.Error(), "memcachestore:") {
		t.Fatalf("New with a prefix holding a space: %v, want memcachestore: ... ErrInvalidKey naming the byte", err)
	}
	if _, err := memcachestore.New(nil); err == nil || !strings.Contains(err.Error(), "memcachestore") {
		t.Fatalf("New(nil): %v, want an error naming memcachestore", err)
	}
}

func TestNotAWatcher(t *testing.T) {
	_, c := newClient(t)
	if _, ok := any(memcachestore.MustNew(t, c)).(store.Watcher); ok {
		t.Fatal("memcachestore claims to be a store.Watcher; memcached has no pub/sub and waiters must poll")
	}
}

func TestCancelledContext(t *testing.T) {
	_, _, s, _ := newStore(t)
	l, err := s.Lock(context.Background(), key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, getErr := s.Get(ctx, key)
	_, lockErr := s.Lock(ctx, "other", time.Minute)
	for name, err := range map[string]error{
		"Get":    getErr,
		"Set":    s.Set(ctx, key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}),
		"Lock":   lockErr,
		"Unlock": l.Unlock(ctx),
		"Extend": l.(store.Extender).Extend(ctx, time.Minute),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled ctx: %v, want context.Canceled", name, err)
		}
	}
	if _, err := s.Get(context.Background(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Set with cancelled ctx wrote: %v", err)
	}
	if _, err := s.Lock(context.Background(), key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Unlock with cancelled ctx released: %v", err)
	}
	if _, err := s.Lock(context.Background(), "other", time.Minute); err != nil {
		t.Fatalf("Lock with cancelled ctx left a lease behind: %v", err)
	}
}

func TestOutage(t *testing.T) {
	ctx := context.Background()
	srv, _, s, _ := newStore(t)
	secret := "SECRET-TOKEN-VALUE"
	if err := s.Set(ctx, key, store.Item{Value: secret, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	_, getErr := s.Get(ctx, key)
	_, lockErr := s.Lock(ctx, "other", time.Minute)
	for op, err := range map[string]error{
		"get":    getErr,
		"set":    s.Set(ctx, key, store.Item{Value: secret, ExpiresAt: time.Now().Add(2 * time.Hour)}),
		"lock":   lockErr,
		"unlock": l.Unlock(ctx),
		"extend": l.(store.Extender).Extend(ctx, time.Minute),
	} {
		var oe *store.OpError
		switch {
		case err == nil:
			t.Errorf("%s with the server down: no error", op)
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrLeaseLost):
			t.Errorf("%s with the server down: %v, an outage reported as a normal outcome", op, err)
		case !errors.As(err, &oe) || oe.Backend != "memcachestore" || oe.Op != op:
			t.Errorf("%s with the server down: %#v, want *store.OpError{memcachestore %s}", op, err, op)
		case !strings.HasPrefix(err.Error(), "memcachestore: "+op+" "):
			t.Errorf("%s: error %q does not start with the package and operation", op, err)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%s: error reveals the value: %q", op, err)
		}
	}

	// memcached comes back empty.
	srv.Start()
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after restart: %v, want ErrNotFound", err)
	}
	if err := s.Set(ctx, key, store.Item{Value: "v2", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("Set after restart: %v", err)
	}
	if got, err := s.Get(ctx, key); err != nil || got.Value != "v2" {
		t.Fatalf("Get after restart = %v, %v", got, err)
	}
	l2, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock after restart: %v", err)
	}
	if err := l2.(store.Extender).Extend(ctx, time.Minute); err != nil {
		t.Fatalf("Extend after restart: %v", err)
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatalf("Unlock after restart: %v", err)
	}
}
