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

// replayWindow is the setting of WithReplayWindow; the zero value means
// DefaultReplayWindow.
type replayWindow struct {
	set bool
	d   time.Duration
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
		c.replay = replayWindow{set: true, d: d}
		return nil
	}
}

// cryptoOptions are the wxcrypto options every Crypto of this Conf gets:
// the replay window, judged by the Conf's clock.
func (c *Conf) cryptoOptions() []wxcrypto.Option {
	return []wxcrypto.Option{wxcrypto.WithMaxSkew(c.cfg.replay.window()), wxcrypto.WithClock(c.now)}
}
