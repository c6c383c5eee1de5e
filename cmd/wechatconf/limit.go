package main

import (
	"net"
	"net/http"
	"sync"
)

// limitListener holds at most max connections open at once. At the limit,
// Accept closes one idle keep-alive connection (the server reports their
// state through track) to make room, and otherwise waits for one to
// close: idle clients cannot pin the server's file descriptors.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	idle    map[net.Conn]struct{}
	idleNow chan struct{} // a connection turned idle
}

func newLimitListener(l net.Listener, max int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max), done: make(chan struct{}),
		idle: map[net.Conn]struct{}{}, idleNow: make(chan struct{}, 1)}
}

// Accept waits for a free slot, then for a connection. While it waits,
// each connection that turns idle is closed to make room.
func (l *limitListener) Accept() (net.Conn, error) {
wait:
	for {
		select {
		case l.sem <- struct{}{}:
			break wait
		default:
		}
		l.shedIdle()
		select {
		case l.sem <- struct{}{}:
			break wait
		case <-l.idleNow:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

// Close stops Accept, also one waiting for a slot.
func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// shedIdle closes one idle connection, if there is one; its slot frees
// when the server is done with it.
func (l *limitListener) shedIdle() {
	l.mu.Lock()
	var victim net.Conn
	for c := range l.idle {
		victim = c
		delete(l.idle, c)
		break
	}
	l.mu.Unlock()
	if victim != nil {
		victim.Close()
	}
}

// track is the server's ConnState hook: it keeps the set of idle
// connections.
func (l *limitListener) track(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if state == http.StateIdle {
		l.idle[c] = struct{}{}
		select {
		case l.idleNow <- struct{}{}:
		default:
		}
	} else {
		delete(l.idle, c)
	}
}

// limitConn gives its slot back once, at the first Close.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.l.sem })
	return err
}
