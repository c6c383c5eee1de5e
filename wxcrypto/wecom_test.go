package wxcrypto

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// The URL check of WeCom's published sample (加解密方案说明; the same values
// are in Tencent's WXBizMsgCrypt samples): token QDG6eK, the key and CorpID
// of helpers_test.go, and the vecEcho* query.
func TestVerifyWeComURLOfficialVector(t *testing.T) {
	for _, mode := range []Mode{Safe, Compatible} {
		c := mustNew(t, mode, testToken, testKey, testID, WithClock(fixedClock(1409659589)))
		got, err := c.VerifyWeComURL(vecEchoSig, vecEchoTS, vecEchoNonce, vecEchoStr)
		if err != nil || string(got) != vecEchoPlain {
			t.Fatalf("%s: VerifyWeComURL(official) = %q, %v; want %q", mode, got, err, vecEchoPlain)
		}
	}
	// Normal mode with a key works too: WeCom has no plaintext mode.
	n := mustNew(t, Normal, testToken, testKey, testID)
	if got, err := n.VerifyWeComURL(vecEchoSig, vecEchoTS, vecEchoNonce, vecEchoStr); err != nil || string(got) != vecEchoPlain {
		t.Fatalf("normal mode with a key: %q, %v", got, err)
	}
}

// weComCheck builds a URL check independently of the package: the frame
// by hand, CBC by crypto/aes in rawEncrypt, the signature by refSign.
func weComCheck(t *testing.T, token, key, corpID, echo, ts, nonce string) (sig, enc string) {
	t.Helper()
	enc = rawEncrypt(t, key, pkcs7(frame(uint32(len(echo)), echo, corpID)))
	return refSign(token, ts, nonce, enc), enc
}

func TestVerifyWeComURLGenerated(t *testing.T) {
	const ts, nonce = "1409659700", "1372623149"
	c := mustNew(t, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey))
	for _, echo := range []string{"5837397520104627206", "", "你好，企业微信", strings.Repeat("e", 1000)} {
		sig, enc := weComCheck(t, testToken, testKey, testID, echo, ts, nonce)
		got, err := c.VerifyWeComURL(sig, ts, nonce, enc)
		if err != nil || string(got) != echo {
			t.Fatalf("echo %q: got %q, %v", echo, got, err)
		}
		// Under the previous pair (a rotation in progress).
		sig, enc = weComCheck(t, otherToken, otherKey, testID, echo, ts, nonce)
		if got, err := c.VerifyWeComURL(sig, ts, nonce, enc); err != nil || string(got) != echo {
			t.Fatalf("previous pair, echo %q: got %q, %v", echo, got, err)
		}
	}
}

