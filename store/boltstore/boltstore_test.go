package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// open returns a Store on a fresh file in t.TempDir, closed by t.Cleanup.
func open(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "wechatconf.db"), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wantOpErr checks that err is a *store.OpError from this package for op
// and key, and that it matches target.
func wantOpErr(t *testing.T, err error, op, key string, target error) {
	t.Helper()
	var oe *store.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("%s %q: error %v (%T) is not a *store.OpError", op, key, err, err)
	}
	if oe.Backend != "boltstore" || oe.Op != op || oe.Key != key {
		t.Fatalf("OpError = {%q %q %q}, want {boltstore %q %q}", oe.Backend, oe.Op, oe.Key, op, key)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("%s %q: error %v does not match %v", op, key, err, target)
	}
	if !strings.HasPrefix(err.Error(), "boltstore: "+op+" ") {
		t.Fatalf("error text %q does not start with the package and operation", err)
	}
}

func TestGetSetRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	_, err := s.Get(ctx, "wx1:access_token")
	wantOpErr(t, err, "get", "wx1:access_token", store.ErrNotFound)

	exp := time.Now().Add(2 * time.Hour).Round(0)
	exp = exp.Add(123 * time.Nanosecond) // nanoseconds must survive
	if err := s.Set(ctx, "wx1:access_token", store.Item{Value: "tok-1", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "wx1:access_token")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != "tok-1" || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("Get = %v %v, want tok-1 %v", got.Value, got.ExpiresAt, exp)
	}
	// Another key is still absent: keys do not bleed into each other.
	if _, err := s.Get(ctx, "wx1:jsapi_ticket"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other key: %v, want ErrNotFound", err)
	}
}

