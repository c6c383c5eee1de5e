package bench

import (
	"context"
	"testing"
)

// BenchmarkHotPath gets an access token that is already cached and valid,
// the call every request handler makes. Ours returns its local copy and
// touches the store only once a minute (WithReread); silenceper's
// officialaccount reads its cache on every call.
func BenchmarkHotPath(b *testing.B) {
	ctx := context.Background()
	for _, backend := range backends {
		b.Run("backend="+backend+"/impl=wechatconf", func(b *testing.B) {
			open := cluster(b, backend)
			appID, secret := app()
			srv := fake(b, appID, secret)
			c := ours(b, srv, appID, secret, open())
			want, err := c.AccessToken(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				got, err := c.AccessToken(ctx)
				if err != nil || got != want {
					b.Fatalf("AccessToken = %q, %v; want the cached token", got, err)
				}
			}
			if g := srv.Stats().TokenGrants; g != 1 {
				b.Fatalf("%d grants, want 1", g)
			}
		})
		if !peerBackends[backend] {
			continue
		}
		b.Run("backend="+backend+"/impl=silenceper", func(b *testing.B) {
			open := peerCache(b, backend)
			appID, secret := app()
			srv := fake(b, appID, secret)
			oa := theirs(srv, appID, secret, open())
			want, err := oa.GetAccessTokenContext(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				got, err := oa.GetAccessTokenContext(ctx)
				if err != nil || got != want {
					b.Fatalf("GetAccessTokenContext = %q, %v; want the cached token", got, err)
				}
			}
			if g := srv.Stats().TokenGrants; g != 1 {
				b.Fatalf("%d grants, want 1: the cache did not hold the token", g)
			}
		})
	}
}
