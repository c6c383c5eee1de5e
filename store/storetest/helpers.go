package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// within runs f and fails the test if it has not returned after d. On that
// failure f's goroutine is left behind; the test has failed anyway.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// show prints a test item in full: the values are made up by the tests.
func show(it store.Item) string {
	return fmt.Sprintf("{Value:%q ExpiresAt:%s}", it.Value, it.ExpiresAt.Format(time.RFC3339Nano))
}

// sameItem reports whether got is want, its expiry kept to the millisecond.
func sameItem(got, want store.Item) bool {
	d := got.ExpiresAt.Sub(want.ExpiresAt)
	return got.Value == want.Value && d > -time.Millisecond && d < time.Millisecond
}

// tokenValue looks like an access token and carries characters that break
// careless quoting (SQL, Lua, JSON, shells) and non-ASCII text.
func tokenValue(tag string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	var b strings.Builder
	b.WriteString(tag)
	b.WriteString(`-"quote'\backslash%percent:colon{brace} space;semi 令牌-`)
	for range 160 {
		b.WriteByte(alphabet[rand.IntN(len(alphabet))])
	}
	return b.String()
}

// mustSet sets item and fails the test on an error.
func mustSet(t *testing.T, s store.Store, key string, item store.Item) {
	t.Helper()
	if err := s.Set(t.Context(), key, item); err != nil {
		t.Fatalf("Set(%q, %s) failed: %v", key, show(item), err)
	}
}

// mustGet gets an item that must be there.
func mustGet(t *testing.T, s store.Store, key string) store.Item {
	t.Helper()
	got, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q) after a Set: want the item, got error %v", key, err)
	}
	return got
}

// mustLock takes a lease that must be free.
func mustLock(t *testing.T, s store.Store, key string, ttl time.Duration, why string) store.Lease {
	t.Helper()
	l, err := s.Lock(t.Context(), key, ttl)
	if err != nil {
		t.Fatalf("lease: Lock(%q, %v) %s: want a lease, got %v", key, ttl, why, err)
	}
	if l == nil {
		t.Fatalf("lease: Lock(%q, %v) returned a nil Lease and a nil error", key, ttl)
	}
	return l
}

// mustUnlock releases a lease and fails the test on an error.
func mustUnlock(t *testing.T, l store.Lease, why string) {
	t.Helper()
	if err := l.Unlock(t.Context()); err != nil {
		t.Errorf("lease: Unlock %s: want nil, got %v", why, err)
	}
}

// wantLocked checks that a Lock on a held key returns ErrLocked at once. A
// lease it gets anyway is released.
func (r *runner) wantLocked(t *testing.T, s store.Store, key string, rule string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), r.prompt())
	defer cancel()
	l, err := s.Lock(ctx, key, r.long())
	switch {
	case err == nil:
		t.Errorf("%s: Lock(%q) got a lease; want ErrLocked", rule, key)
		if l != nil {
			_ = l.Unlock(t.Context())
		}
	case errors.Is(err, store.ErrLocked):
	case ctx.Err() != nil:
		t.Errorf("%s: Lock(%q) of a held key did not return within %v (%v); Lock must return ErrLocked at once, not wait for the lease", rule, key, r.prompt(), err)
	default:
		t.Errorf("%s: Lock(%q): want ErrLocked (errors.Is), got %v", rule, key, err)
	}
}

// acquire polls Lock until it gets the lease that expires at about
// expiresAt, and reports how long after start it got in. It fails the test
// when patience runs out.
func (r *runner) acquire(t *testing.T, s store.Store, key string, ttl time.Duration, start, expiresAt time.Time) (store.Lease, time.Duration) {
	t.Helper()
	deadline := expiresAt.Add(r.patience())
	for {
		l, err := s.Lock(t.Context(), key, ttl)
		if err == nil {
			if l == nil {
				t.Fatalf("lease: Lock(%q) returned a nil Lease and a nil error", key)
			}
			return l, time.Since(start)
		}
		if !errors.Is(err, store.ErrLocked) {
			t.Fatalf("lease: Lock(%q) while waiting for an expired lease: want a lease or ErrLocked, got %v", key, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease expiry: the lease on %q, taken for %v and never unlocked, still refused a new holder %v after its TTL ran out; a holder that crashes must block no one past its TTL",
				key, expiresAt.Sub(start), time.Since(expiresAt).Round(time.Millisecond))
		}
		time.Sleep(r.poll())
	}
}

// checkNotEarly fails the test when a new holder got in well before the
// first lease's TTL ran out.
func (r *runner) checkNotEarly(t *testing.T, key string, ttl, after time.Duration) {
	t.Helper()
	if after < ttl-r.g() {
		t.Errorf("lease expiry: a new holder got the lease on %q %v after it was taken for %v without Unlock; the lease must hold for its whole TTL (within the granularity %v)",
			key, after.Round(time.Millisecond), ttl, r.g())
	}
}
