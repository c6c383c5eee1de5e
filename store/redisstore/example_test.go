package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/redisstore"
)

// A deployment shares its credentials through the Redis client it already
// has (redis.NewClusterClient or redis.NewFailoverClient work the same way).
// One node takes the lease, grants, sets and releases; the others read.
// It needs a Redis server, so it is compiled but not run.
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	s, err := redisstore.New(rdb, redisstore.WithPrefix("shop-prod:"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close() // ends the Store's watches; rdb stays ours to close

	ctx := context.Background()
	const key = "{wx123}:access_token" // the braces keep one app in one cluster slot
	lease, err := s.Lock(ctx, key, 30*time.Second)
	switch {
	case errors.Is(err, store.ErrLocked):
		fmt.Println("another node is granting; wait for it")
		return
	case err != nil:
		log.Fatal(err) // an outage, not a miss
	}
	defer lease.Unlock(ctx)

	// ... call WeChat for a new token ...
	if err := s.Set(ctx, key, store.Item{Value: "new-token", ExpiresAt: time.Now().Add(7200 * time.Second)}); err != nil {
		log.Fatal(err)
	}
}

// Nodes that wait for another node's grant can watch the key instead of
// polling: the channel wakes them as soon as the new item is set.
func ExampleStore_Watch() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	s, err := redisstore.New(rdb)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel() // ends the subscription
	const key = "{wx123}:access_token"
	changed, err := s.Watch(ctx, key)
	if err != nil {
		log.Fatal(err)
	}
	for {
		item, err := s.Get(ctx, key)
		if err == nil && item.Fresh(time.Now(), time.Minute) {
			fmt.Println("got", item) // Item redacts its value
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Second): // notifications are hints: poll too
		case <-ctx.Done():
			log.Fatal(ctx.Err())
		}
	}
}
