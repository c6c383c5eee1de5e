// Package keeperset holds an app's credential.Keepers, one per kind, each
// made on its first use: conf and wecom make the access token's with the
// app and a ticket's only when it is asked for, since most apps never ask
// for tickets and one process may hold thousands of apps (issue #14).
package keeperset

import (
	"sync"
	"sync/atomic"

	"github.com/wechatconf/wechatconf/credential"
)

// Max is the most kinds a Set holds.
const Max = 4

// Set is the Keepers of one app, indexed by kind. The zero value is empty
// and ready. It is safe for concurrent use.
type Set struct {
	ks     [Max]atomic.Pointer[credential.Keeper]
	mu     sync.Mutex // orders making a Keeper with Close
	closed bool       // guarded by mu
}

// Load returns the Keeper of kind if it was made, else nil (which a
// Keeper's Fresh takes): the hot path, one atomic load.
func (s *Set) Load(kind int) *credential.Keeper { return s.ks[kind].Load() }

// Get returns the Keeper of kind, made by mk on first use. After Close it
// fails with credential.ErrClosed and mk is not called.
func (s *Set) Get(kind int, mk func() (*credential.Keeper, error)) (*credential.Keeper, error) {
	if k := s.ks[kind].Load(); k != nil {
		return k, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.ks[kind].Load(); k != nil {
		return k, nil
	}
	if s.closed {
		return nil, credential.ErrClosed
	}
	k, err := mk()
	if err != nil {
		return nil, err
	}
	s.ks[kind].Store(k)
	return k, nil
}

// Close closes every Keeper made (each waits for its refreshes in flight);
// none is made after it. It is idempotent.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for i := range s.ks {
		if k := s.ks[i].Load(); k != nil {
			k.Close()
		}
	}
}