func TestExpiredItemIsNotFound(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.Set(ctx, "k", store.Item{Value: "old", ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "k")
	wantOpErr(t, err, "get", "k", store.ErrNotFound)

	// A zero expiry is long past as well.
	if err := s.Set(ctx, "z", store.Item{Value: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "z"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("zero expiry: %v, want ErrNotFound", err)
	}
}

func TestExpiredItemIsDroppedBySet(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	past := time.Now().Add(-time.Minute)
	if err := s.Set(ctx, "k", store.Item{Value: "dead", ExpiresAt: past}); err != nil {
		t.Fatal(err)
	}
	// An even older item loses, and the dead one goes with it.
	if err := s.Set(ctx, "k", store.Item{Value: "older", ExpiresAt: past.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(s.bucket).Bucket(itemsBucket).Get([]byte("k")); v != nil {
			return fmt.Errorf("expired record still stored (%d bytes)", len(v))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewerWins(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Now()
	later := store.Item{Value: "later", ExpiresAt: now.Add(2 * time.Hour)}
	sooner := store.Item{Value: "sooner", ExpiresAt: now.Add(time.Hour)}
	if err := s.Set(ctx, "k", later); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "k", sooner); err != nil {
		t.Fatalf("a losing Set is not an error: %v", err)
	}
	got, err := s.Get(ctx, "k")
	if err != nil || got.Value != "later" {
		t.Fatalf("Get = %v, %v; want the later item", got, err)
	}
	// Equal expiry does not replace either: only strictly newer wins.
	if err := s.Set(ctx, "k", store.Item{Value: "same", ExpiresAt: later.ExpiresAt}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "k"); got.Value != "later" {
		t.Fatalf("equal expiry replaced the item: %v", got.Value)
	}
}

func TestLockedErrorShape(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.Lock(ctx, "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err := s.Lock(ctx, "k", time.Minute)
	wantOpErr(t, err, "lock", "k", store.ErrLocked)
}

// waitPast sleeps until d has certainly passed since start.
func waitPast(start time.Time, d time.Duration) {
	time.Sleep(time.Until(start.Add(d)) + 10*time.Millisecond)
}

func TestExtend(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const ttl = 150 * time.Millisecond
	start := time.Now()
	l, err := s.Lock(ctx, "k", ttl)
	if err != nil {
		t.Fatal(err)
	}
	ext, ok := l.(store.Extender)
	if !ok {
		t.Fatalf("%T does not implement store.Extender", l)
	}
	if err := ext.Extend(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitPast(start, ttl)
	// Extended: still held past the original ttl.
	if _, err := s.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("after Extend: %v, want ErrLocked", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	err = ext.Extend(ctx, time.Hour)
	wantOpErr(t, err, "extend", "k", store.ErrLeaseLost)

	// A lease that ran out is lost even if nobody took it.
	start = time.Now()
	l2, err := s.Lock(ctx, "k", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitPast(start, 50*time.Millisecond)
	if err := l2.(store.Extender).Extend(ctx, time.Hour); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("Extend after expiry: %v, want ErrLeaseLost", err)
	}
}

func TestCancelledContext(t *testing.T) {
	s := open(t)
	l, err := s.Lock(context.Background(), "held", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks := map[string]error{}
	_, checks["get"] = s.Get(ctx, "k")
	checks["set"] = s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)})
	_, checks["lock"] = s.Lock(ctx, "k", time.Minute)
	checks["unlock"] = l.Unlock(ctx)
	checks["extend"] = l.(store.Extender).Extend(ctx, time.Minute)
	_, checks["watch"] = s.Watch(ctx, "k")
	for op, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled ctx: %v, want context.Canceled", op, err)
		}
	}
	// Nothing happened: the lease is still held, the item absent.
	if _, err := s.Lock(context.Background(), "held", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Unlock with a cancelled ctx released the lease: %v", err)
	}
	if _, err := s.Get(context.Background(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Set with a cancelled ctx stored the item: %v", err)
	}
}

func TestClosedStoreErrorsAreNotMisses(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	l, err := s.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = s.Get(ctx, "k")
	wantOpErr(t, err, "get", "k", store.ErrClosed)
	if errors.Is(err, store.ErrNotFound) {
		t.Fatal("Get on a closed store reported a miss")
	}
	wantOpErr(t, s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}), "set", "k", store.ErrClosed)
	_, err = s.Lock(ctx, "k", time.Minute)
	wantOpErr(t, err, "lock", "k", store.ErrClosed)
	wantOpErr(t, l.Unlock(ctx), "unlock", "k", store.ErrClosed)
	_, err = s.Watch(ctx, "k")
	wantOpErr(t, err, "watch", "k", store.ErrClosed)
}

// A DB closed behind the Store's back (New does not own it) gives bbolt's
// error, not a miss.
func TestClosedDBErrorsAreNotMisses(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db.Close()
	_, err = s.Get(context.Background(), "k")
	wantOpErr(t, err, "get", "k", berrors.ErrDatabaseNotOpen)
	if errors.Is(err, store.ErrNotFound) {
		t.Fatal("closed DB reported as a miss")
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := New(nil); err == nil || !strings.Contains(err.Error(), "db is nil") {
		t.Errorf("New(nil): %v", err)
	}
	if _, err := Open(""); err == nil || !strings.Contains(err.Error(), "path is empty") {
		t.Errorf("Open(\"\"): %v", err)
	}
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "a.db"), WithBucket("")); err == nil || !strings.Contains(err.Error(), "WithBucket") {
		t.Errorf("WithBucket(\"\"): %v", err)
	}
	if _, err := Open(filepath.Join(dir, "a.db"), WithTimeout(0)); err == nil || !strings.Contains(err.Error(), "WithTimeout") {
		t.Errorf("WithTimeout(0): %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing-dir", "a.db")); err == nil || !strings.Contains(err.Error(), "boltstore: open") {
		t.Errorf("Open in a missing directory: %v", err)
	}
	s := open(t)
	if _, err := s.Get(ctx, ""); err == nil || !strings.Contains(err.Error(), "key is empty") {
		t.Errorf("Get(\"\"): %v", err)
	}
	if err := s.Set(ctx, "", store.Item{}); err == nil {
		t.Error("Set(\"\") succeeded")
	}
	if _, err := s.Lock(ctx, "k", 0); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Errorf("Lock with ttl 0: %v", err)
	}
	l, err := s.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.(store.Extender).Extend(ctx, -time.Second); err == nil || !strings.Contains(err.Error(), "ttl") {
		t.Errorf("Extend with a negative ttl: %v", err)
	}
	var nilCtx context.Context
	if _, err := s.Get(nilCtx, "k"); err == nil {
		t.Error("Get with a nil ctx succeeded")
	}
}

// putRaw writes raw under key in s's items or leases bucket, behind the
// store's back.
func putRaw(t *testing.T, s *Store, bucket []byte, key string, raw []byte) {
	t.Helper()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(s.bucket).Bucket(bucket).Put([]byte(key), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// malformedItems are item records this package cannot decode: too short for
// the header, or nanoseconds out of range.
var malformedItems = [][]byte{
	{},
	[]byte("short"),
	[]byte("11 bytes..."),
	append(bytes.Repeat([]byte{0xff}, itemHeader), "SECRET"...),
	append([]byte{0, 0, 0, 0, 0x69, 0x55, 0xb9, 0x00, 0x3b, 0x9a, 0xca, 0x00}, "SECRET"...), // 1e9 ns
}

// TestCorruptRecordsHeal: garbage under an item's key is reported by Get as
// store.ErrMalformed (not a miss, not a bare error) and overwritten by Set,
// which used to fail on it for ever; a corrupt lease record does not wedge
// Lock, and Unlock and Extend of a lease see it as not theirs.
func TestCorruptRecordsHeal(t *testing.T) {
	ctx := context.Background()
	for i, raw := range malformedItems {
		s := open(t)
		putRaw(t, s, itemsBucket, "k", raw)
		_, err := s.Get(ctx, "k")
		wantOpErr(t, err, "get", "k", store.ErrMalformed)
		if errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("record %d: Get of a corrupt item: %v; want ErrMalformed, not a miss, not quoting the record", i, err)
		}
		want := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
		if err := s.Set(ctx, "k", want); err != nil {
			t.Fatalf("record %d: Set over a corrupt item: %v; want it overwritten", i, err)
		}
		if got, err := s.Get(ctx, "k"); err != nil || got.Value != "v" || !got.ExpiresAt.Equal(want.ExpiresAt) {
			t.Fatalf("record %d: Get after Set over a corrupt item = %v, %v", i, got, err)
		}
	}

	s := open(t)
	for _, raw := range [][]byte{{}, []byte("short"), bytes.Repeat([]byte{0xff}, leaseLen+1)} {
		putRaw(t, s, leasesBucket, "k", raw)
		l, err := s.Lock(ctx, "k", time.Minute)
		if err != nil {
			t.Fatalf("Lock over a corrupt lease record (%d bytes): %v; want the lease (a record nobody can read holds no lease)", len(raw), err)
		}
		if _, err := s.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("second Lock after taking over a corrupt lease: %v, want ErrLocked", err)
		}
		putRaw(t, s, leasesBucket, "k", raw)
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock of a lease whose record was overwritten with garbage: %v, want nil", err)
		}
		if err := l.(*lease).Extend(ctx, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("Extend of a lease whose record was overwritten with garbage: %v, want ErrLeaseLost", err)
		}
	}
}

