package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/record/recordtest"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

// key is shaped like the keys package conf uses.
const key = "{wx123}:access_token"

var prefixSeq atomic.Int64

// uniquePrefix gives each Store in a test run its own key space.
func uniquePrefix(t testing.TB) string {
	return fmt.Sprintf("test:%s:%d:", strings.ReplaceAll(t.Name(), "/", "."), prefixSeq.Add(1))
}

// newClient starts a Redis server for the test and returns a client for it.
func newClient(t testing.TB) (*testserver.Server, *redis.Client) {
	t.Helper()
	srv := testserver.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return srv, c
}

// newStore returns a Store with a unique prefix, its client and its prefix.
func newStore(t testing.TB) (*testserver.Server, *redis.Client, *redisstore.Store, string) {
	t.Helper()
	srv, c := newClient(t)
	p := uniquePrefix(t)
	return srv, c, redisstore.MustNew(t, c, redisstore.WithPrefix(p)), p
}

// TestRecords checks what follows from keeping items as internal/record
// records: the bytes under prefix+key, newer-wins to the nanosecond in the
// Lua script, expired items never written, and foreign records.
func TestRecords(t *testing.T) {
	_, c := newClient(t)
	recordtest.Run(t, recordtest.Backend{
		Name: "redisstore",
		New: func(t *testing.T) (store.Store, string) {
			p := uniquePrefix(t)
			return redisstore.MustNew(t, c, redisstore.WithPrefix(p)), p
		},
		Raw: func(t *testing.T, full string) ([]byte, bool) {
			rec, err := c.Get(t.Context(), full).Bytes()
			if err == redis.Nil {
				return nil, false
			}
			if err != nil {
				t.Fatalf("raw GET %q: %v", full, err)
			}
			return rec, true
		},
		Put: func(t *testing.T, full string, rec []byte) {
			if err := c.Set(t.Context(), full, rec, time.Hour).Err(); err != nil {
				t.Fatalf("raw SET %q: %v", full, err)
			}
		},
	})
}

// TestItemTTL checks the TTL Redis keeps an item for: it ends no later than
// the item.
func TestItemTTL(t *testing.T) {
	ctx := context.Background()
	_, c, s, p := newStore(t)
	if err := s.Set(ctx, key, store.Item{Value: "tok-1", ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	pttl, err := c.PTTL(ctx, p+key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pttl <= 0 || pttl > 2*time.Hour+time.Millisecond {
		t.Fatalf("PTTL = %v, want in (0, 2h]", pttl)
	}
}

func TestDefaultPrefix(t *testing.T) {
	ctx := context.Background()
	_, c := newClient(t)
	s := redisstore.MustNew(t, c)
	if err := s.Set(ctx, key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, "wechatconf:"+key).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS wechatconf:%s = %d, %v; want 1", key, n, err)
	}
	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, "wechatconf:"+key+":lock").Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS wechatconf:%s:lock = %d, %v; want 1", key, n, err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLease(t *testing.T) {
	ctx := context.Background()
	_, c, s, p := newStore(t)
	lockKey := p + key + ":lock"

	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if _, ok := l.(store.Extender); !ok {
		t.Fatalf("lease %T does not implement store.Extender", l)
	}
	owner, err := c.Get(ctx, lockKey).Result()
	if err != nil || len(owner) < 16 {
		t.Fatalf("lock record %q: %q, %v; want a random owner", lockKey, owner, err)
	}
	pttl, _ := c.PTTL(ctx, lockKey).Result()
	if pttl <= 0 || pttl > time.Minute {
		t.Fatalf("lock PTTL = %v, want in (0, 1m]", pttl)
	}
	if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Lock: err = %v, want ErrLocked", err)
	}
	// The lease lives apart from the item.
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get while locked: %v, want ErrNotFound", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if n, _ := c.Exists(ctx, lockKey).Result(); n != 0 {
		t.Fatal("lock record still there after Unlock")
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("second Unlock: %v, want nil", err)
	}
	l2, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	owner2, _ := c.Get(ctx, lockKey).Result()
	if owner2 == owner {
		t.Fatal("two leases got the same owner value")
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStaleHolder(t *testing.T) {
	ctx := context.Background()
	_, c, s, p := newStore(t)
	lockKey := p + key + ":lock"

	old, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The old lease runs out (as if its TTL passed) and a new holder takes it.
	if err := c.Del(ctx, lockKey).Err(); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock after expiry: %v", err)
	}
	owner, _ := c.Get(ctx, lockKey).Result()

	if err := old.Unlock(ctx); err != nil {
		t.Fatalf("stale Unlock: %v, want nil", err)
	}
	if got, _ := c.Get(ctx, lockKey).Result(); got != owner {
		t.Fatalf("stale Unlock changed the new holder's lease: %q -> %q", owner, got)
	}
	if err := old.(store.Extender).Extend(ctx, time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("stale Extend: %v, want ErrLeaseLost", err)
	}
	if pttl, _ := c.PTTL(ctx, lockKey).Result(); pttl > time.Minute {
		t.Fatalf("stale Extend changed the new holder's TTL to %v", pttl)
	}
	if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Lock: %v, want ErrLocked (the new holder's lease must stand)", err)
	}
	if err := cur.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Exists(ctx, lockKey).Result(); n != 0 {
		t.Fatal("the current holder's Unlock did not release")
	}
}

