// Package bench measures wechatconf side by side with what users would pick
// instead: github.com/silenceper/wechat/v2 for the access token, and
// github.com/bsm/redislock for the Redis lease. It is a test-only module of
// its own, so that these peers never enter the library's go.mod.
//
// Networked backends run against servers named by environment variables;
// a benchmark whose server is not set is skipped, so that
//
//	go test -run='^$' -bench=. -benchtime=1x ./...
//
// passes anywhere. run.sh starts throwaway Redis, Memcached and PostgreSQL
// servers, sets the variables and runs every benchmark:
//
//	WECHATCONF_BENCH_REDIS      host:port of a Redis server
//	WECHATCONF_BENCH_MEMCACHED  host:port of a memcached server
//	WECHATCONF_BENCH_POSTGRES   a PostgreSQL connection string
//
// Every run uses a fresh random AppID, so runs sharing a server never see
// each other's tokens or leases. The results, as ratios, are in
// BENCHMARKS.md at the root of the repository.
package bench
