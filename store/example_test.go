package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The memory store shares a credential between the goroutines of one
// process: the newer item wins, and a lease lets one of them grant.
func ExampleNewMemory() {
	ctx := context.Background()
	s := store.NewMemory()
	key := "{wx00000000000000a1}:access_token"

	now := time.Now()
	_ = s.Set(ctx, key, store.Item{Value: "TOKEN-2", ExpiresAt: now.Add(2 * time.Hour)})
	_ = s.Set(ctx, key, store.Item{Value: "TOKEN-1", ExpiresAt: now.Add(time.Hour)}) // older: loses
	item, err := s.Get(ctx, key)
	fmt.Println(item.Value, err)

	lease, err := s.Lock(ctx, key, 30*time.Second)
	fmt.Println("first lock:", err)
	_, err = s.Lock(ctx, key, 30*time.Second)
	fmt.Println("second lock:", err, errors.Is(err, store.ErrLocked))
	_ = lease.Unlock(ctx)

	_, err = s.Get(ctx, "{wx00000000000000a1}:jsapi_ticket")
	fmt.Println(errors.Is(err, store.ErrNotFound))
	// Output:
	// TOKEN-2 <nil>
	// first lock: <nil>
	// second lock: store: lock "{wx00000000000000a1}:access_token": store: locked true
	// true
}

// Watch tells a waiting goroutine at once that a new item was set.
func ExampleMemory_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := store.NewMemory()
	key := "{wx00000000000000a1}:access_token"

	changed, _ := s.Watch(ctx, key)
	go func() {
		_ = s.Set(ctx, key, store.Item{Value: "TOKEN", ExpiresAt: time.Now().Add(2 * time.Hour)})
	}()
	<-changed
	item, _ := s.Get(ctx, key)
	fmt.Println(item.Value)
	// Output: TOKEN
}

// legacyCache stands for the place where an application kept its token
// before, the way the Python SDK's access_token_getfunc and
// access_token_setfunc read and wrote (token, expires_at) pairs.
type legacyCache struct {
	mu      sync.Mutex
	token   map[string]string
	expires map[string]int64 // Unix seconds
}

// FromFuncs plugs an application's own get and set functions in as a
// Store. Its lease is in-process only: with several nodes, prefer a backend
// with a distributed lease.
func ExampleFromFuncs() {
	cache := &legacyCache{token: map[string]string{}, expires: map[string]int64{}}
	get := func(_ context.Context, key string) (store.Item, error) {
		cache.mu.Lock()
		defer cache.mu.Unlock()
		tok, ok := cache.token[key]
		if !ok {
			return store.Item{}, store.ErrNotFound
		}
		return store.Item{Value: tok, ExpiresAt: time.Unix(cache.expires[key], 0)}, nil
	}
	set := func(_ context.Context, key string, item store.Item) error {
		cache.mu.Lock()
		defer cache.mu.Unlock()
		cache.token[key] = item.Value
		cache.expires[key] = item.ExpiresAt.Unix()
		return nil
	}
	s := store.FromFuncs(get, set)

	ctx := context.Background()
	key := "{wx00000000000000a1}:access_token"
	expires := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	_ = s.Set(ctx, key, store.Item{Value: "TOKEN", ExpiresAt: expires})
	_ = s.Set(ctx, key, store.Item{Value: "STALE", ExpiresAt: expires.Add(-time.Hour)}) // older: skipped
	item, err := s.Get(ctx, key)
	fmt.Println(item.Value, item.ExpiresAt.Equal(expires), err)
	// Output: TOKEN true <nil>
}
