package main

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
)

// kinds are the Official Account's credential kinds, in metrics order.
var kinds = [...]conf.Kind{conf.AccessToken, conf.JSAPITicket, conf.WXCardTicket}

// latencyBuckets are the upper bounds (seconds) of the request latency
// histogram: from a hot-path answer to a grant that waited on the lease.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// The routes below /v1/ (or /v1/apps/{id}/), indexed by routeIndex.
const (
	routeAccessToken = iota
	routeJSAPITicket
	routeWXCardTicket
	routeAgentTicket
	routeTicket
	routeInvalidate
	numRoutes
)

// routeNames are the routes' last path segments.
var routeNames = [numRoutes]string{"access_token", "jsapi_ticket", "wx_card_ticket", "agent_config_ticket", "ticket", "invalidate"}

// routeIndex maps a route's last segment to its index, or -1.
func routeIndex(s string) int {
	switch s {
	case "access_token":
		return routeAccessToken
	case "jsapi_ticket":
		return routeJSAPITicket
	case "wx_card_ticket":
		return routeWXCardTicket
	case "agent_config_ticket":
		return routeAgentTicket
	case "ticket":
		return routeTicket
	case "invalidate":
		return routeInvalidate
	}
	return -1
}

// metricPaths are the paths counted by name, indexed by pathIndex (and for
// the app routes appPath); anything else is "other" (the last), so that
// scanners cannot blow up the metrics' cardinality. An app's own routes
// are counted under their pattern, the app being the app label.
var metricPaths = [...]string{
	"/v1/access_token", "/v1/jsapi_ticket", "/v1/wx_card_ticket", "/v1/agent_config_ticket", "/v1/ticket", "/v1/invalidate",
	"/v1/apps/{id}/access_token", "/v1/apps/{id}/jsapi_ticket", "/v1/apps/{id}/wx_card_ticket",
	"/v1/apps/{id}/agent_config_ticket", "/v1/apps/{id}/ticket", "/v1/apps/{id}/invalidate",
	"/healthz", "/readyz", "/metrics", "other",
}

const (
	pathAccessToken = iota // single-app routes: the route's index
	pathApps        = numRoutes
	pathHealthz     = 2 * numRoutes
	pathReadyz      = pathHealthz + 1
	pathMetrics     = pathHealthz + 2
	pathOther       = pathHealthz + 3
	numPaths        = pathHealthz + 4
)

// pathIndex maps a request path outside the routes to its index in
// metricPaths, without a map lookup.
func pathIndex(p string) int {
	switch p {
	case "/healthz":
		return pathHealthz
	case "/readyz":
		return pathReadyz
	case "/metrics":
		return pathMetrics
	}
	return pathOther
}

// routePath is the metricPaths index of route (-1: other) of the
// single-app routes, or of an app's own routes.
func routePath(route int, appRoute bool) int {
	switch {
	case route < 0:
		return pathOther
	case appRoute:
		return pathApps + route
	}
	return route
}

// statusCodes are the codes the handler answers with, whose request
// counters are kept in a table; another code (a Go server oddity) takes the
// CounterVec's map.
var statusCodes = [...]int{200, 301, 307, 308, 400, 401, 403, 404, 405, 413, 429, 500, 502, 503}

func codeIndex(code int) int {
	for i, c := range statusCodes {
		if c == code {
			return i
		}
	}
	return -1
}

// metrics counts what the refresh engines and the HTTP API did, on a
// Prometheus registry of the server's own, with the Go runtime and process
// collectors beside. Every series carries the app label: the app's id in
// the configuration (the AppID or CorpID with the single-app flags), ""
// for requests that name no app, so bounded by the configuration.
//
// The request path costs no lock and no allocation: a series is resolved
// the first time it happens and then loaded atomically from its app's
// tables. A series appears only once it has happened, so that ten thousand
// apps cost the series they use, not every series they could.
type metrics struct {
	reg *prometheus.Registry

	grants, grantFails, loads  *prometheus.CounterVec
	leaseWaits, waitSecs       *prometheus.CounterVec
	invalidations, storeErrors *prometheus.CounterVec
	expiry                     *prometheus.GaugeVec
	requests                   *prometheus.CounterVec
	latency                    *prometheus.HistogramVec
	apps                       prometheus.Gauge
	reloads                    *prometheus.CounterVec
	lastReload                 prometheus.Gauge
	handler                    http.Handler

	mu    sync.Mutex // byApp
	byApp map[string]*appMetrics

	// def is the app of newMetrics' label: the single-app server's.
	def *appMetrics
}