// TestImplausibleItemsReplaced: records that decode but that WeChat cannot
// have granted (a poisoned expiry in 2100, an empty value) do not hold the
// key by newer-wins.
func TestImplausibleItemsReplaced(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []store.Item{
		{Value: "POISON", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Value: "", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Value: "", ExpiresAt: time.Now().Add(time.Hour)},
		{Value: "POISON", ExpiresAt: time.Unix(1<<62, 999999999)},
	} {
		s := open(t)
		putRaw(t, s, itemsBucket, "k", encodeItem(bad))
		want := store.Item{Value: "v", ExpiresAt: time.Now().Add(2 * time.Hour)}
		if err := s.Set(ctx, "k", want); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "k"); err != nil || got.Value != "v" {
			t.Errorf("Set over the implausible %v: Get = %v, %v; want it replaced", bad, got, err)
		}
	}
}

func TestSecretsStayOut(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	l, err := s.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("%x", l.(*lease).owner[:])
	for _, text := range []string{fmt.Sprint(l), fmt.Sprintf("%v", l), fmt.Sprintf("%+v", l)} {
		if strings.Contains(text, owner) {
			t.Fatalf("lease printed its owner: %s", text)
		}
	}
	// A losing Set's value appears in no error (there is none) and a
	// failing Set's value appears in its error neither.
	s.Close()
	err = s.Set(ctx, "k", store.Item{Value: "SECRET-TOKEN", ExpiresAt: time.Now().Add(time.Hour)})
	if err == nil || strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Fatalf("Set error: %v", err)
	}
}

