package memcachestore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/memcachestore"
)

// A deployment shares its credentials through the memcached client it
// already has. One node takes the lease, grants, sets and releases; the
// others read, and poll while they wait (memcached has no pub/sub).
// It needs a memcached server, so it is compiled but not run.
func Example() {
	mc := memcache.New("localhost:11211")
	defer mc.Close()
	s, err := memcachestore.New(mc, memcachestore.WithPrefix("shop-prod:"))
	if err != nil {
		log.Fatal(err) // a nil client, or a prefix memcached cannot hold
	}
	defer s.Close() // the Store's own state only: mc stays ours to close

	ctx := context.Background()
	const key = "{wx123}:access_token"
	lease, err := s.Lock(ctx, key, 30*time.Second) // held 31 to 32 s: whole seconds, plus one
	switch {
	case errors.Is(err, store.ErrLocked):
		fmt.Println("another node is granting; poll Get until its item appears")
		return
	case errors.Is(err, memcachestore.ErrInvalidKey):
		log.Fatal(err) // prefix and key must fit memcached's key rules
	case err != nil:
		log.Fatal(err) // an outage, not a miss
	}
	defer lease.Unlock(ctx)

	// ... call WeChat for a new token ...
	if err := s.Set(ctx, key, store.Item{Value: "new-token", ExpiresAt: time.Now().Add(7200 * time.Second)}); err != nil {
		log.Fatal(err)
	}
}
