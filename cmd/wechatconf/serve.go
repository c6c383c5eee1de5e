package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
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
	tcp, err := net.Listen("tcp", e.o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln := newLimitListener(tcp, e.o.maxConns)
	h := newHandler(e.conf, e.store, e.key, e.metrics, e.log)
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
	e.log.Info("wechatconf: serving", "addr", addr, "appid", e.appID, "store", e.storeDesc,
		"api_base", strings.Join(bases, ","), "stable_token", e.o.stable)
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

// handler is the serve API. Every /v1/ path needs the bearer key;
// /healthz, /readyz and /metrics do not (they reveal no credential).
type handler struct {
	conf    *conf.Conf
	keySum  [sha256.Size]byte
	m       *metrics
	log     *slog.Logger
	mux     *http.ServeMux
	ready   *readiness
	timeout time.Duration
	// plain holds, per kind, the last value found plainJSON, so that
	// the check runs once per credential rather than once per answer.
	plain [len(kinds)]atomic.Pointer[string]
}

// newHandler serves c's credentials to holders of key; st is c's store,
// which /readyz probes.
func newHandler(c *conf.Conf, st store.Store, key string, m *metrics, log *slog.Logger) *handler {
	h := &handler{conf: c, keySum: sha256.Sum256([]byte(key)), m: m, log: log, mux: http.NewServeMux(), timeout: requestTimeout,
		ready: newReadiness(st, readyKey(c.AppID()), log)}
	// The GET credential routes are answered before the mux (ServeHTTP);
	// they stay registered for HEAD and for the mux's 405 answers.
	h.mux.HandleFunc("GET /v1/access_token", h.credential(conf.AccessToken))
	h.mux.HandleFunc("GET /v1/jsapi_ticket", h.credential(conf.JSAPITicket))
	h.mux.HandleFunc("GET /v1/wx_card_ticket", h.credential(conf.WXCardTicket))
	h.mux.HandleFunc("GET /v1/ticket", h.ticketByType)
	h.mux.HandleFunc("POST /v1/invalidate", h.invalidate)
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /metrics", h.m.serveHTTP)
	return h
}

// ServeHTTP answers GET of a credential (nearly every request) without the
// mux, a wrapped writer or a timer: the bearer check, the Conf's lock-free
// hot path, a response appended into a pooled buffer, and lock-free
// counters. Everything else goes through the mux.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	path := pathIndex(r.URL.Path)
	var code int
	switch {
	case strings.HasPrefix(r.URL.Path, "/v1/") && !h.authorized(r):
		w.Header().Set("WWW-Authenticate", `Bearer realm="wechatconf"`)
		code = writeJSON(w, http.StatusUnauthorized, errorResponse{Error: "missing or wrong bearer key (send Authorization: Bearer KEY)"})
	case r.Method == http.MethodGet && path <= pathTicket:
		code = h.getCredential(w, r, path, start)
	default:
		sw := &statusWriter{ResponseWriter: w}
		if _, pattern := h.mux.Handler(r); pattern == "" {
			h.noRoute(sw, r)
		} else {
			h.mux.ServeHTTP(sw, r)
		}
		code = sw.status()
	}
	h.m.observeRequest(path, code, time.Since(start))
}