// Many Confs in one process share one DB: several Stores from New on the
// same *bbolt.DB see each other's items, leases and Sets, and closing one
// leaves the DB open for the others.
func TestSharedDB(t *testing.T) {
	ctx := context.Background()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "shared.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(db, WithBucket("other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := b.Watch(wctx, "{wx1}:access_token")
	if err != nil {
		t.Fatal(err)
	}
	item := store.Item{Value: "t1", ExpiresAt: time.Now().Add(time.Hour)}
	if err := a.Set(ctx, "{wx1}:access_token", item); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("a Set through one Store did not wake a watcher on another Store of the same DB")
	}
	if got, err := b.Get(ctx, "{wx1}:access_token"); err != nil || got.Value != "t1" {
		t.Fatalf("b.Get = %v, %v", got, err)
	}
	if _, err := other.Get(ctx, "{wx1}:access_token"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another bucket sees the item: %v", err)
	}
	if _, err := a.Lock(ctx, "{wx1}:access_token", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(ctx, "{wx1}:access_token", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("lease not shared between Stores of one DB: %v", err)
	}
	if _, err := b.Lock(ctx, "{wx2}:access_token", time.Minute); err != nil {
		t.Fatalf("another app's key: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "{wx1}:access_token"); err != nil {
		t.Fatalf("closing a Store from New closed the DB: %v", err)
	}
	// b's watcher survives a's Close and still hears Sets.
	if err := b.Set(ctx, "{wx1}:access_token", store.Item{Value: "t2", ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatal("closing Store a closed a watcher made through b")
		}
	default:
		t.Fatal("watcher not woken after the other Store closed")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("watch channel still open after its Store closed")
	}
	hubs.mu.Lock()
	n := len(hubs.m)
	_, stillThere := hubs.m[hubID{db, DefaultBucket}]
	hubs.mu.Unlock()
	if stillThere {
		t.Fatalf("hub kept after its last Store closed (%d hubs)", n)
	}
}

func TestWatch(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	wctx, cancel := context.WithCancel(ctx)
	ch, err := s.Watch(wctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	// Set wakes synchronously (before Set returns), so a non-blocking
	// receive tells exactly whether a notification was sent.
	if err := s.Set(ctx, "other", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("woken by a Set on another key")
	default:
	}
	// Notifications coalesce: three Sets, one pending value, no blocking.
	for i := range 3 {
		if err := s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour + time.Duration(i)*time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ch:
	default:
		t.Fatal("not woken by a Set on the key")
	}
	select {
	case <-ch:
		t.Fatal("more than one pending notification")
	default:
	}
	cancel()
	for range ch { // closed once ctx is done
	}
	if n := watcherCount(s); n != 0 {
		t.Fatalf("%d watchers left after ctx ended", n)
	}

	// Close ends the others.
	ch2, err := s.Watch(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, ok := <-ch2; ok {
		t.Fatal("channel not closed by Close")
	}
}

func TestManyWatchesLeaveNothingBehind(t *testing.T) {
	s := open(t)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			ch, err := s.Watch(ctx, fmt.Sprintf("k%d", i%7))
			if err != nil {
				t.Error(err)
				cancel()
				return
			}
			cancel()
			for range ch {
			}
		})
	}
	wg.Wait()
	if n := watcherCount(s); n != 0 {
		t.Fatalf("%d watchers left after all their contexts ended", n)
	}
	// A ctx that is already done when the watcher would be added gives a
	// closed channel or an error, never a watcher that nobody removes.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ch, err := s.Watch(ctx, "k"); err == nil {
		if _, ok := <-ch; ok {
			t.Fatal("Watch with a done ctx returned an open channel")
		}
	}
	if n := watcherCount(s); n != 0 {
		t.Fatalf("%d watchers left", n)
	}
}