func TestVerifyWeComURLErrors(t *testing.T) {
	const ts, nonce, echo = "1409659700", "263014780", "1616140317555161061"
	c := mustNew(t, Safe, testToken, testKey, testID)
	sig, enc := weComCheck(t, testToken, testKey, testID, echo, ts, nonce)
	otherCorp := mustNew(t, Safe, testToken, testKey, "ww00000000000000b2")
	noKey := mustNew(t, Normal, testToken, "", testID)
	// A signature over garbage, so that decryption is reached.
	garbage := "AAAAAAAAAAAAAAAAAAAAAA=="
	tooBig := strings.Repeat("A", MaxBodySize+4)
	for _, tc := range []struct {
		name                 string
		c                    *Crypto
		sig, ts, nonce, echo string
		want                 error
	}{
		{"no msg_signature", c, "", ts, nonce, enc, ErrSignature},
		{"wrong msg_signature", c, vecMsgSig, ts, nonce, enc, ErrSignature},
		{"signature over the plaintext", c, refSign(testToken, ts, nonce, echo), ts, nonce, enc, ErrSignature},
		{"plain OA signature", c, Signature(testToken, ts, nonce), ts, nonce, enc, ErrSignature},
		{"other token", c, refSign(otherToken, ts, nonce, enc), ts, nonce, enc, ErrSignature},
		{"nonce changed", c, sig, ts, "1", enc, ErrSignature},
		{"uppercase hex", c, strings.ToUpper(sig), ts, nonce, enc, ErrSignature},
		{"stale", c, refSign(testToken, "1409000000", nonce, enc), "1409000000", nonce, enc, ErrStaleTimestamp},
		{"not a time", c, refSign(testToken, "soon", nonce, enc), "soon", nonce, enc, ErrStaleTimestamp},
		{"wrong CorpID", otherCorp, sig, ts, nonce, enc, ErrReceiverID},
		{"no key", noKey, sig, ts, nonce, enc, ErrNoKey},
		{"not base64", c, refSign(testToken, ts, nonce, "%%%"), ts, nonce, "%%%", ErrBase64},
		{"empty echostr", c, refSign(testToken, ts, nonce, ""), ts, nonce, "", ErrBlockSize},
		{"garbage", c, refSign(testToken, ts, nonce, garbage), ts, nonce, garbage, ErrPadding},
		{"too large", c, sig, ts, nonce, tooBig, ErrTooLarge},
	} {
		got, err := tc.c.VerifyWeComURL(tc.sig, tc.ts, tc.nonce, tc.echo)
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: got %q, %v; want %v", tc.name, got, err, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), "wxcrypto: verify WeCom URL: ") {
			t.Errorf("%s: error %q lacks package and operation", tc.name, err)
		}
		for _, leak := range []string{testToken, testKey, echo} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%s: error %q reveals %q", tc.name, err, leak)
			}
		}
	}
}

// The replay window: the check is judged by the clock like any request,
// and WithMaxSkew(0) turns that off.
func TestVerifyWeComURLReplayWindow(t *testing.T) {
	const ts = 1409659589
	for _, tc := range []struct {
		now  int64
		opts []Option
		ok   bool
	}{
		{ts, nil, true},
		{ts + 300, nil, true},
		{ts - 300, nil, true},
		{ts + 301, nil, false},
		{ts - 301, nil, false},
		{ts + 3600, []Option{WithMaxSkew(2 * 3600e9)}, true},
		{ts + 10*365*86400, []Option{WithMaxSkew(0)}, true},
	} {
		c := mustNew(t, Safe, testToken, testKey, testID, append(tc.opts, WithClock(fixedClock(tc.now)))...)
		_, err := c.VerifyWeComURL(vecEchoSig, vecEchoTS, vecEchoNonce, vecEchoStr)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrStaleTimestamp)) {
			t.Errorf("clock at %s+%d: %v", vecEchoTS, tc.now-ts, err)
		}
	}
}

// A forged echostr never gets decrypted: the signature is checked first,
// so a padding oracle is out of reach.
func TestVerifyWeComURLSignatureBeforeDecrypt(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID)
	for i := range 50 {
		forged := rawEncrypt(t, otherKey, pkcs7(frame(3, strconv.Itoa(i%10)+"xx", testID)))
		if _, err := c.VerifyWeComURL("0000000000000000000000000000000000000000", vecEchoTS, vecEchoNonce, forged); !errors.Is(err, ErrSignature) {
			t.Fatalf("forged %d: %v; want ErrSignature before any decryption", i, err)
		}
	}
}

// VerifyURL and VerifyWeComURL agree on WeCom's check.
func TestVerifyWeComURLMatchesVerifyURL(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID, WithClock(fixedClock(1409659589)))
	a, err1 := c.VerifyWeComURL(vecEchoSig, vecEchoTS, vecEchoNonce, vecEchoStr)
	b, err2 := c.VerifyURL(map[string][]string{"msg_signature": {vecEchoSig}, "timestamp": {vecEchoTS}, "nonce": {vecEchoNonce}, "echostr": {vecEchoStr}})
	if err1 != nil || err2 != nil || string(a) != b {
		t.Fatalf("VerifyWeComURL = %q, %v; VerifyURL = %q, %v", a, err1, b, err2)
	}
}
