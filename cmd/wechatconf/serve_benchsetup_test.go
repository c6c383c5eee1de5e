package main

import (
	"io"
	"log/slog"
	"net/http"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// The construction of what serve_bench_test.go measures, apart so that
// the same benchmarks can be run against an older serve (BENCHMARKS.md).

// newBenchHandler is serve's handler as runServe builds it, logging
// nowhere.
func newBenchHandler(c *conf.Conf, st store.Store, key string, m *metrics) http.Handler {
	return newHandler(c, st, key, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// newBenchConf is the Conf the benchmarks serve from, observed by metrics
// as in the command.
func newBenchConf(st store.Store, api string) (*conf.Conf, *metrics, error) {
	m := newMetrics(wechattest.DefaultAppID)
	c, err := conf.New(conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret), conf.WithStore(st),
		conf.WithBaseURLs(api), conf.WithObserver(m.observe))
	return c, m, err
}