func watcherCount(s *Store) int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	n := 0
	for _, set := range s.hub.watchers {
		n += len(set)
	}
	return n
}

// A restart keeps the token (no grant spent) and the live lease.
func TestRestartKeepsTokenAndLease(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "wechatconf.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(2 * time.Hour)
	if err := s.Set(ctx, "{wx1}:access_token", store.Item{Value: "kept", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "{wx1}:access_token", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer s.Close()
	got, err := s.Get(ctx, "{wx1}:access_token")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value != "kept" || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("after restart: %v, want kept %v", got, exp)
	}
	if _, err := s.Lock(ctx, "{wx1}:access_token", time.Hour); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("lease from before the restart: %v, want ErrLocked", err)
	}
}

// A second Open of a file this process holds fails with ErrFileLocked after
// the timeout instead of hanging.
func TestSecondOpenFailsWithFileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wechatconf.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	done := make(chan error, 1)
	go func() {
		s2, err := Open(path, WithTimeout(100*time.Millisecond))
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(time.Minute): // a hang detector, not a timing check
		t.Fatal("second Open hung")
	}
	if !errors.Is(err, ErrFileLocked) || !errors.Is(err, berrors.ErrTimeout) {
		t.Fatalf("second Open: %v, want ErrFileLocked wrapping berrors.ErrTimeout", err)
	}
	for _, want := range []string{"boltstore: open", path, "in use", "redisstore", "pgstore", "memcachestore"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Once the holder closes, the file can be opened again: turns work.
	s.Close()
	s3, err := Open(path, WithTimeout(time.Second))
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s3.Close()
}

const helperEnv = "BOLTSTORE_TEST_OPEN_PATH"

// TestHelperOpen is not a test: TestSecondProcessFailsCleanly runs this test
// binary again with helperEnv set, and here the second process tries Open.
func TestHelperOpen(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestSecondProcessFailsCleanly")
	}
	s, err := Open(path, WithTimeout(200*time.Millisecond))
	if err == nil {
		s.Close()
		fmt.Println("HELPER: opened")
		os.Exit(0)
	}
	fmt.Printf("HELPER: locked=%v err=%v\n", errors.Is(err, ErrFileLocked), err)
	os.Exit(3)
}

func TestSecondProcessFailsCleanly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wechatconf.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	run := func() (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // hang detector
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperOpen$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("running helper: %v\n%s", err, out)
		}
		if ctx.Err() != nil {
			t.Fatalf("helper process hung:\n%s", out)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run()
	if code != 3 || !strings.Contains(out, "HELPER: locked=true") || !strings.Contains(out, "pgstore") {
		t.Fatalf("second process while the file is held: exit %d\n%s", code, out)
	}
	s.Close()
	out, code = run()
	if code != 0 || !strings.Contains(out, "HELPER: opened") {
		t.Fatalf("second process after Close: exit %d\n%s", code, out)
	}
}
