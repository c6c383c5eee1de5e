package storetest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Shape group: what every store's errors and Close look like, as far as
// the store.Store interface lets Run see it. A miss and a held lease are
// *store.OpError values naming the backend, the op and the key, and still
// match store.ErrNotFound and store.ErrLocked; a store that implements
// io.Closer fails every operation after Close with an error matching
// store.ErrClosed, ends its watches, and may be closed twice.

var shapeCases = []testCase{
	{"NotFoundIsOpError", testNotFoundIsOpError},
	{"LockedIsOpError", testLockedIsOpError},
	{"Close", testClose},
}

// wantOpError fails the test unless err is a *store.OpError for op on key
// whose message starts with its backend's name, and matches sentinel.
func wantOpError(t *testing.T, err error, op, key string, sentinel error, rule string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: %s(%q) returned %v; want an error matching %v (errors.Is)", rule, op, key, err, sentinel)
		return
	}
	var oe *store.OpError
	if !errors.As(err, &oe) {
		t.Errorf("%s: %s(%q) returned %v (%T); want a *store.OpError wrapping %v, so that the message names the backend, op and key", rule, op, key, err, err, sentinel)
		return
	}
	if oe.Op != op || oe.Key != key || oe.Backend == "" {
		t.Errorf("%s: %s(%q) returned a *store.OpError with Backend %q, Op %q, Key %q; want the package's name, %q and %q", rule, op, key, oe.Backend, oe.Op, oe.Key, op, key)
	}
	if !strings.HasPrefix(err.Error(), oe.Backend+": ") {
		t.Errorf("%s: %s(%q) returned %q; want the message to start with the backend's name, %q", rule, op, key, err, oe.Backend+": ")
	}
}

func testNotFoundIsOpError(t *testing.T, r *runner) {
	s, _ := r.stores(t)
	_, err := s.Get(t.Context(), keyOther)
	wantOpError(t, err, "get", keyOther, store.ErrNotFound, "shape: Get's miss")
}

func testLockedIsOpError(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	l := mustLock(t, s, keyToken, r.long(), "on a fresh key")
	defer mustUnlock(t, l, "by the holder")
	var err error
	within(t, r.prompt(), "Lock on a held key", func() { _, err = peer.Lock(t.Context(), keyToken, r.long()) })
	wantOpError(t, err, "lock", keyToken, store.ErrLocked, "shape: Lock's contention")
}

func testClose(t *testing.T, r *runner) {
	s := r.newStore(t)
	c, ok := s.(io.Closer)
	if !ok {
		t.Skip("storetest: the store does not implement io.Closer; nothing to close")
	}
	ctx := t.Context()
	mustSet(t, s, keyToken, store.Item{Value: tokenValue("close"), ExpiresAt: time.Now().Add(time.Hour)})
	l := mustLock(t, s, keyTicket, r.long(), "before Close")
	var watch <-chan struct{}
	if w, ok := s.(store.Watcher); ok {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := w.Watch(wctx, keyToken)
		if err != nil {
			t.Fatalf("close: Watch before Close: %v", err)
		}
		watch = ch
	}
	within(t, r.prompt(), "Close", func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: Close returned %v; want nil", err)
		}
	})
	closed := "close: after Close"
	_, err := s.Get(ctx, keyToken)
	wantOpError(t, err, "get", keyToken, store.ErrClosed, closed)
	wantOpError(t, s.Set(ctx, keyToken, store.Item{Value: tokenValue("after"), ExpiresAt: time.Now().Add(2 * time.Hour)}), "set", keyToken, store.ErrClosed, closed)
	_, err = s.Lock(ctx, keyOther, r.long())
	wantOpError(t, err, "lock", keyOther, store.ErrClosed, closed)
	wantOpError(t, l.Unlock(ctx), "unlock", keyTicket, store.ErrClosed, closed)
	if ext, ok := l.(store.Extender); ok {
		wantOpError(t, ext.Extend(ctx, r.long()), "extend", keyTicket, store.ErrClosed, closed)
	}
	if w, ok := s.(store.Watcher); ok {
		_, err := w.Watch(ctx, keyOther)
		wantOpError(t, err, "watch", keyOther, store.ErrClosed, closed)
	}
	if watch != nil {
		timer := time.NewTimer(r.prompt())
		defer timer.Stop()
	drain:
		for {
			select {
			case _, ok := <-watch:
				if !ok {
					break drain
				}
			case <-timer.C:
				t.Errorf("close: a Watch channel opened before Close was not closed within %v of Close; Close must end the store's watches", r.prompt())
				break drain
			}
		}
	}
	within(t, r.prompt(), "a second Close", func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: a second Close returned %v; Close must be idempotent and return nil", err)
		}
	})
}