func TestExtend(t *testing.T) {
	ctx := context.Background()
	_, c, s, p := newStore(t)
	lockKey := p + key + ":lock"
	l, err := s.Lock(ctx, key, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ext := l.(store.Extender)
	if err := ext.Extend(ctx, time.Hour); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if pttl, _ := c.PTTL(ctx, lockKey).Result(); pttl <= time.Minute {
		t.Fatalf("PTTL after Extend(1h) = %v", pttl)
	}
	if err := ext.Extend(ctx, 0); err == nil {
		t.Fatal("Extend(0) succeeded")
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	err = ext.Extend(ctx, time.Hour)
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Extend after Unlock: %v, want ErrLeaseLost", err)
	}
	if n, _ := c.Exists(ctx, lockKey).Result(); n != 0 {
		t.Fatal("Extend after Unlock recreated the lease")
	}
}

func TestBadTTL(t *testing.T) {
	ctx := context.Background()
	_, _, s, _ := newStore(t)
	for _, ttl := range []time.Duration{0, -time.Second} {
		_, err := s.Lock(ctx, key, ttl)
		if err == nil || errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "ttl") {
			t.Fatalf("Lock(ttl %v): err = %v, want an error naming the ttl", ttl, err)
		}
	}
	// A sub-millisecond ttl still takes a lease (rounded up).
	l, err := s.Lock(ctx, key, time.Microsecond)
	if err != nil {
		t.Fatalf("Lock(1µs): %v", err)
	}
	l.Unlock(ctx)
}

func TestCancelledContext(t *testing.T) {
	_, _, s, _ := newStore(t)
	l, err := s.Lock(context.Background(), key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	item := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	_, getErr := s.Get(ctx, key)
	_, lockErr := s.Lock(ctx, "other", time.Minute)
	_, watchErr := s.Watch(ctx, key)
	for name, err := range map[string]error{
		"Get":    getErr,
		"Set":    s.Set(ctx, key, item),
		"Lock":   lockErr,
		"Unlock": l.Unlock(ctx),
		"Extend": l.(store.Extender).Extend(ctx, time.Minute),
		"Watch":  watchErr,
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled ctx: %v, want context.Canceled", name, err)
		}
	}
	// Nothing was done.
	if _, err := s.Get(context.Background(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Set with cancelled ctx wrote: %v", err)
	}
	if _, err := s.Lock(context.Background(), key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Unlock with cancelled ctx released: %v", err)
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
	_, watchErr := s.Watch(ctx, key)
	for op, err := range map[string]error{
		"get":    getErr,
		"set":    s.Set(ctx, key, store.Item{Value: secret, ExpiresAt: time.Now().Add(2 * time.Hour)}),
		"lock":   lockErr,
		"unlock": l.Unlock(ctx),
		"extend": l.(store.Extender).Extend(ctx, time.Minute),
		"watch":  watchErr,
	} {
		var oe *store.OpError
		switch {
		case err == nil:
			t.Errorf("%s with the server down: no error", op)
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrLocked), errors.Is(err, store.ErrLeaseLost):
			t.Errorf("%s with the server down: %v, an outage reported as a normal outcome", op, err)
		case !errors.As(err, &oe) || oe.Backend != "redisstore" || oe.Op != op:
			t.Errorf("%s with the server down: %#v, want *store.OpError{redisstore %s}", op, err, op)
		case !strings.HasPrefix(err.Error(), "redisstore: "+op+" "):
			t.Errorf("%s: error %q does not start with the package and operation", op, err)
		case strings.Contains(err.Error(), secret):
			t.Errorf("%s: error reveals the value: %q", op, err)
		}
	}

	// The server comes back empty (no persistence), with no scripts
	// cached: EVALSHA must fall back to EVAL.
	srv.Start()
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after restart: %v, want ErrNotFound", err)
	}
	it := store.Item{Value: "v2", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(ctx, key, it); err != nil {
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

// settle waits, bounded, until the goroutine count falls back to at most n.
func settle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receive waits, bounded, for a notification on ch.
func receive(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: watch channel closed", what)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no notification within 30s", what)
	}
}

// nextMessage waits, bounded, for a pub/sub message.
func nextMessage(t *testing.T, ch <-chan *redis.Message) *redis.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no pub/sub message within 30s")
		return nil
	}
}

