package wxcrypto

import (
	cryptorand "crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Signature returns sha1(sort(token, timestamp, nonce)) in lowercase hex:
// the "signature" query parameter WeChat sends with every request. Use it
// to build requests (tests, fakes); servers call VerifySignature.
func Signature(token, timestamp, nonce string) string {
	p := [3]string{token, timestamp, nonce}
	sum := sortedSHA1(p[:])
	return hex.EncodeToString(sum[:])
}

// MsgSignature returns sha1(sort(token, timestamp, nonce, encrypt)) in
// lowercase hex: the "msg_signature" that authenticates an encrypted body.
func MsgSignature(token, timestamp, nonce, encrypt string) string {
	p := [4]string{token, timestamp, nonce, encrypt}
	sum := sortedSHA1(p[:])
	return hex.EncodeToString(sum[:])
}

// sortedSHA1 sorts parts in place and hashes their concatenation.
func sortedSHA1(parts []string) [sha1.Size]byte {
	slices.Sort(parts)
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var stack [256]byte
	b := stack[:0]
	if n > len(stack) {
		b = make([]byte, 0, n)
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	return sha1.Sum(b)
}

// equalHex compares a digest with a received hex signature in constant
// time (the time depends only on the lengths, which are public).
func equalHex(sum [sha1.Size]byte, got string) bool {
	var want [2 * sha1.Size]byte
	hex.Encode(want[:], sum[:])
	if len(got) != len(want) {
		return false
	}
	var v byte
	for i := range want {
		v |= want[i] ^ got[i]
	}
	return v == 0
}

// VerifySignature checks the "signature" query parameter of a request
// against the current token, then the previous one, and the timestamp
// against the replay window (DefaultMaxSkew, see WithMaxSkew). Errors wrap
// ErrSignature or ErrStaleTimestamp.
func (c *Crypto) VerifySignature(signature, timestamp, nonce string) error {
	if _, err := c.verify("verify signature", signature, timestamp, nonce, "", false); err != nil {
		return err
	}
	return nil
}

// VerifyMsgSignature checks a "msg_signature" over an encrypted body (the
// content of its <Encrypt> element) against the current token, then the
// previous one, and the timestamp against the replay window. Errors wrap
// ErrSignature, ErrStaleTimestamp, or ErrTooLarge for an encrypt over
// MaxBodySize.
func (c *Crypto) VerifyMsgSignature(msgSignature, timestamp, nonce, encrypt string) error {
	if _, err := c.verify("verify msg_signature", msgSignature, timestamp, nonce, encrypt, true); err != nil {
		return err
	}
	return nil
}

// verify returns the pairs whose token produced sig (the current pair
// first), after checking the timestamp. Several pairs match when only the
// key was rotated.
func (c *Crypto) verify(op, sig, timestamp, nonce, encrypt string, withEncrypt bool) ([]*pair, error) {
	name := "signature"
	if withEncrypt {
		name = "msg_signature"
	}
	if sig == "" {
		return nil, fmt.Errorf("wxcrypto: %s: %w: no %s", op, ErrSignature, name)
	}
	if len(encrypt) > MaxBodySize {
		return nil, fmt.Errorf("wxcrypto: %s: ciphertext %w (%d bytes, over %d)", op, ErrTooLarge, len(encrypt), MaxBodySize)
	}
	var matched []*pair
	for _, p := range c.pairs() {
		var sum [sha1.Size]byte
		if withEncrypt {
			parts := [4]string{p.token, timestamp, nonce, encrypt}
			sum = sortedSHA1(parts[:])
		} else {
			parts := [3]string{p.token, timestamp, nonce}
			sum = sortedSHA1(parts[:])
		}
		if equalHex(sum, sig) {
			matched = append(matched, p)
		}
	}
	if len(matched) == 0 {
		if c.prev != nil {
			return nil, fmt.Errorf("wxcrypto: %s: %w: %s matches neither the current nor the previous token", op, ErrSignature, name)
		}
		return nil, fmt.Errorf("wxcrypto: %s: %w: %s does not match the token", op, ErrSignature, name)
	}
	if err := c.checkTime(timestamp); err != nil {
		return nil, fmt.Errorf("wxcrypto: %s: %w", op, err)
	}
	return matched, nil
}

// checkTime applies the replay window (DefaultMaxSkew or WithMaxSkew).
func (c *Crypto) checkTime(timestamp string) error {
	if c.maxSkew <= 0 {
		return nil
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not a Unix time", ErrStaleTimestamp, clip([]byte(timestamp)))
	}
	now := c.now()
	t := time.Unix(sec, 0)
	skew := now.Sub(t)
	if skew < 0 {
		skew = -skew
	}
	if skew > c.maxSkew {
		return fmt.Errorf("%w: timestamp %d is %s away from the clock, more than %s", ErrStaleTimestamp, sec, skew.Truncate(time.Second), c.maxSkew)
	}
	return nil
}

// SignJSSDK returns the signature that wx.config needs on a web page:
// sha1("jsapi_ticket=T&noncestr=N&timestamp=S&url=U") in lowercase hex,
// where U is pageURL without its #fragment and nothing is URL-escaped, as
// WeChat's JS-SDK documentation (appendix 1) specifies. The same algorithm
// serves WeCom's JS-SDK.
func SignJSSDK(ticket, nonceStr string, timestamp int64, pageURL string) string {
	if i := strings.IndexByte(pageURL, '#'); i >= 0 {
		pageURL = pageURL[:i]
	}
	var stack [512]byte
	b := append(stack[:0], "jsapi_ticket="...)
	b = append(b, ticket...)
	b = append(b, "&noncestr="...)
	b = append(b, nonceStr...)
	b = append(b, "&timestamp="...)
	b = strconv.AppendInt(b, timestamp, 10)
	b = append(b, "&url="...)
	b = append(b, pageURL...)
	sum := sha1.Sum(b)
	return hex.EncodeToString(sum[:])
}

// JSSDKConfig holds what a page passes to wx.config, with the JSON names
// the JS-SDK expects; encode it with encoding/json for the page.
type JSSDKConfig struct {
	AppID     string `json:"appId"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// NewJSSDKConfig signs pageURL for wx.config with a live jsapi_ticket. The
// page must call wx.config with exactly this timestamp and nonceStr; make
// a fresh nonce with NonceStr.
func NewJSSDKConfig(appID, ticket, pageURL string, timestamp int64, nonceStr string) JSSDKConfig {
	return JSSDKConfig{
		AppID:     appID,
		Timestamp: timestamp,
		NonceStr:  nonceStr,
		Signature: SignJSSDK(ticket, nonceStr, timestamp, pageURL),
	}
}

// NonceStr returns a fresh random nonce for wx.config: 26 characters of
// [A-Z2-7] carrying 128 bits from crypto/rand.
func NonceStr() string { return cryptorand.Text() }
