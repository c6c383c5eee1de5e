package bench

import (
	"context"
	"testing"
	"time"

	"github.com/bsm/redislock"

	"github.com/wechatconf/wechatconf/conf"
)

// leaseTTL is long enough that no lease in the loop expires on its own.
const leaseTTL = 10 * time.Second

// BenchmarkLease takes and releases the lease that guards a grant, once per
// iteration, uncontended: the cost a node pays around every grant. On Redis
// it runs next to bsm/redislock on the same server with the same go-redis
// client; the other backends have no such well-known library.
func BenchmarkLease(b *testing.B) {
	ctx := context.Background()
	for _, backend := range backends {
		b.Run("backend="+backend+"/impl=wechatconf", func(b *testing.B) {
			s := cluster(b, backend)()
			appID, _ := app()
			key := conf.Key(appID, conf.AccessToken)
			b.ReportAllocs()
			for b.Loop() {
				l, err := s.Lock(ctx, key, leaseTTL)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		if backend != "redis" {
			continue
		}
		b.Run("backend=redis/impl=redislock", func(b *testing.B) {
			locker := redislock.New(redisClient(b, server(b, envRedis)))
			appID, _ := app()
			key := conf.Key(appID, conf.AccessToken) + ":lock"
			b.ReportAllocs()
			for b.Loop() {
				l, err := locker.Obtain(ctx, key, leaseTTL, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
