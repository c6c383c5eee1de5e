package redisstore_test

import (
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/store/redisstore"
)

// A Store on a Redis Cluster. Give the client several nodes, so that the
// reload a failed call asks for reaches a live one, and keep the dial
// retries short, so that a call to a dead master fails (and asks for the
// reload) soon. WithFailoverReload is only needed to change the 500 ms
// between reloads, or with a negative gap to turn them off. It needs a
// cluster, so it is compiled but not run.
func ExampleWithFailoverReload() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:         []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
		DialTimeout:   time.Second,
		DialerRetries: 2,
	})
	defer rdb.Close()
	s, err := redisstore.New(rdb, redisstore.WithFailoverReload(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	_ = s // hand s to conf.WithStore
}
