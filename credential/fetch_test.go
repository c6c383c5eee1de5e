package credential_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

// remote plays a token server for a node that never grants: Fetch returns
// its current value; Invalidate replaces the current value only when it is
// the rejected one (compare-then-refresh), as the server does.
type remote struct {
	mu          sync.Mutex
	cur         string
	n           int
	fetches     atomic.Int64
	invalidates atomic.Int64
	rejected    []string
}

func (r *remote) item() store.Item {
	return store.Item{Value: r.cur, ExpiresAt: time.Now().Add(2 * time.Hour)}
}

func (r *remote) fetch(context.Context) (store.Item, error) {
	r.fetches.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == "" {
		r.n++
		r.cur = fmt.Sprintf("R%d", r.n)
	}
	return r.item(), nil
}

func (r *remote) invalidate(_ context.Context, rejected string) (store.Item, error) {
	r.invalidates.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected = append(r.rejected, rejected)
	if r.cur == rejected || r.cur == "" {
		r.n++
		r.cur = fmt.Sprintf("R%d", r.n)
	}
	return r.item(), nil
}

func fetchKeeper(t *testing.T, st store.Store, r *remote, withInvalidate bool) *credential.Keeper {
	t.Helper()
	cfg := credential.Config{Name: "access_token", Key: "{app}:access_token", Store: st, Fetch: r.fetch}
	if withInvalidate {
		cfg.Invalidate = r.invalidate
	}
	k, err := credential.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func TestNewRefusesInvalidateWithoutFetch(t *testing.T) {
	r := &remote{}
	_, err := credential.New(credential.Config{Name: "n", Key: "k", Store: store.NewMemory(), Invalidate: r.invalidate})
	if err == nil || !strings.Contains(err.Error(), "Config.Invalidate needs Config.Fetch") {
		t.Fatalf("New: %v; want Config.Invalidate needs Config.Fetch", err)
	}
}

// A rejection on a Fetch node goes to Config.Invalidate with the rejected
// value; concurrent reports make one call; ordinary refreshes use Fetch.
func TestInvalidateFuncGetsTheRejectedValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &remote{}
		k := fetchKeeper(t, store.NewMemory(), r, true)
		first, err := k.Get(t.Context())
		if err != nil || first.Value != "R1" {
			t.Fatalf("Get: %v, %v", first, err)
		}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				got, err := k.Invalidate(t.Context(), first.Value)
				if err != nil || got.Value != "R2" {
					t.Errorf("Invalidate: %v, %v; want R2", got, err)
				}
			})
		}
		wg.Wait()
		if f, i := r.fetches.Load(), r.invalidates.Load(); f != 1 || i != 1 {
			t.Errorf("%d fetches, %d invalidates; want 1 and 1", f, i)
		}
		if len(r.rejected) != 1 || r.rejected[0] != "R1" {
			t.Errorf("the invalidate function was told %q; want [R1]", r.rejected)
		}
		// A stale report of a value the node no longer holds costs
		// nothing: the local store holds the replacement.
		if got, err := k.Invalidate(t.Context(), "R1"); err != nil || got.Value != "R2" {
			t.Errorf("stale Invalidate: %v, %v", got, err)
		}
		if i := r.invalidates.Load(); i != 1 {
			t.Errorf("a stale report reached the source: %d invalidates", i)
		}
	})
}

// Without Config.Invalidate a rejection falls back to Fetch, which here
// still answers the rejected value: refused, as before.
func TestInvalidateWithoutInvalidateFuncUsesFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &remote{}
		k := fetchKeeper(t, store.NewMemory(), r, false)
		first, err := k.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, err = k.Invalidate(t.Context(), first.Value)
		if !errors.Is(err, credential.ErrUnavailable) || !strings.Contains(err.Error(), "rejected") {
			t.Errorf("Invalidate: %v; want ErrUnavailable: the function returned the rejected value", err)
		}
		if strings.Contains(err.Error(), first.Value) {
			t.Errorf("the error shows the credential: %v", err)
		}
		if r.invalidates.Load() != 0 || r.fetches.Load() != 2 {
			t.Errorf("fetches %d, invalidates %d; want 2 and 0", r.fetches.Load(), r.invalidates.Load())
		}
	})
}

// An error of the invalidate function reaches the caller, wrapped, and the
// typed error inside stays matchable.
func TestInvalidateFuncErrorIsWrapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &remote{}
		limited := &credential.RefreshLimitedError{Name: "access_token", Next: time.Now().Add(time.Minute)}
		k, err := credential.New(credential.Config{
			Name: "access_token", Key: "k", Store: store.NewMemory(), Fetch: r.fetch,
			Invalidate: func(context.Context, string) (store.Item, error) { return store.Item{}, limited },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		first, err := k.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, err = k.Invalidate(t.Context(), first.Value)
		var le *credential.RefreshLimitedError
		if !errors.Is(err, credential.ErrRefreshLimited) || !errors.As(err, &le) || le != limited {
			t.Errorf("Invalidate: %v; want the RefreshLimitedError, wrapped", err)
		}
	})
}
