package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Context group: an operation given a done ctx fails with ctx's error
// and changes nothing.

func testContextDone(t *testing.T, r *runner) {
	s, _ := r.stores(t)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	item := store.Item{Value: tokenValue("ctx"), ExpiresAt: time.Now().Add(time.Hour)}
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelled, context.Canceled}, {"past-deadline", expired, context.DeadlineExceeded}} {
		var err error
		within(t, r.prompt(), "Get with a "+c.name+" ctx", func() { _, err = s.Get(c.ctx, keyToken) })
		if !errors.Is(err, c.want) {
			t.Errorf("context: Get with a %s ctx: want an error matching %v, got %v", c.name, c.want, err)
		}
		within(t, r.prompt(), "Set with a "+c.name+" ctx", func() { err = s.Set(c.ctx, keyToken, item) })
		if !errors.Is(err, c.want) {
			t.Errorf("context: Set with a %s ctx: want an error matching %v, got %v", c.name, c.want, err)
		}
		var l store.Lease
		within(t, r.prompt(), "Lock with a "+c.name+" ctx", func() { l, err = s.Lock(c.ctx, keyToken, r.long()) })
		if !errors.Is(err, c.want) {
			t.Errorf("context: Lock with a %s ctx: want an error matching %v, got %v", c.name, c.want, err)
		}
		if err == nil && l != nil {
			_ = l.Unlock(t.Context())
		}
		if w, ok := s.(store.Watcher); ok {
			var ch <-chan struct{}
			within(t, r.prompt(), "Watch with a "+c.name+" ctx", func() { ch, err = w.Watch(c.ctx, keyToken) })
			switch {
			case err != nil && !errors.Is(err, c.want):
				t.Errorf("context: Watch with a %s ctx: want an error matching %v or a closed channel, got %v", c.name, c.want, err)
			case err == nil && ch == nil:
				t.Errorf("context: Watch with a %s ctx returned a nil channel and a nil error", c.name)
			case err == nil:
				within(t, r.prompt(), "closing the channel of a Watch with a "+c.name+" ctx", func() {
					for range ch {
					}
				})
			}
		}
	}
	// A Lock that failed on its ctx left no lease behind.
	l := mustLock(t, s, keyToken, r.long(), "after Locks that failed on a done ctx (they must leave no lease behind)")
	mustUnlock(t, l, "by the holder")
}
