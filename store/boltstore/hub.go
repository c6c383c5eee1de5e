package boltstore

import (
	"context"
	"sync"

	"go.etcd.io/bbolt"
)

// A hub carries Set notifications to the watchers of one bucket of one
// database. Every Store on the same *bbolt.DB and bucket shares a hub, so a
// Set through one wakes a Watch made through another. Hubs are counted and
// forgotten when the last Store using them is closed.
type hub struct {
	id   hubID
	refs int // guarded by hubs.mu

	mu       sync.Mutex
	watchers map[string]map[*watcher]struct{}
}

type hubID struct {
	db     *bbolt.DB
	bucket string
}

type watcher struct {
	ch    chan struct{}
	key   string
	owner *Store
	stop  func() bool // stops the context.AfterFunc that removes it
	done  bool        // removed, or its ctx ended before it was added
}

var hubs = struct {
	mu sync.Mutex
	m  map[hubID]*hub
}{m: make(map[hubID]*hub)}

func acquireHub(db *bbolt.DB, bucket string) *hub {
	id := hubID{db, bucket}
	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h := hubs.m[id]
	if h == nil {
		h = &hub{id: id, watchers: make(map[string]map[*watcher]struct{})}
		hubs.m[id] = h
	}
	h.refs++
	return h
}

// release closes the watchers made through s and drops s's reference.
func (h *hub) release(s *Store) {
	h.mu.Lock()
	for key, set := range h.watchers {
		for w := range set {
			if w.owner == s {
				w.stop()
				h.drop(w)
			}
		}
		if len(set) == 0 {
			delete(h.watchers, key)
		}
	}
	h.mu.Unlock()

	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h.refs--
	if h.refs == 0 {
		delete(hubs.m, h.id)
	}
}

func releaseHub(h *hub, s *Store) { h.release(s) }

// drop removes w and closes its channel. h.mu must be held.
func (h *hub) drop(w *watcher) {
	if w.done {
		return
	}
	w.done = true
	if set := h.watchers[w.key]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(h.watchers, w.key)
		}
	}
	close(w.ch)
}

// watch registers a watcher of key for s until ctx ends. It reports false
// when s is closed.
func (h *hub) watch(ctx context.Context, s *Store, key string) (<-chan struct{}, bool) {
	w := &watcher{ch: make(chan struct{}, 1), key: key, owner: s}
	stop := context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.drop(w)
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	// Close marks the store closed before it takes h.mu to release its
	// watchers, so checking here under h.mu leaves no gap.
	if s.closed.Load() {
		stop()
		return nil, false
	}
	if w.done { // ctx ended between the caller's check and here
		return w.ch, true
	}
	w.stop = stop
	set := h.watchers[key]
	if set == nil {
		set = make(map[*watcher]struct{})
		h.watchers[key] = set
	}
	set[w] = struct{}{}
	return w.ch, true
}

// notify wakes the watchers of key without blocking: a watcher that has not
// read its last notification keeps that one.
func (h *hub) notify(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers[key] {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}
