package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wecom"
)

// Bounds of the HTTP server. A credential request may wait for another
// node's grant (bounded by the lease), hence requestTimeout well above a
// WeChat round trip.
const (
	requestTimeout    = 30 * time.Second
	shutdownTimeout   = 10 * time.Second
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = time.Minute
	maxHeaderBytes    = 16 << 10
	maxInvalidateBody = 4 << 10
	// defaultMaxConns bounds the connections serve holds open at once
	// (--max-conns): its clients are a few services with keep-alive
	// pools, not browsers.
	defaultMaxConns = 1024
)

// runServe serves the HTTP API until ctx ends (SIGTERM or SIGINT), then
// shuts down gracefully: in-flight requests finish within shutdownTimeout;
// the Conf and the store are closed by the caller.
func runServe(ctx context.Context, e *cmdEnv) error {
	if e.checked != nil {
		return e.printCheck()
	}
	tcp, err := net.Listen("tcp", e.o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln := newLimitListener(tcp, e.o.maxConns)
	h := newSetHandler(e.reg, e.store, e.readyAt, e.metrics, e.log)
	defer e.watchReload(ctx)()
	srv := &http.Server{
		ConnState:         ln.track,
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      requestTimeout + 5*time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelWarn),
	}
	addr := ln.Addr().String()
	bases := e.apiBases
	if len(bases) == 0 {
		bases = conf.DefaultBaseURLs
	}
	if e.configPath != "" {
		e.log.Info("wechatconf: serving", "addr", addr, "config", e.configPath, "apps", len(e.reg.cur.Load().list), "store", e.storeDesc)
	} else {
		e.log.Info("wechatconf: serving", "addr", addr, "appid", e.appID, "store", e.storeDesc,
			"api_base", strings.Join(bases, ","), "stable_token", e.o.stable)
	}
	if e.o.dev {
		// The one time a server key is printed: one that --dev made up
		// for this run, against a fake WeChat. A key the user chose is
		// never shown.
		shown := "YOUR-KEY"
		if e.devKey {
			shown = e.key
		}
		fmt.Fprintf(e.stderr, "wechatconf: dev mode: try  curl -H 'Authorization: Bearer %s' http://%s/v1/access_token\n", shown, addr)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	e.log.Info("wechatconf: shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		e.log.Warn("wechatconf: requests still running at the shutdown bound; closing them", "err", err.Error())
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	e.log.Info("wechatconf: stopped")
	return nil
}

// handler is the serve API. Every /v1/ path needs a bearer key, and a
// key reads only the apps it lists; /healthz, /readyz and /metrics need
// none (they reveal no credential).
type handler struct {
	reg     *registry
	m       *metrics
	log     *slog.Logger
	mux     *http.ServeMux
	ready   *readiness
	timeout time.Duration
}

// newHandler serves c's credentials (its store st, which /readyz probes)
// to holders of key: the single-app server of the flags. m's own app is
// c's.
func newHandler(c *conf.Conf, st store.Store, key string, m *metrics, log *slog.Logger) *handler {
	a := &app{id: m.def.app, kind: kindOfficialAccount, oa: c}
	return newSetHandler(singleRegistry(a, key, m, log), st, readyKey(c.AppID()), m, log)
}

// newSetHandler serves the apps of reg, on the store st that /readyz
// probes at readyAt.
func newSetHandler(reg *registry, st store.Store, readyAt string, m *metrics, log *slog.Logger) *handler {
	h := &handler{reg: reg, m: m, log: log, mux: http.NewServeMux(), timeout: requestTimeout,
		ready: newReadiness(st, readyAt, log)}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /metrics", h.m.serveHTTP)
	return h
}

// ServeHTTP routes /v1/ itself: the bearer check, the app, the route, then
// for a GET of a credential (nearly every request) the app's lock-free
// hot path, an answer appended into a pooled buffer and lock-free
// counters: no mux, no wrapped writer, no timer. /healthz, /readyz,
// /metrics and what is not a clean path go through the mux.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	set := h.reg.cur.Load()
	p := r.URL.Path
	if !strings.HasPrefix(p, "/v1/") || path.Clean(p) != p {
		sw := &statusWriter{ResponseWriter: w}
		if _, pattern := h.mux.Handler(r); pattern == "" {
			h.noRoute(sw, r)
		} else {
			h.mux.ServeHTTP(sw, r)
		}
		set.fallback.observeRequest(pathIndex(p), sw.status(), time.Since(start))
		return
	}
	a, route, appRoute, code := h.resolve(w, r, set)
	am := set.fallback
	if a != nil {
		am = a.m
		code = h.serveRoute(w, r, a, route, start)
	}
	am.observeRequest(routePath(route, appRoute), code, time.Since(start))
}

// resolve finds the app and route of a /v1/ request the key in it may
// read. When it cannot, it answers (401, 403 or 404) and returns a nil
// app and the status.
func (h *handler) resolve(w http.ResponseWriter, r *http.Request, set *appSet) (a *app, route int, appRoute bool, code int) {
	rest := r.URL.Path[len("/v1/"):]
	id, appRoute := strings.CutPrefix(rest, "apps/")
	var sub string
	if appRoute {
		id, sub, _ = strings.Cut(id, "/")
		route = routeIndex(sub)
	} else {
		route = routeIndex(rest)
	}
	key := set.key(r.Header.Get("Authorization"))
	if key == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wechatconf"`)
		return nil, route, appRoute, writeJSON(w, http.StatusUnauthorized, errorResponse{Error: "missing or wrong bearer key (send Authorization: Bearer KEY)"})
	}
	if appRoute {
		if !key.allows(id) {
			// Also for an id no app has, unless the key may read
			// every app: a key learns nothing of the other apps.
			return nil, route, true, writeJSON(w, http.StatusForbidden, errorResponse{Error: "this key may not read that app (see the keys of the server's configuration)"})
		}
		if a = set.apps[id]; a == nil {
			return nil, route, true, writeJSON(w, http.StatusNotFound, errorResponse{Error: "no such app: see the apps of the server's configuration"})
		}
		if route < 0 {
			return nil, route, true, writeJSON(w, http.StatusNotFound, errorResponse{Error: "no such endpoint (see the README: /v1/apps/{id}/access_token, /jsapi_ticket, /wx_card_ticket, /agent_config_ticket, /ticket, /invalidate)"})
		}
		return a, route, true, 0
	}
	switch {
	case route < 0:
		return nil, route, false, writeJSON(w, http.StatusNotFound, errorResponse{Error: "no such endpoint (see the README: /v1/access_token, /v1/jsapi_ticket, /v1/wx_card_ticket, /v1/ticket, /v1/invalidate, /v1/apps/{id}/..., /healthz, /readyz, /metrics)"})
	case set.single == nil:
		return nil, route, false, writeJSON(w, http.StatusNotFound, errorResponse{Error: fmt.Sprintf("this server holds %d apps: ask /v1/apps/{id}/%s", len(set.list), routeNames[route])})
	case !key.allows(set.single.id):
		return nil, route, false, writeJSON(w, http.StatusForbidden, errorResponse{Error: "this key may not read that app (see the keys of the server's configuration)"})
	}
	return set.single, route, false, 0
}

