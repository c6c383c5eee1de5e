package main

import (
	"io"
	"log/slog"
	"net/http"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
)

// newBenchHandler is serve's handler as runServe builds it, logging
// nowhere.
func newBenchHandler(c *conf.Conf, st store.Store, key string, m *metrics) http.Handler {
	return newHandler(c, st, key, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
}