// appMetrics are the series of one app, resolved on first use.
type appMetrics struct {
	m     *metrics
	app   string
	kinds [numCredKinds]atomic.Pointer[kindMetrics]
	reqs  atomic.Pointer[requestTables]
}

// kindMetrics are the engine's series of one credential of one app.
type kindMetrics struct {
	grants, grantFails, loads  prometheus.Counter
	leaseWaits, waitSecs       prometheus.Counter
	invalidations, storeErrors prometheus.Counter
	expiry                     interface{ Set(float64) }
}

// requestTables are an app's resolved request series.
type requestTables struct {
	counts  [numPaths][len(statusCodes)]atomic.Pointer[counter]
	latency [numPaths]atomic.Pointer[observer]
}

// counter and observer box a resolved child so that it can sit in an
// atomic.Pointer.
type (
	counter  struct{ prometheus.Counter }
	observer struct{ prometheus.Observer }
)

// newMetrics makes the metrics of a server on a fresh registry; app names
// the single app's label (m.def), "" for a server of a configuration.
func newMetrics(app string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), byApp: map[string]*appMetrics{}}
	kindCounter := func(name, help string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"app", "kind"})
		m.reg.MustRegister(v)
		return v
	}
	m.grants = kindCounter("wechatconf_grants_total", "Credentials this process granted at WeChat.")
	m.grantFails = kindCounter("wechatconf_grant_failures_total", "Grants at WeChat that failed (errcode, HTTP or network error).")
	m.loads = kindCounter("wechatconf_loads_total", "Credentials taken from the store instead of granted here.")
	m.leaseWaits = kindCounter("wechatconf_lease_waits_total", "Times this process waited for another holder of the store's lease.")
	m.waitSecs = kindCounter("wechatconf_lease_wait_seconds_total", "Seconds spent waiting for another holder of the store's lease.")
	m.invalidations = kindCounter("wechatconf_invalidations_total", "Credentials reported rejected by WeChat (compare-then-refresh).")
	m.storeErrors = kindCounter("wechatconf_store_errors_total", "Store failures: outages, not misses.")
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
	m.apps = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wechatconf_apps",
		Help: "Apps this server holds.",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wechatconf_config_reloads_total",
		Help: "Reloads of the configuration file (SIGHUP), by result: ok, or error (the running set was kept).",
	}, []string{"result"})
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wechatconf_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration now running was loaded.",
	})
	m.reg.MustRegister(m.expiry, m.requests, m.latency, m.apps, m.reloads, m.lastReload,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	m.def = m.forApp(app)
	m.lastReload.SetToCurrentTime()
	return m
}

// forApp returns the series of app id, made on first use.
func (m *metrics) forApp(id string) *appMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	am := m.byApp[id]
	if am == nil {
		am = &appMetrics{m: m, app: id}
		m.byApp[id] = am
	}
	return am
}

// dropApp removes every series of app id: it left the configuration.
func (m *metrics) dropApp(id string) {
	m.mu.Lock()
	delete(m.byApp, id)
	m.mu.Unlock()
	l := prometheus.Labels{"app": id}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.grants, m.grantFails, m.loads, m.leaseWaits, m.waitSecs, m.invalidations, m.storeErrors,
		m.expiry, m.requests, m.latency,
	} {
		v.DeletePartialMatch(l)
	}
}

// setApps sets the apps gauge.
func (m *metrics) setApps(n int) { m.apps.Set(float64(n)) }

// reloaded counts a reload.
func (m *metrics) reloaded(err error) {
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
	m.lastReload.SetToCurrentTime()
}

