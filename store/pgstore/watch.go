package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wechatconf/wechatconf/store"
)

// watcher is one Watch call's channel.
type watcher struct {
	ch        chan struct{}
	key       string      // with the prefix, as in the NOTIFY payload
	stopAfter func() bool // stops the context.AfterFunc that removes it
	done      bool        // removed (guarded by Store.wmu)
}

// Watch returns a channel that receives a value each time an item under key
// is stored by any node using the same table with WithNotify, until ctx is
// done or the Store is closed; then the channel is closed. The first Watch
// starts listening (one dedicated connection, one goroutine) and returns
// only once LISTEN is in place, so a Set made after Watch returns is heard.
// If the listening connection drops, every watcher is woken (it may have
// missed a NOTIFY) and the listener reconnects with backoff.
func (s *Store) Watch(ctx context.Context, key string) (<-chan struct{}, error) {
	if err := s.begin(ctx, "watch", key); err != nil {
		return nil, err
	}
	if !s.notify {
		return nil, opErr("watch", key, ErrNotifyOff)
	}
	if err := s.startListener(ctx); err != nil {
		return nil, opErr("watch", key, err)
	}
	w := &watcher{ch: make(chan struct{}, 1), key: s.prefix + key}
	stop := context.AfterFunc(ctx, func() { s.removeWatcher(w) })
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// Close marks the store closed before it takes wmu to close the
	// watchers, so checking under wmu leaves no gap.
	if s.closed.Load() {
		stop()
		return nil, opErr("watch", key, store.ErrClosed)
	}
	if w.done { // ctx ended meanwhile: the channel is already closed
		return w.ch, nil
	}
	w.stopAfter = stop
	set := s.watchers[w.key]
	if set == nil {
		set = make(map[*watcher]struct{})
		s.watchers[w.key] = set
	}
	set[w] = struct{}{}
	return w.ch, nil
}

func (s *Store) removeWatcher(w *watcher) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if w.done {
		return
	}
	w.done = true
	if set := s.watchers[w.key]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(s.watchers, w.key)
		}
	}
	close(w.ch)
}

// wake notifies the watchers of key (with prefix) without blocking.
func (s *Store) wake(key string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for w := range s.watchers[key] {
		poke(w)
	}
}

// wakeAll notifies every watcher: after the listening connection dropped,
// any of them may have missed a NOTIFY.
func (s *Store) wakeAll() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, set := range s.watchers {
		for w := range set {
			poke(w)
		}
	}
}

func poke(w *watcher) {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// startListener connects and starts the listening goroutine, once.
func (s *Store) startListener(ctx context.Context) error {
	select {
	case s.listenSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.listenSem }()
	if s.closed.Load() {
		return store.ErrClosed
	}
	if s.listening {
		return nil
	}
	// Close cancels stopCtx: do not let a slow connect hold it up.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stopCtx, cancel)()
	conn, err := s.listenConn(cctx)
	if err != nil {
		if s.closed.Load() {
			return store.ErrClosed
		}
		return err
	}
	if s.closed.Load() { // Close ran while we connected
		closeConn(conn)
		return store.ErrClosed
	}
	s.listening = true
	s.wg.Add(1)
	go s.listen(conn)
	return nil
}

// listenConn takes a connection out of the pool for good (it carries the
// pool's settings and AfterConnect hook) and runs LISTEN on it.
func (s *Store) listenConn(ctx context.Context) (*pgx.Conn, error) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := pc.Hijack()
	if _, err := conn.Exec(ctx, s.sql.listen); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// Reconnect backoff bounds for the listening connection.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// listen delivers notifications until Close, reconnecting when the
// connection drops.
func (s *Store) listen(conn *pgx.Conn) {
	defer s.wg.Done()
	for {
		n, err := conn.WaitForNotification(s.stopCtx)
		if err == nil {
			s.wake(n.Payload)
			continue
		}
		closeConn(conn)
		if s.stopCtx.Err() != nil {
			return
		}
		s.wakeAll()
		conn = s.reconnect()
		if conn == nil {
			return
		}
		s.wakeAll() // anything set while we were away
	}
}

// reconnect retries listenConn with exponential backoff until it works or
// the store is closed (then it returns nil).
func (s *Store) reconnect() *pgx.Conn {
	delay := minBackoff
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return nil
		case <-t.C:
		}
		conn, err := s.listenConn(s.stopCtx)
		if err == nil {
			return conn
		}
		delay = min(2*delay, maxBackoff)
		t.Reset(delay)
	}
}
