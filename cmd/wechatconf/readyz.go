package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// Bounds of the readiness probe.
const (
	// readyTimeout bounds the probe's store Get.
	readyTimeout = 2 * time.Second
	// readyCache is how long a probe's result is reused, so that probes
	// from several load balancers do not hammer the store.
	readyCache = time.Second
)

// readyKey is the key /readyz reads: one of the app's own, next to its
// credentials (in one Redis Cluster slot), that nothing writes. Absent is
// the expected answer; only reaching the store counts.
func readyKey(appID string) string { return "{" + appID + "}:readyz" }

// readiness probes the store with a bounded Get of a small key and keeps
// the result for readyCache. One probe runs at a time; the others wait for
// it (bounded by readyTimeout) and take its result.
type readiness struct {
	st  store.Store
	key string
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	checked time.Time
	err     error
}

func newReadiness(st store.Store, key string, log *slog.Logger) *readiness {
	return &readiness{st: st, key: key, log: log, now: time.Now}
}

// check returns nil when the store answered a Get within readyCache.
func (r *readiness) check(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); !r.checked.IsZero() && now.Sub(r.checked) < readyCache {
		return r.err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	_, err := r.st.Get(ctx, r.key)
	if errors.Is(err, store.ErrNotFound) {
		err = nil
	}
	if err != nil && r.err == nil {
		r.log.Warn("wechatconf: not ready: the store is unreachable", "err", err.Error())
	} else if err == nil && r.err != nil {
		r.log.Info("wechatconf: ready: the store answers again")
	}
	r.checked, r.err = r.now(), err
	return err
}

// readyz is the readiness check: 200 while the store answers, 503 while it
// does not (a load balancer then sends clients elsewhere; a valid local
// copy is still served to those who come). The store's error goes to the
// log, not to the unauthenticated answer.
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	if err := h.ready.check(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, statusResponse{Status: "unavailable", Error: "the store is unreachable (see the log)"})
		return
	}
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
}
