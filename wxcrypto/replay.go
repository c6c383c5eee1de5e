package wxcrypto

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// ReplayCache remembers the requests Open accepted, so that an exact replay
// (the same timestamp and nonce, whatever the body) is refused with ErrReplay even
// inside the replay window, where the timestamp check alone lets it
// through. In normal and compatible mode this also stops a forged body sent
// with the signature of a request already received. Implementations must
// be safe for concurrent use; to refuse a replay sent to another node,
// share one among the nodes (for example Redis SET key 1 NX PXAT expires).
type ReplayCache interface {
	// Add records key until expires and reports whether an unexpired
	// record of key existed already: then the request is a replay. An
	// error makes Open fail with it (the cache fails closed).
	Add(key string, expires time.Time) (seen bool, err error)
}

// WithReplayCache makes Open record every request it accepts in rc and
// refuse one seen before with ErrReplay. Records last until the request's
// timestamp plus the replay window (DefaultMaxSkew unless WithMaxSkew),
// after which the window refuses it anyway; with the window off they last
// DefaultMaxSkew from now.
//
// Only Open (and OpenRequest) records: VerifySignature, VerifyMsgSignature,
// VerifyURL and OpenReply do not, so calling one of them before Open on the
// same request is no replay. WeChat retries a push it got no answer for
// within 5 seconds; if the retry carries the same parameters it gets
// ErrReplay, and the right answer to it is an empty 200 (the first copy is
// being handled).
func WithReplayCache(rc ReplayCache) Option {
	return func(o *options) { o.replay = rc }
}

// replayKey names a request in a ReplayCache: a hash of the receiver ID
// (so that apps may share a cache), the timestamp and the nonce. The
// signatures are left out on purpose: a request WeChat pushed encrypted
// could otherwise come back as plaintext under its plain signature (which
// covers the same timestamp and nonce) with a forged body. Only requests
// whose signature matched are recorded, so no one without the token can
// fill the cache.
func (c *Crypto) replayKey(timestamp, nonce string) string {
	h := sha256.New()
	for _, s := range [...]string{c.receiverID, timestamp, nonce} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "wxcrypto:replay:" + hex.EncodeToString(h.Sum(nil))
}

// checkReplay records an accepted request and refuses one seen before.
func (c *Crypto) checkReplay(op, timestamp, nonce string) error {
	if c.replay == nil {
		return nil
	}
	window := c.maxSkew
	expires := c.now().Add(DefaultMaxSkew)
	if window > 0 {
		sec, _ := strconv.ParseInt(timestamp, 10, 64) // checkTime parsed it already
		expires = time.Unix(sec, 0).Add(window)
	}
	seen, err := c.replay.Add(c.replayKey(timestamp, nonce), expires)
	if err != nil {
		return fmt.Errorf("wxcrypto: %s: replay cache: %w", op, err)
	}
	if seen {
		return fmt.Errorf("wxcrypto: %s: %w: timestamp %s and nonce already accepted", op, ErrReplay, clip([]byte(timestamp)))
	}
	return nil
}

// MemoryReplayCache is a ReplayCache for one process: a map of unexpired
// records, swept of expired ones at most once a minute. Its size is bounded
// by the requests accepted within one replay window, which only WeChat
// (holding the token) can produce. The zero value is not usable: call
// NewMemoryReplayCache.
type MemoryReplayCache struct {
	mu        sync.Mutex
	seen      map[string]time.Time
	now       func() time.Time
	nextSweep time.Time
}

// NewMemoryReplayCache returns an empty MemoryReplayCache.
func NewMemoryReplayCache() *MemoryReplayCache {
	return &MemoryReplayCache{seen: map[string]time.Time{}, now: time.Now}
}

// Add implements ReplayCache.
func (m *MemoryReplayCache) Add(key string, expires time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if !now.Before(m.nextSweep) {
		for k, exp := range m.seen {
			if !now.Before(exp) {
				delete(m.seen, k)
			}
		}
		m.nextSweep = now.Add(time.Minute)
	}
	if exp, ok := m.seen[key]; ok && now.Before(exp) {
		return true, nil
	}
	if now.Before(expires) {
		m.seen[key] = expires
	}
	return false, nil
}

// Len returns the number of records held, expired ones not yet swept
// included.
func (m *MemoryReplayCache) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}
