package conf

import (
	"context"
	"fmt"
	"sync"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

// validate checks a settings snapshot the way the Python seed does when it
// builds its crypto: a known mode, a well-formed key, and for compatible and
// safe modes with a key, a Token and an AppID (ErrNeedParam otherwise).
func (s *settings) validate() error {
	mode, err := wxcrypto.ParseMode(s.mode)
	if err != nil {
		return fmt.Errorf("conf: encrypt mode: %w", err)
	}
	if s.aesKey != "" {
		if err := wxcrypto.ValidateKey(s.aesKey); err != nil {
			return fmt.Errorf("conf: EncodingAESKey: %w", err)
		}
		if mode != wxcrypto.Normal && (s.token == "" || s.appID == "") {
			return fmt.Errorf("%w: %s mode with an EncodingAESKey needs a Token and an AppID", ErrNeedParam, mode)
		}
	}
	return nil
}

// cryptoCache builds a settings snapshot's Crypto once, and again without
// the previous key once the rotation grace has passed.
type cryptoCache struct {
	mu       sync.Mutex
	c        *wxcrypto.Crypto
	err      error
	withPrev bool
}

// Crypto returns the message crypto for the current Token, EncodingAESKey,
// encrypt mode and AppID (the seed's .crypto). It follows SetToken,
// SetEncodingAESKey, SetEncryptMode and SetAppIDAppSecret; for the rotation
// grace after a change of Token or key it also accepts messages made with
// the previous pair. Messages stamped further from the clock than the
// replay window (DefaultReplayWindow, see WithReplayWindow) are refused. In
// compatible or safe mode without an EncodingAESKey, or without a Token,
// the error matches ErrNeedParam.
func (c *Conf) Crypto() (*wxcrypto.Crypto, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	s := c.settings.Load()
	cc := &s.crypto
	cc.mu.Lock()
	defer cc.mu.Unlock()
	inGrace := (s.prevToken != "" || s.prevAESKey != "") && c.cfg.rotationGrace > 0 && c.now().Before(s.rotatedAt.Add(c.cfg.rotationGrace))
	if cc.c != nil || cc.err != nil {
		if !cc.withPrev || inGrace {
			return cc.c, cc.err
		}
	}
	opts := c.cryptoOptions()
	if inGrace {
		opts = append(opts, wxcrypto.WithPrevious(s.prevToken, s.prevAESKey))
	}
	cc.c, cc.err = wxcrypto.New(wxcrypto.Mode(s.mode), s.token, s.aesKey, s.appID, opts...)
	cc.withPrev = inGrace
	if cc.err != nil {
		cc.err = fmt.Errorf("%w: %w", ErrNeedParam, cc.err)
	}
	return cc.c, cc.err
}

// JSConfig signs pageURL (its #fragment is dropped) for the JS-SDK's
// wx.config with the live jsapi ticket, a fresh nonce and the current time.
func (c *Conf) JSConfig(ctx context.Context, pageURL string) (*wxcrypto.JSSDKConfig, error) {
	if pageURL == "" {
		return nil, fmt.Errorf("conf: JSConfig: empty page URL")
	}
	ticket, err := c.JSAPITicket(ctx)
	if err != nil {
		return nil, err
	}
	cfg := wxcrypto.NewJSSDKConfig(c.AppID(), ticket, pageURL, c.now().Unix(), wxcrypto.NonceStr())
	return &cfg, nil
}