// observe is the single app's observer (newMetrics' app).
func (m *metrics) observe(e conf.Event) { m.def.observe(e) }

// observe is an Official Account's or Mini Program's observer: it only
// counts, without a lock once a series is resolved.
func (am *appMetrics) observe(e conf.Event) {
	k := credKind(numCredKinds)
	if e.Kind >= 0 && int(e.Kind) < len(kinds) {
		k = credKind(e.Kind) // conf's kinds are the first credKinds
	}
	am.count(k, e.Type, e.Wait, e.ExpiresAt)
}

// count records an event of the engine on credential k.
func (am *appMetrics) count(k credKind, typ credential.EventType, wait time.Duration, expiresAt time.Time) {
	if k >= numCredKinds {
		return
	}
	km := am.kind(k)
	switch typ {
	case conf.EventGranted:
		km.grants.Inc()
	case conf.EventGrantFailed:
		km.grantFails.Inc()
	case conf.EventLoaded:
		km.loads.Inc()
	case conf.EventLeaseWaited:
		km.leaseWaits.Inc()
		km.waitSecs.Add(wait.Seconds())
	case conf.EventInvalidated:
		km.invalidations.Inc()
	case conf.EventStoreError:
		km.storeErrors.Inc()
	}
	if !expiresAt.IsZero() {
		km.expiry.Set(float64(expiresAt.Unix()))
	}
}

// kind returns the series of credential k, resolving them on first use.
// The counters are made together so that rate() of any of them sees its
// first increment; the expiry gauge is registered only once it is known,
// so that an unknown expiry is absent rather than 0.
func (am *appMetrics) kind(k credKind) *kindMetrics {
	if km := am.kinds[k].Load(); km != nil {
		return km
	}
	m, app, name := am.m, am.app, credNames[k]
	km := &kindMetrics{
		grants:        m.grants.WithLabelValues(app, name),
		grantFails:    m.grantFails.WithLabelValues(app, name),
		loads:         m.loads.WithLabelValues(app, name),
		leaseWaits:    m.leaseWaits.WithLabelValues(app, name),
		waitSecs:      m.waitSecs.WithLabelValues(app, name),
		invalidations: m.invalidations.WithLabelValues(app, name),
		storeErrors:   m.storeErrors.WithLabelValues(app, name),
		expiry:        lazyGauge{vec: m.expiry, app: app, kind: name},
	}
	// Racing first events resolve the same children: a Vec returns one
	// per label set.
	if !am.kinds[k].CompareAndSwap(nil, km) {
		return am.kinds[k].Load()
	}
	return km
}

// lazyGauge is the expiry gauge of one credential, registered on its first
// Set.
type lazyGauge struct {
	vec       *prometheus.GaugeVec
	app, kind string
}

func (g lazyGauge) Set(v float64) { g.vec.WithLabelValues(g.app, g.kind).Set(v) }

// observeRequest counts one HTTP request on the metricPaths index path.
func (am *appMetrics) observeRequest(path, code int, d time.Duration) {
	t := am.reqs.Load()
	if t == nil {
		t = &requestTables{}
		if !am.reqs.CompareAndSwap(nil, t) {
			t = am.reqs.Load()
		}
	}
	m := am.m
	if ci := codeIndex(code); ci >= 0 {
		c := t.counts[path][ci].Load()
		if c == nil {
			c = &counter{m.requests.WithLabelValues(am.app, metricPaths[path], strconv.Itoa(code))}
			t.counts[path][ci].Store(c)
		}
		c.Inc()
	} else {
		m.requests.WithLabelValues(am.app, metricPaths[path], strconv.Itoa(code)).Inc()
	}
	o := t.latency[path].Load()
	if o == nil {
		o = &observer{m.latency.WithLabelValues(am.app, metricPaths[path])}
		t.latency[path].Store(o)
	}
	o.Observe(d.Seconds())
}

// serveHTTP writes the registry in the format the scraper asks for
// (Prometheus text by default).
func (m *metrics) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	m.handler.ServeHTTP(w, r)
}