// serveRoute answers route of app a and returns the status.
func (h *handler) serveRoute(w http.ResponseWriter, r *http.Request, a *app, route int, start time.Time) int {
	if route == routeInvalidate {
		if r.Method != http.MethodPost {
			return notAllowed(w, r, "POST")
		}
		return h.invalidate(w, r, a)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return notAllowed(w, r, "GET, HEAD")
	}
	var kind credKind
	switch route {
	case routeAccessToken:
		kind = credAccessToken
	case routeJSAPITicket:
		kind = credJSAPITicket
	case routeWXCardTicket:
		kind = credWXCardTicket
	case routeAgentTicket:
		kind = credAgentTicket
	default: // routeTicket
		var ok bool
		if kind, ok = ticketKindOf(r.URL.RawQuery); !ok {
			return writeJSON(w, http.StatusBadRequest, errorResponse{Error: "type must be jsapi, wx_card or agent_config"})
		}
	}
	if !a.has(kind) {
		return writeJSON(w, http.StatusNotFound, errorResponse{Error: fmt.Sprintf("this app (%s) has no %s", a.describe(), kind)})
	}
	return h.serveCredential(w, r, a, kind, start)
}

// ticketKindOf reads /ticket's query: ?type=jsapi (the default), wx_card or
// agent_config. The common queries are matched without parsing.
func ticketKindOf(rawQuery string) (credKind, bool) {
	switch rawQuery {
	case "", "type=jsapi":
		return credJSAPITicket, true
	case "type=wx_card":
		return credWXCardTicket, true
	case "type=agent_config":
		return credAgentTicket, true
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return 0, false
	}
	typ := q.Get("type")
	if typ == "" {
		return credJSAPITicket, true
	}
	return ticketByType(typ)
}