func TestWatch(t *testing.T) {
	_, c, s, p := newStore(t)
	// Another node: its own client, the same server and prefix.
	c2 := redis.NewClient(&redis.Options{Addr: c.Options().Addr})
	defer c2.Close()
	other := redisstore.MustNew(t, c2, redisstore.WithPrefix(p))

	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, key)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	select {
	case <-ch:
		t.Fatal("notification before any Set")
	default:
	}
	if err := other.Set(context.Background(), key, store.Item{Value: "a", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "Set by another node")
	if err := s.Set(context.Background(), key, store.Item{Value: "b", ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "Set by this node")

	// Watching one key does not wake on another.
	if err := s.Set(context.Background(), "{wx999}:access_token", store.Item{Value: "x", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	cancel()
	for range ch {
		// Drain: at most the buffered notification, then closed.
	}
	settle(t, before)
	// The server drops the subscriber when it notices the closed
	// connection: wait for that, bounded.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.PubSubNumSub(context.Background(), p+key).Result()
		if err == nil && n[p+key] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB NUMSUB 20s after cancel = %v, %v; want 0 subscribers", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSetPublishesOnlyWhenItWrites(t *testing.T) {
	ctx := context.Background()
	_, c, s, p := newStore(t)
	sub := c.Subscribe(ctx, p+key)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	if err := s.Set(ctx, key, store.Item{Value: "new", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, key, store.Item{Value: "older", ExpiresAt: exp.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, p+key, "marker").Err(); err != nil {
		t.Fatal(err)
	}
	// Messages arrive in publish order: the winning Set's, then the
	// marker. A notification from the losing Set would come between.
	msgs := sub.Channel()
	for i, want := range []string{"1", "marker"} {
		m := nextMessage(t, msgs)
		if m.Payload != want {
			t.Fatalf("message %d = %q, want %q", i, m.Payload, want)
		}
	}
}

func TestWatchChannelPrefix(t *testing.T) {
	ctx := context.Background()
	_, c := newClient(t)
	s := redisstore.MustNew(t, c, redisstore.WithPrefix("k:"), redisstore.WithChannelPrefix("events:"))
	sub := c.Subscribe(ctx, "events:"+key)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, sub.Channel()); m.Channel != "events:"+key {
		t.Fatalf("message on %q, want one on events:%s", m.Channel, key)
	}
}

func TestWatchSurvivesRestart(t *testing.T) {
	srv, _, s, _ := newStore(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Start()
	// go-redis notices the drop and subscribes again; the watch
	// announces that (a Set may have been missed) and then sees new Sets.
	// Keep setting newer items until one is announced, bounded.
	deadline := time.Now().Add(60 * time.Second)
	var got bool
	for i := 1; !got; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no notification within 60s of a restart")
		}
		_ = s.Set(context.Background(), key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour + time.Duration(i))})
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed by a restart")
			}
			got = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	cancel()
	for range ch {
	}
	settle(t, before)
}

func TestWatchServerDown(t *testing.T) {
	srv, _, s, _ := newStore(t)
	before := runtime.NumGoroutine()
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := s.Watch(ctx, key)
	if err == nil || ch != nil {
		t.Fatalf("Watch with the server down: %v, %v; want an error", ch, err)
	}
	if ctx.Err() != nil {
		t.Fatal("Watch waited for ctx instead of failing")
	}
	settle(t, before)
}

// crc16 is the CRC-16/XMODEM that Redis Cluster hashes keys with.
func crc16(b string) uint16 {
	var crc uint16
	for i := 0; i < len(b); i++ {
		crc ^= uint16(b[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slot is Redis Cluster's hash slot of key, honouring hash tags.
func slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

func TestClusterSlots(t *testing.T) {
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16 check value = %#x, want 0x31c3", got)
	}
	ctx := context.Background()
	_, c := newClient(t)
	const p = "myapp:"
	s := redisstore.MustNew(t, c, redisstore.WithPrefix(p))
	// Take a lease and set an item, then look at the key names Redis holds.
	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if err := s.Set(ctx, key, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, p+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("keys = %q, want the item and its lease", keys)
	}
	want := slot("wx123")
	for _, k := range keys {
		if !strings.Contains(k, "{wx123}") {
			t.Errorf("key %q lost the hash tag", k)
		}
		if got := slot(k); got != want {
			t.Errorf("key %q hashes to slot %d, want %d (the app's slot)", k, got, want)
		}
	}
}
