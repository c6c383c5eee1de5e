package conf

import (
	"fmt"
	"time"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

// DefaultReplayWindow is how far from the clock the timestamp of a message
// may lie before Crypto's Open, VerifyURL and Verify* refuse it with
// wxcrypto.ErrStaleTimestamp. It is wxcrypto.DefaultMaxSkew.
const DefaultReplayWindow = wxcrypto.DefaultMaxSkew

// replayWindow holds the settings of WithReplayWindow and WithReplayCache;
// the zero value means DefaultReplayWindow and no cache.
type replayWindow struct {
	set   bool
	d     time.Duration
	cache wxcrypto.ReplayCache
}

// window returns the window in force; 0 means the check is off.
func (r replayWindow) window() time.Duration {
	if !r.set {
		return DefaultReplayWindow
	}
	return r.d
}

// WithReplayWindow sets the replay window of the message crypto (Crypto):
// a message whose timestamp lies more than d from the clock is refused with
// an error matching wxcrypto.ErrStaleTimestamp. A captured request (its
// signature, timestamp and nonce) then stops working after d, which matters
// most in normal and compatible mode, where the plain signature does not
// cover the body. The default is DefaultReplayWindow (5 minutes); leave room
// for the drift between WeChat's clock and this machine's. 0 turns the check
// off; a negative d is an error.
func WithReplayWindow(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("conf: WithReplayWindow: negative window %v", d)
		}
		c.replay.set, c.replay.d = true, d
		return nil
	}
}

// WithReplayCache makes the message crypto (Crypto) record every request
// its Open accepts in rc and refuse one seen before with an error matching
// wxcrypto.ErrReplay: an exact replay inside the replay window. Give every
// node the same shared cache (one on Redis, say) to refuse a replay sent to
// another node; wxcrypto.NewMemoryReplayCache serves one process. The cache
// is kept across key rotations. See wxcrypto.WithReplayCache.
func WithReplayCache(rc wxcrypto.ReplayCache) Option {
	return func(c *config) error {
		if rc == nil {
			return fmt.Errorf("conf: WithReplayCache: nil cache")
		}
		c.replay.cache = rc
		return nil
	}
}

// cryptoOptions are the wxcrypto options every Crypto of this Conf gets:
// the replay window, judged by the Conf's clock, and the replay cache.
func (c *Conf) cryptoOptions() []wxcrypto.Option {
	opts := []wxcrypto.Option{wxcrypto.WithMaxSkew(c.cfg.replay.window()), wxcrypto.WithClock(c.now)}
	if c.cfg.replay.cache != nil {
		opts = append(opts, wxcrypto.WithReplayCache(c.cfg.replay.cache))
	}
	return opts
}