// getCredential serves GET of the credential path of index path
// (pathAccessToken to pathTicket), received at start, and returns the
// status it answered.
func (h *handler) getCredential(w http.ResponseWriter, r *http.Request, path int, start time.Time) int {
	switch path {
	case pathAccessToken:
		return h.serveCredential(w, r, conf.AccessToken, start)
	case pathJSAPITicket:
		return h.serveCredential(w, r, conf.JSAPITicket, start)
	case pathWXCardTicket:
		return h.serveCredential(w, r, conf.WXCardTicket, start)
	}
	switch r.URL.RawQuery { // the common queries, without parsing
	case "", "type=jsapi":
		return h.serveCredential(w, r, conf.JSAPITicket, start)
	case "type=wx_card":
		return h.serveCredential(w, r, conf.WXCardTicket, start)
	}
	return h.ticketQuery(w, r, start)
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
		msg = "no such endpoint (see the README: /v1/access_token, /v1/jsapi_ticket, /v1/wx_card_ticket, /v1/ticket, /v1/invalidate, /healthz, /readyz, /metrics)"
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

// authorized compares the bearer key in constant time. Both sides are
// hashed first, so that not even the key's length leaks through timing.
func (h *handler) authorized(r *http.Request) bool {
	return bearerOK(r.Header.Get("Authorization"), &h.keySum)
}

// bearerOK reports whether the Authorization value v carries the key whose
// SHA-256 is keySum. A key of up to 128 bytes is hashed from a stack copy,
// without an allocation.
func bearerOK(v string, keySum *[sha256.Size]byte) bool {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return false
	}
	key := strings.TrimSpace(v[len(scheme):])
	var sum [sha256.Size]byte
	var buf [128]byte
	if len(key) <= len(buf) {
		sum = sha256.Sum256(buf[:copy(buf[:], key)])
	} else {
		sum = sha256.Sum256([]byte(key))
	}
	return subtle.ConstantTimeCompare(sum[:], keySum[:]) == 1
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

func (h *handler) credential(kind conf.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { h.serveCredential(w, r, kind, time.Now()) }
}

// ticketByType serves GET /v1/ticket?type=jsapi|wx_card (jsapi by default).
func (h *handler) ticketByType(w http.ResponseWriter, r *http.Request) {
	h.ticketQuery(w, r, time.Now())
}

func (h *handler) ticketQuery(w http.ResponseWriter, r *http.Request, start time.Time) int {
	typ := r.URL.Query().Get("type")
	if typ == "" {
		typ = "jsapi"
	}
	kind, err := ticketKind(typ)
	if err != nil {
		return writeJSON(w, http.StatusBadRequest, errorResponse{Error: "type must be jsapi or wx_card"})
	}
	return h.serveCredential(w, r, kind, start)
}

// serveCredential answers a credential of kind to a request received at
// start (expires_in counts from there) and returns the status.
//
// The Conf serves a fresh local copy, or a valid one while it refreshes in
// the background, without looking at the context; only when it has nothing
// valid does it wait. So the first try runs with noWait, a context that is
// already done: it costs no timer and answers nearly every request. Only
// if the Conf would have waited is the wait bounded by h.timeout and tried
// again. Correctness never rests on that first try: were the Conf to
// consult the context sooner, the second try would answer, only slower.
func (h *handler) serveCredential(w http.ResponseWriter, r *http.Request, kind conf.Kind, start time.Time) int {
	item, err := h.conf.Credential(noWait, kind)
	if errors.Is(err, errNoWait) {
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		defer cancel()
		item, err = h.conf.Credential(ctx, kind)
	}
	if err != nil {
		return h.fail(w, r, kind, err)
	}
	return h.writeCredential(w, kind, item, start)
}

func toResponse(kind conf.Kind, item store.Item) credentialResponse {
	return toResponseAt(kind, item, time.Now())
}

// toResponseAt is toResponse at now.
func toResponseAt(kind conf.Kind, item store.Item, now time.Time) credentialResponse {
	resp := credentialResponse{ExpiresAt: item.ExpiresAt.Unix(), ExpiresIn: int64(max(item.ExpiresAt.Sub(now), 0) / time.Second)}
	switch kind {
	case conf.AccessToken:
		resp.AccessToken = item.Value
	case conf.JSAPITicket:
		resp.Ticket, resp.Type = item.Value, "jsapi"
	default:
		resp.Ticket, resp.Type = item.Value, "wx_card"
	}
	return resp
}

// invalidateRequest reports a credential WeChat rejected. Kind defaults to
// access_token.
type invalidateRequest struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

// invalidate serves POST /v1/invalidate: compare-then-refresh. A new
// credential is granted only if the store still holds the rejected one; a
// stale report gets the current credential at no cost.
func (h *handler) invalidate(w http.ResponseWriter, r *http.Request) {
	kind, value, status, msg := decodeInvalidate(http.MaxBytesReader(w, r.Body, maxInvalidateBody))
	if status != 0 {
		writeJSON(w, status, errorResponse{Error: msg})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	if _, err := h.conf.Invalidate(ctx, kind, value); err != nil {
		h.fail(w, r, kind, err)
		return
	}
	// The replacement is now this node's fresh copy: read it back with
	// its expiry.
	item, err := h.conf.Credential(ctx, kind)
	if err != nil {
		h.fail(w, r, kind, err)
		return
	}
	writeJSON(w, http.StatusOK, toResponse(kind, item))
}

// decodeInvalidate reads the body of POST /v1/invalidate: one JSON object
// with known fields, a known kind (access_token by default) and a value. On
// a mistake it returns the status (400, or 413 past the MaxBytesReader
// bound) and the message to answer; the message never quotes the body.
func decodeInvalidate(body io.Reader) (kind conf.Kind, value string, status int, msg string) {
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
	kind = conf.AccessToken
	if req.Kind != "" {
		var ok bool
		if kind, ok = kindByName(req.Kind); !ok {
			return 0, "", http.StatusBadRequest, "kind must be access_token, jsapi_ticket or wx_card_ticket"
		}
	}
	if req.Value == "" {
		return 0, "", http.StatusBadRequest, "value (the rejected credential) is required"
	}
	return kind, req.Value, 0, ""
}

func kindByName(name string) (conf.Kind, bool) {
	for _, k := range []conf.Kind{conf.AccessToken, conf.JSAPITicket, conf.WXCardTicket} {
		if k.String() == name {
			return k, true
		}
	}
	return 0, false
}

// healthz is the liveness check: the process answers. It does not look
// at the store (that is /readyz), so that an outage of the store does not
// make an orchestrator restart every node.
func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
}

// fail answers an error of the library: 502 when WeChat refused or could
// not be reached, 503 when no credential could be had in time.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, kind conf.Kind, err error) int {
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
	case errors.Is(err, conf.ErrNeedParam):
		status = http.StatusInternalServerError
	}
	h.log.Warn("wechatconf: request failed", "path", r.URL.Path, "kind", kind.String(), "status", status, "err", err.Error())
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
