package wxcrypto

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"
)

// refSign is a straightforward second implementation to check against.
func refSign(parts ...string) string {
	p := append([]string(nil), parts...)
	sort.Strings(p)
	sum := sha1.Sum([]byte(strings.Join(p, "")))
	return hex.EncodeToString(sum[:])
}

func TestMsgSignatureOfficialVectors(t *testing.T) {
	if got := MsgSignature(testToken, vecEchoTS, vecEchoNonce, vecEchoStr); got != vecEchoSig {
		t.Errorf("MsgSignature(echo vector) = %s, want %s", got, vecEchoSig)
	}
	if got := MsgSignature(testToken, vecMsgTS, vecMsgNonce, vecMsgEncrypt); got != vecMsgSig {
		t.Errorf("MsgSignature(message vector) = %s, want %s", got, vecMsgSig)
	}
}

func TestSignatureMatchesReference(t *testing.T) {
	long := strings.Repeat("长", 200) // past the stack buffer
	for _, p := range [][3]string{
		{"token", "1409659589", "263014780"},
		{"", "", ""},
		{"b", "a", "c"},
		{long, "1", "2"},
		{"same", "same", "same"},
	} {
		if got, want := Signature(p[0], p[1], p[2]), refSign(p[0], p[1], p[2]); got != want {
			t.Errorf("Signature%q = %s, want %s", p, got, want)
		}
		if got, want := MsgSignature(p[0], p[1], p[2], long), refSign(p[0], p[1], p[2], long); got != want {
			t.Errorf("MsgSignature%q = %s, want %s", p, got, want)
		}
	}
	// Sorting matters: the order of the arguments must not.
	if Signature("a", "b", "c") != Signature("c", "a", "b") {
		t.Error("Signature depends on argument order")
	}
}

func TestVerifySignature(t *testing.T) {
	c := mustNew(t, Normal, testToken, "", testID)
	good := Signature(testToken, "1409659589", "263014780")
	if err := c.VerifySignature(good, "1409659589", "263014780"); err != nil {
		t.Fatalf("VerifySignature(good) = %v", err)
	}
	for name, sig := range map[string]string{
		"empty":         "",
		"other token":   Signature("other", "1409659589", "263014780"),
		"uppercase hex": strings.ToUpper(good),
		"truncated":     good[:39],
		"one bit off":   good[:39] + string(good[39]^1),
		"with space":    good + " ",
	} {
		err := c.VerifySignature(sig, "1409659589", "263014780")
		if !errors.Is(err, ErrSignature) {
			t.Errorf("%s: VerifySignature = %v, want ErrSignature", name, err)
		}
	}
	// Changing timestamp or nonce breaks it.
	if err := c.VerifySignature(good, "1409659590", "263014780"); !errors.Is(err, ErrSignature) {
		t.Errorf("other timestamp: %v", err)
	}

	enc := vecMsgEncrypt
	s := mustNew(t, Safe, testToken, testKey, testID)
	if err := s.VerifyMsgSignature(vecMsgSig, vecMsgTS, vecMsgNonce, enc); err != nil {
		t.Fatalf("VerifyMsgSignature(official) = %v", err)
	}
	if err := s.VerifyMsgSignature(vecMsgSig, vecMsgTS, vecMsgNonce, enc[1:]); !errors.Is(err, ErrSignature) {
		t.Fatalf("VerifyMsgSignature(altered body) = %v, want ErrSignature", err)
	}
}

func TestVerifyWithPreviousToken(t *testing.T) {
	c := mustNew(t, Normal, "newtoken", "", testID, WithPrevious("oldtoken", ""))
	for _, tok := range []string{"newtoken", "oldtoken"} {
		if err := c.VerifySignature(Signature(tok, vecMsgTS, "2"), vecMsgTS, "2"); err != nil {
			t.Errorf("token %s: %v", tok, err)
		}
	}
	err := c.VerifySignature(Signature("third", "1", "2"), "1", "2")
	if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "previous") {
		t.Errorf("third token: %v", err)
	}
}