// notAllowed answers 405 with the methods allowed.
func notAllowed(w http.ResponseWriter, r *http.Request, allow string) int {
	w.Header().Set("Allow", allow)
	return writeJSON(w, http.StatusMethodNotAllowed, errorResponse{Error: fmt.Sprintf("method %s not allowed here (allowed: %s)", r.Method, allow)})
}

// describe names the app's kind for an answer (never its secret).
func (a *app) describe() string {
	if a.kind == kindWeCom && !a.agent {
		return "a wecom app without an agentid"
	}
	return "a " + a.kind.String()
}

// noRoute answers what the mux has no handler for (404, 405, or a
// redirect to the cleaned path) in JSON, as every other answer: the mux's
// own answer is run into a recorder for its status and headers, and its
// plain-text body is replaced.
func (h *handler) noRoute(w http.ResponseWriter, r *http.Request) {
	mh, _ := h.mux.Handler(r)
	rec := &headerRecorder{header: http.Header{}}
	mh.ServeHTTP(rec, r)
	status := rec.status
	if status == 0 {
		status = http.StatusNotFound
	}
	var msg string
	switch {
	case status == http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		msg = fmt.Sprintf("method %s not allowed here (allowed: %s)", r.Method, allow)
	case status >= 300 && status < 400 && rec.header.Get("Location") != "":
		w.Header().Set("Location", rec.header.Get("Location"))
		msg = "moved to " + rec.header.Get("Location")
	case status == http.StatusNotFound:
		msg = "no such endpoint (see the README: /v1/access_token, /v1/jsapi_ticket, /v1/wx_card_ticket, /v1/ticket, /v1/invalidate, /v1/apps/{id}/..., /healthz, /readyz, /metrics)"
	default:
		msg = http.StatusText(status)
	}
	writeJSON(w, status, errorResponse{Error: msg})
}

// headerRecorder keeps the status and headers a handler writes and drops
// its body.
type headerRecorder struct {
	header http.Header
	status int
}

func (r *headerRecorder) Header() http.Header { return r.header }

func (r *headerRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *headerRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(p), nil
}

// credentialResponse is the answer of the credential endpoints and of
// invalidate: the credential, when it expires (Unix seconds) and how many
// seconds it has left.
type credentialResponse struct {
	AccessToken string `json:"access_token,omitempty"`
	Ticket      string `json:"ticket,omitempty"`
	Type        string `json:"type,omitempty"` // jsapi or wx_card, for tickets
	ExpiresAt   int64  `json:"expires_at"`
	ExpiresIn   int64  `json:"expires_in"`
}

type errorResponse struct {
	Error   string `json:"error"`
	ErrCode int    `json:"errcode,omitempty"` // WeChat's errcode, when WeChat refused
}

// serveCredential answers a credential of kind of app a to a request
// received at start (expires_in counts from there) and returns the status.
//
// The app serves a fresh local copy, or a valid one while it refreshes in
// the background, without looking at the context; only when it has nothing
// valid does it wait. So the first try runs with noWait, a context that is
// already done: it costs no timer and answers nearly every request. Only
// if the app would have waited is the wait bounded by h.timeout and tried
// again. Correctness never rests on that first try: were the engine to
// consult the context sooner, the second try would answer, only slower.
func (h *handler) serveCredential(w http.ResponseWriter, r *http.Request, a *app, kind credKind, start time.Time) int {
	item, err := a.credential(noWait, kind)
	if errors.Is(err, errNoWait) {
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		defer cancel()
		item, err = a.credential(ctx, kind)
	}
	if err != nil {
		return h.fail(w, r, a, kind, err)
	}
	return writeCredential(w, a, kind, item, start)
}

func toResponse(kind credKind, item store.Item) credentialResponse {
	return toResponseAt(kind, item, time.Now())
}

