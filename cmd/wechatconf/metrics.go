package main

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wechatconf/wechatconf/conf"
)

// kinds are the credential kinds, in metrics order; a Kind indexes them.
var kinds = [...]conf.Kind{conf.AccessToken, conf.JSAPITicket, conf.WXCardTicket}

// latencyBuckets are the upper bounds (seconds) of the request latency
// histogram: from a hot-path answer to a grant that waited on the lease.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// metricPaths are the paths counted by name, indexed by pathIndex; anything
// else is "other" (the last), so that scanners cannot blow up the metrics'
// cardinality.
var metricPaths = [...]string{
	"/v1/access_token", "/v1/jsapi_ticket", "/v1/wx_card_ticket", "/v1/ticket",
	"/v1/invalidate", "/healthz", "/readyz", "/metrics", "other",
}

const (
	pathAccessToken = iota
	pathJSAPITicket
	pathWXCardTicket
	pathTicket
	pathInvalidate
	pathHealthz
	pathReadyz
	pathMetrics
	pathOther
	numPaths
)

// pathIndex maps a request path to its index in metricPaths, without a map
// lookup.
func pathIndex(p string) int {
	switch p {
	case "/v1/access_token":
		return pathAccessToken
	case "/v1/jsapi_ticket":
		return pathJSAPITicket
	case "/v1/wx_card_ticket":
		return pathWXCardTicket
	case "/v1/ticket":
		return pathTicket
	case "/v1/invalidate":
		return pathInvalidate
	case "/healthz":
		return pathHealthz
	case "/readyz":
		return pathReadyz
	case "/metrics":
		return pathMetrics
	}
	return pathOther
}

// statusCodes are the codes the handler answers with, whose request
// counters are kept in a table; another code (a Go server oddity) takes the
// CounterVec's map.
var statusCodes = [...]int{200, 301, 307, 308, 400, 401, 404, 405, 413, 429, 500, 502, 503}

func codeIndex(code int) int {
	for i, c := range statusCodes {
		if c == code {
			return i
		}
	}
	return -1
}

// metrics counts what the refresh engine and the HTTP API did, on a
// Prometheus registry of the server's own, with the Go runtime and process
// collectors beside. Every series carries the app label (the AppID: one per
// server, so bounded by configuration).
//
// The request path costs no lock and no allocation: the per-kind counters
// are resolved at construction, and a request's counter and histogram are
// resolved the first time a (path, code) pair is seen and then loaded
// atomically from a table. A series appears only once it has happened, as
// with the hand-written exposition this replaces.
type metrics struct {
	reg *prometheus.Registry
	app string

	grants, grantFails, loads  [len(kinds)]prometheus.Counter
	leaseWaits, waitSecs       [len(kinds)]prometheus.Counter
	invalidations, storeErrors [len(kinds)]prometheus.Counter
	expiry                     *prometheus.GaugeVec
	expirySet                  [len(kinds)]atomic.Pointer[gauge]
	requests                   *prometheus.CounterVec
	latency                    *prometheus.HistogramVec
	reqTable                   [numPaths][len(statusCodes)]atomic.Pointer[counter]
	latTable                   [numPaths]atomic.Pointer[observer]
	handler                    http.Handler
}

// counter, gauge and observer box a resolved child so that it can sit in
// an atomic.Pointer.
type (
	counter  struct{ prometheus.Counter }
	gauge    struct{ prometheus.Gauge }
	observer struct{ prometheus.Observer }
)

// newMetrics makes the metrics of one app on a fresh registry.
func newMetrics(app string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), app: app}
	kindCounter := func(out *[len(kinds)]prometheus.Counter, name, help string) {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"app", "kind"})
		m.reg.MustRegister(v)
		// Every kind from the start, so that rate() sees the first
		// increment.
		for i, k := range kinds {
			out[i] = v.WithLabelValues(app, k.String())
		}
	}
	kindCounter(&m.grants, "wechatconf_grants_total", "Credentials this process granted at WeChat.")
	kindCounter(&m.grantFails, "wechatconf_grant_failures_total", "Grants at WeChat that failed (errcode, HTTP or network error).")
	kindCounter(&m.loads, "wechatconf_loads_total", "Credentials taken from the store instead of granted here.")
	kindCounter(&m.leaseWaits, "wechatconf_lease_waits_total", "Times this process waited for another holder of the store's lease.")
	kindCounter(&m.waitSecs, "wechatconf_lease_wait_seconds_total", "Seconds spent waiting for another holder of the store's lease.")
	kindCounter(&m.invalidations, "wechatconf_invalidations_total", "Credentials reported rejected by WeChat (compare-then-refresh).")
	kindCounter(&m.storeErrors, "wechatconf_store_errors_total", "Store failures: outages, not misses.")
	m.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wechatconf_credential_expiry_timestamp_seconds",
		Help: "When the credential this process last obtained expires.",
	}, []string{"app", "kind"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wechatconf_http_requests_total",
		Help: "HTTP requests served, by path and status code.",
	}, []string{"app", "path", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wechatconf_http_request_duration_seconds",
		Help:    "HTTP request latency, by path.",
		Buckets: latencyBuckets,
	}, []string{"app", "path"})
	m.reg.MustRegister(m.expiry, m.requests, m.latency,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// observe is the Conf's observer: it only counts, without a lock.
func (m *metrics) observe(e conf.Event) {
	k := int(e.Kind)
	if k < 0 || k >= len(kinds) {
		return
	}
	switch e.Type {
	case conf.EventGranted:
		m.grants[k].Inc()
	case conf.EventGrantFailed:
		m.grantFails[k].Inc()
	case conf.EventLoaded:
		m.loads[k].Inc()
	case conf.EventLeaseWaited:
		m.leaseWaits[k].Inc()
		m.waitSecs[k].Add(e.Wait.Seconds())
	case conf.EventInvalidated:
		m.invalidations[k].Inc()
	case conf.EventStoreError:
		m.storeErrors[k].Inc()
	}
	if !e.ExpiresAt.IsZero() {
		g := m.expirySet[k].Load()
		if g == nil {
			// Made on the first expiry known, so that an unknown one
			// is absent rather than 0.
			g = &gauge{m.expiry.WithLabelValues(m.app, kinds[k].String())}
			m.expirySet[k].Store(g)
		}
		g.Set(float64(e.ExpiresAt.Unix()))
	}
}

// observeRequest counts one HTTP request on the path of index path
// (pathIndex).
func (m *metrics) observeRequest(path, code int, d time.Duration) {
	if ci := codeIndex(code); ci >= 0 {
		c := m.reqTable[path][ci].Load()
		if c == nil {
			// Racing first requests resolve the same child: the
			// CounterVec returns one per label set.
			c = &counter{m.requests.WithLabelValues(m.app, metricPaths[path], strconv.Itoa(code))}
			m.reqTable[path][ci].Store(c)
		}
		c.Inc()
	} else {
		m.requests.WithLabelValues(m.app, metricPaths[path], strconv.Itoa(code)).Inc()
	}
	o := m.latTable[path].Load()
	if o == nil {
		o = &observer{m.latency.WithLabelValues(m.app, metricPaths[path])}
		m.latTable[path].Store(o)
	}
	o.Observe(d.Seconds())
}

// serveHTTP writes the registry in the format the scraper asks for
// (Prometheus text by default).
func (m *metrics) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	m.handler.ServeHTTP(w, r)
}
