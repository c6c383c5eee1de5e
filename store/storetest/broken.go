package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The Broken group, with WithBroken: an outage is an error, never a miss or
// a held lease, and never reveals a secret.

// secretValue is what the broken store is asked to Set; it must not appear
// in any error.
const secretValue = "S3CR3T-storetest-access-token-must-not-leak"

func testBroken(t *testing.T, r *runner) {
	if r.cfg.broken == nil {
		t.Skip("storetest: no WithBroken option; that outages are errors and not misses is not checked")
	}
	b := r.cfg.broken(t)
	if b == nil {
		t.Fatal("storetest: the WithBroken func returned a nil Store")
	}
	ctx, cancel := context.WithTimeout(t.Context(), r.prompt())
	defer cancel()
	check := func(op string, err error) {
		t.Helper()
		switch {
		case err == nil:
			t.Errorf("outage: %s on a broken store returned nil; want an error", op)
		case errors.Is(err, store.ErrNotFound):
			t.Errorf("outage: %s on a broken store returned ErrNotFound (%v); an outage must be an error, not a miss", op, err)
		case errors.Is(err, store.ErrLocked):
			t.Errorf("outage: %s on a broken store returned ErrLocked (%v); an outage must be an error, not a held lease", op, err)
		case strings.Contains(err.Error(), secretValue):
			t.Errorf("secrets: %s on a broken store returned an error that reveals the item's value: %v", op, err)
		}
	}
	var err error
	within(t, 3*r.prompt(), "Get on a broken store", func() { _, err = b.Get(ctx, keyToken) })
	check("Get", err)
	within(t, 3*r.prompt(), "Set on a broken store", func() {
		err = b.Set(ctx, keyToken, store.Item{Value: secretValue, ExpiresAt: time.Now().Add(time.Hour)})
	})
	check("Set", err)
	var l store.Lease
	within(t, 3*r.prompt(), "Lock on a broken store", func() { l, err = b.Lock(ctx, keyToken, r.long()) })
	check("Lock", err)
	if err == nil && l != nil {
		_ = l.Unlock(ctx)
	}
	if w, ok := b.(store.Watcher); ok {
		var ch <-chan struct{}
		within(t, 3*r.prompt(), "Watch on a broken store", func() { ch, err = w.Watch(ctx, keyToken) })
		check("Watch", err)
		if err == nil && ch != nil {
			cancel()
		}
	}
}
