package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Watch group, for stores that implement store.Watcher: a Set wakes a
// watcher, and the watch ends with its ctx.

func testWatchWakes(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	w, ok := s.(store.Watcher)
	if !ok {
		t.Skipf("storetest: the Store (%T) does not implement store.Watcher", s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := w.Watch(ctx, keyToken)
	if err != nil {
		t.Fatalf("watch: Watch(%q): %v", keyToken, err)
	}
	if ch == nil {
		t.Fatalf("watch: Watch(%q) returned a nil channel and a nil error", keyToken)
	}
	setters := []struct {
		name string
		h    store.Store
	}{{"the peer", peer}, {"the watching store", s}}
	if !r.hasPeer() {
		setters[0].name = "the store"
	}
	base := time.Now().Add(time.Hour)
	for i, setter := range setters {
		item := store.Item{Value: tokenValue("watched"), ExpiresAt: base.Add(time.Duration(i) * time.Minute)}
		mustSet(t, setter.h, keyToken, item)
		timer := time.NewTimer(r.prompt())
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatal("watch: the channel was closed while ctx was still live")
			}
		case <-timer.C:
			t.Fatalf("watch: Set on %s (set #%d) did not wake a watcher within %v; a watcher must be told each time an item is set, by this process or another",
				setter.name, i+1, r.prompt())
		}
		timer.Stop()
	}
}

func testWatchCancel(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	w, ok := s.(store.Watcher)
	if !ok {
		t.Skipf("storetest: the Store (%T) does not implement store.Watcher", s)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := w.Watch(ctx, keyToken)
	if err != nil {
		t.Fatalf("watch: Watch(%q): %v", keyToken, err)
	}
	mustSet(t, peer, keyToken, store.Item{Value: tokenValue("before-cancel"), ExpiresAt: time.Now().Add(time.Hour)})
	cancel()
	timer := time.NewTimer(r.prompt())
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("watch: the channel was not closed within %v of its ctx being cancelled; the watch must end with its ctx", r.prompt())
		}
	}
}