func TestMaxSkew(t *testing.T) {
	const now = 1700000000
	c := mustNew(t, Normal, testToken, "", testID, WithMaxSkew(5*time.Minute), WithClock(fixedClock(now)))
	off := mustNew(t, Normal, testToken, "", testID, WithMaxSkew(0), WithClock(fixedClock(now)))
	for _, tc := range []struct {
		name string
		ts   string
		want error
	}{
		{"now", "1700000000", nil},
		{"4m59s ago", "1699999701", nil},
		{"exactly 5m ago", "1699999700", nil},
		{"5m01s ago", "1699999699", ErrStaleTimestamp},
		{"5m01s ahead", "1700000301", ErrStaleTimestamp},
		{"years ago", "1409659589", ErrStaleTimestamp},
		{"not a number", "yesterday", ErrStaleTimestamp},
		{"empty", "", ErrStaleTimestamp},
		{"overflow", "99999999999999999999", ErrStaleTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := Signature(testToken, tc.ts, "n")
			err := c.VerifySignature(sig, tc.ts, "n")
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("VerifySignature = %v, want %v", err, tc.want)
			}
			if errors.Is(err, ErrSignature) {
				t.Fatalf("stale timestamp reported as bad signature: %v", err)
			}
			if err := off.VerifySignature(sig, tc.ts, "n"); err != nil {
				t.Fatalf("without WithMaxSkew: %v", err)
			}
		})
	}
	// A bad signature is reported as such even with a stale timestamp.
	if err := c.VerifySignature("0000", "1", "n"); !errors.Is(err, ErrSignature) {
		t.Fatalf("bad signature and stale timestamp: %v", err)
	}
}

// The example from WeChat's JS-SDK documentation, appendix 1 (签名算法).
// The current Official Account and WeCom pages sign the URL with a query
// string; older copies of the page signed the bare host. Both are checked.
const (
	docTicket    = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
	docNonce     = "Wm3WZYTPz0wzccnW"
	docTimestamp = 1414587457
)

func TestSignJSSDKDocumentedExample(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://mp.weixin.qq.com?params=value", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"http://mp.weixin.qq.com", "f4d90daf4b3bca3078ab155816175ba34c443a7b"},
		// The fragment is not signed.
		{"http://mp.weixin.qq.com?params=value#section-2", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"http://mp.weixin.qq.com#", "f4d90daf4b3bca3078ab155816175ba34c443a7b"},
	} {
		if got := SignJSSDK(docTicket, docNonce, docTimestamp, tc.url); got != tc.want {
			t.Errorf("SignJSSDK(%q) = %s, want %s", tc.url, got, tc.want)
		}
	}
	// Nothing is escaped or reordered, and a long URL works.
	long := "https://example.com/页面?q=" + strings.Repeat("a&b=c", 200)
	want := sha1.Sum([]byte("jsapi_ticket=t&noncestr=n&timestamp=-5&url=" + long))
	if got := SignJSSDK("t", "n", -5, long+"#x"); got != hex.EncodeToString(want[:]) {
		t.Errorf("SignJSSDK(long) = %s", got)
	}
}

func TestNewJSSDKConfig(t *testing.T) {
	cfg := NewJSSDKConfig("wx123", docTicket, "http://mp.weixin.qq.com?params=value#top", docTimestamp, docNonce)
	if cfg.Signature != "0f9de62fce790f9a083d5c99e95740ceb90c27ed" {
		t.Fatalf("Signature = %s", cfg.Signature)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"appId":"wx123","timestamp":1414587457,"nonceStr":"Wm3WZYTPz0wzccnW","signature":"0f9de62fce790f9a083d5c99e95740ceb90c27ed"}`
	if string(b) != want {
		t.Fatalf("JSON = %s\nwant %s", b, want)
	}
	if strings.Contains(string(b), docTicket) {
		t.Fatal("config reveals the ticket")
	}
}

func TestNonceStr(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := NonceStr()
		if len(n) != 26 || strings.Trim(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("NonceStr = %q", n)
		}
		if seen[n] {
			t.Fatalf("NonceStr repeated %q", n)
		}
		seen[n] = true
	}
}
