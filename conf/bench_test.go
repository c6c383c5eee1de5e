package conf_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// The hot path: a fresh local copy. Aim: well under 50 ns, 0 allocs.
func BenchmarkAccessTokenHot(b *testing.B) {
	c := node(b, wechattest.New(), store.NewMemory())
	ctx := context.Background()
	if _, err := c.AccessToken(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.AccessToken(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// The hot path from every core at once: nothing is shared but atomics that
// are only read.
func BenchmarkAccessTokenHotParallel(b *testing.B) {
	c := node(b, wechattest.New(), store.NewMemory())
	ctx := context.Background()
	if _, err := c.AccessToken(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.AccessToken(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A node's first call: a new Conf finds a fresh token in the store (memory)
// and keeps it. New's cost is included.
func BenchmarkAccessTokenNewNodeFromStore(b *testing.B) {
	fake := wechattest.New()
	st := store.NewMemory()
	ctx := context.Background()
	if _, err := node(b, fake, st).AccessToken(ctx); err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: wechattest.InProcess(fake)}
	b.ReportAllocs()
	for b.Loop() {
		c, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret), conf.WithHTTPClient(client), conf.WithStore(st))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.AccessToken(ctx); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	if g := fake.Stats().TokenGrants; g != 1 {
		b.Fatalf("%d grants, want 1", g)
	}
}

// The cold path: a forced grant under the lease against the in-process fake.
func BenchmarkGrantAccessToken(b *testing.B) {
	fake := wechattest.New(wechattest.WithDailyQuota(1 << 30))
	c := node(b, fake, store.NewMemory())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.GrantAccessToken(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