// toResponseAt is toResponse at now.
func toResponseAt(kind credKind, item store.Item, now time.Time) credentialResponse {
	resp := credentialResponse{ExpiresAt: item.ExpiresAt.Unix(), ExpiresIn: int64(max(item.ExpiresAt.Sub(now), 0) / time.Second)}
	if kind == credAccessToken {
		resp.AccessToken = item.Value
	} else {
		resp.Ticket, resp.Type = item.Value, ticketTypes[kind]
	}
	return resp
}

// invalidateRequest reports a credential WeChat rejected. Kind defaults to
// access_token.
type invalidateRequest struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

// invalidate serves POST .../invalidate: compare-then-refresh. A new
// credential is granted only if the store still holds the rejected one; a
// stale report gets the current credential at no cost.
func (h *handler) invalidate(w http.ResponseWriter, r *http.Request, a *app) int {
	kind, value, status, msg := decodeInvalidate(http.MaxBytesReader(w, r.Body, maxInvalidateBody))
	if status != 0 {
		return writeJSON(w, status, errorResponse{Error: msg})
	}
	if !a.has(kind) {
		return writeJSON(w, http.StatusNotFound, errorResponse{Error: fmt.Sprintf("this app (%s) has no %s", a.describe(), kind)})
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	if err := a.invalidate(ctx, kind, value); err != nil {
		return h.fail(w, r, a, kind, err)
	}
	// The replacement is now this node's fresh copy: read it back with
	// its expiry.
	item, err := a.credential(ctx, kind)
	if err != nil {
		return h.fail(w, r, a, kind, err)
	}
	return writeJSON(w, http.StatusOK, toResponse(kind, item))
}

// decodeInvalidate reads the body of POST /v1/invalidate: one JSON object
// with known fields, a known kind (access_token by default) and a value. On
// a mistake it returns the status (400, or 413 past the MaxBytesReader
// bound) and the message to answer; the message never quotes the body.
func decodeInvalidate(body io.Reader) (kind credKind, value string, status int, msg string) {
	var req invalidateRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil {
		if err = dec.Decode(&struct{}{}); err == io.EOF {
			err = nil
		} else if err == nil {
			err = errors.New("more than one JSON value")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return 0, "", http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxInvalidateBody)
		}
		return 0, "", http.StatusBadRequest, `want a JSON body {"kind":"access_token","value":"<the rejected credential>"}`
	}
	kind = credAccessToken
	if req.Kind != "" {
		var ok bool
		if kind, ok = credKindByName(req.Kind); !ok {
			return 0, "", http.StatusBadRequest, "kind must be access_token, jsapi_ticket, wx_card_ticket or agent_config_ticket"
		}
	}
	if req.Value == "" {
		return 0, "", http.StatusBadRequest, "value (the rejected credential) is required"
	}
	return kind, req.Value, 0, ""
}

// healthz is the liveness check: the process answers. It does not look
// at the store (that is /readyz), so that an outage of the store does not
// make an orchestrator restart every node.
func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
}

// fail answers an error of the library: 502 when WeChat refused or could
// not be reached, 503 when no credential could be had in time.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, a *app, kind credKind, err error) int {
	status, code := http.StatusBadGateway, 0
	var ae *conf.APIError
	var le *conf.RefreshLimitedError
	switch {
	case errors.As(err, &le):
		// The cluster-wide forced-refresh limit: the current credential
		// is the one forced last; the client may report it again later.
		status = http.StatusTooManyRequests
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(time.Until(le.Next).Seconds())))))
	case errors.As(err, &ae):
		code = ae.Code
	case errors.Is(err, conf.ErrUnavailable), errors.Is(err, conf.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusServiceUnavailable
	case errors.Is(err, conf.ErrNeedParam), errors.Is(err, wecom.ErrNeedParam):
		status = http.StatusInternalServerError
	}
	h.log.Warn("wechatconf: request failed", "app", a.id, "path", r.URL.Path, "kind", kind.String(), "status", status, "err", err.Error())
	return writeJSON(w, status, errorResponse{Error: describe(err), ErrCode: code})
}

// writeJSON answers v in JSON with status, and returns status.
func writeJSON(w http.ResponseWriter, status int, v any) int {
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return status
}

// statusWriter remembers the status code for the metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
