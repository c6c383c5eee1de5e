package wxcrypto

import (
	"bytes"
	"errors"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue #11: a message stamped in 2001 was accepted again and again, since
// no default used the replay window.
func TestReplayWindowOnByDefault(t *testing.T) {
	const ts2001 = "1000000000" // 2001-09-09
	now := time.Now()
	for _, mode := range []Mode{Normal, Compatible, Safe} {
		key := testKey
		c, err := New(mode, testToken, key, testID) // the real clock, no option
		if err != nil {
			t.Fatal(err)
		}
		wechat := mustNew(t, mode, testToken, key, testID, WithClock(fixedClock(1000000000)))
		q, body, err := wechat.SealRequest("gh_1", []byte(plainMsg))
		if err != nil {
			t.Fatal(err)
		}
		if q.Get("timestamp") != ts2001 {
			t.Fatalf("timestamp %s", q.Get("timestamp"))
		}
		for i := range 3 {
			if m, err := c.Open(q, body); !errors.Is(err, ErrStaleTimestamp) || m != nil {
				t.Fatalf("%s: replay %d of a 2001 message: Open = %v, %v; want ErrStaleTimestamp", mode, i+1, m, err)
			}
		}
		// A fresh message still passes.
		fresh := mustNew(t, mode, testToken, key, testID, WithClock(func() time.Time { return now }))
		q, body, _ = fresh.SealRequest("gh_1", []byte(plainMsg))
		if _, err := c.Open(q, body); err != nil {
			t.Fatalf("%s: fresh message: %v", mode, err)
		}
	}
	if c, _ := New(Safe, testToken, testKey, testID); !strings.Contains(c.String(), "maxSkew:5m0s") {
		t.Errorf("String() = %s, want the default window shown", c)
	}
}

// Issue #11: in compatible mode a captured signature, timestamp and nonce
// (which do not cover the body) let a forged plaintext body through.
func TestCompatibleForgedPlaintextWithCapturedSignature(t *testing.T) {
	const captured = 1409659813
	c, err := New(Compatible, testToken, testKey, testID, WithClock(fixedClock(captured+3600)))
	if err != nil {
		t.Fatal(err)
	}
	q := plainQuery(testToken, strconv.Itoa(captured), "1372623149")
	forged := []byte("<xml><ToUserName>gh_1</ToUserName><MsgType>text</MsgType><Content>transfer all</Content></xml>")
	if m, err := c.Open(q, forged); !errors.Is(err, ErrStaleTimestamp) || m != nil {
		t.Fatalf("Open(captured signature, forged body) = %v, %v; want ErrStaleTimestamp", m, err)
	}
	// The window is a setting: widened, the same request passes; off, too.
	for _, opt := range []Option{WithMaxSkew(2 * time.Hour), WithMaxSkew(0)} {
		c := mustNew(t, Compatible, testToken, testKey, testID, WithClock(fixedClock(captured+3600)), opt)
		if _, err := c.Open(q, forged); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
	}
}

// Issue #11: Open had no size limit (a 50 MiB body allocated 344 MB).
func TestEverySizeLimit(t *testing.T) {
	c := mustNew(t, Compatible, testToken, testKey, testID)
	huge := bytes.Repeat([]byte("A"), 50<<20)
	body := append(append([]byte("<xml><Encrypt>"), huge...), "</Encrypt></xml>"...)
	enc := string(huge)
	q := url.Values{"msg_signature": {MsgSignature(testToken, vecMsgTS, "1", enc)}, "timestamp": {vecMsgTS}, "nonce": {"1"}, "echostr": {enc}}

	for name, call := range map[string]func() error{
		"Open":               func() error { _, err := c.Open(q, body); return err },
		"OpenReply":          func() error { _, err := c.OpenReply(body); return err },
		"ParseEnvelope":      func() error { _, err := ParseEnvelope(body); return err },
		"Decrypt":            func() error { _, err := c.Decrypt(enc); return err },
		"VerifyURL":          func() error { _, err := c.VerifyURL(q); return err },
		"VerifyMsgSignature": func() error { return c.VerifyMsgSignature(q.Get("msg_signature"), vecMsgTS, "1", enc) },
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := call()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s(50 MiB) = %v, want ErrTooLarge", name, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("%s(50 MiB) allocated %d bytes before refusing", name, n)
		}
	}
	// Exactly MaxBodySize is still read (and fails for another reason).
	atLimit := append(append([]byte("<xml><Encrypt>"), bytes.Repeat([]byte("A"), MaxBodySize-30)...), "</Encrypt></xml>"...)
	if len(atLimit) != MaxBodySize {
		t.Fatalf("test body of %d bytes", len(atLimit))
	}
	if _, err := ParseEnvelope(atLimit); err != nil {
		t.Fatalf("ParseEnvelope(MaxBodySize bytes) = %v", err)
	}
}

// Issue #11: 200 000 nested XML elements were parsed.
func TestXMLDepthBounded(t *testing.T) {
	nest := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString("<xml><Encrypt>abc</Encrypt>")
		for range n - 1 {
			b.WriteString("<a>")
		}
		for range n - 1 {
			b.WriteString("</a>")
		}
		b.WriteString("</xml>")
		return b.Bytes()
	}
	if env, err := ParseEnvelope(nest(MaxXMLDepth)); err != nil || env.Encrypt != "abc" {
		t.Fatalf("%d levels: %+v, %v", MaxXMLDepth, env, err)
	}
	if _, err := ParseEnvelope(nest(MaxXMLDepth + 1)); !errors.Is(err, ErrMalformedXML) || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("%d levels: %v, want ErrMalformedXML", MaxXMLDepth+1, err)
	}
	// 200 000 open elements (the closing tags would not fit MaxBodySize).
	start := time.Now()
	deep := []byte("<xml>" + strings.Repeat("<a>", 200000))
	c := mustNew(t, Compatible, testToken, testKey, testID)
	q := plainQuery(testToken, vecMsgTS, "1")
	if _, err := c.Open(q, deep); !errors.Is(err, ErrMalformedXML) {
		t.Fatalf("200 000 levels: Open = %v, want ErrMalformedXML", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing 200 000 levels took %v", d)
	}
}

func TestEnvelopeFieldsOnceAndDirectText(t *testing.T) {
	for _, body := range []string{
		"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",
		"<xml><ToUserName>a</ToUserName><Nonce>1</Nonce><ToUserName>b</ToUserName></xml>",
	} {
		if _, err := ParseEnvelope([]byte(body)); !errors.Is(err, ErrMalformedXML) || !strings.Contains(err.Error(), "twice") {
			t.Errorf("ParseEnvelope(%s) = %v, want a field given twice", body, err)
		}
	}
	env, err := ParseEnvelope([]byte("<?xml version=\"1.0\"?><!-- c --><xml><Encrypt>a<x>ignored</x><![CDATA[b]]></Encrypt><item><Encrypt>nested</Encrypt></item></xml>trailing"))
	if err != nil || env.Encrypt != "ab" {
		t.Fatalf("ParseEnvelope = %+v, %v", env, err)
	}
}

// Issue #11: errors wrapping ErrReceiverID quoted up to 64 bytes of
// decrypted data (message plaintext, bound for logs).
func TestDecryptErrorsQuoteNoPlaintext(t *testing.T) {
	const secret = "SECRET-PLAINTEXT-OF-THE-MESSAGE"
	c := mustNew(t, Safe, testToken, testKey, testID)
	for name, plain := range map[string][]byte{
		// The length field stops early: the rest of the message is
		// taken for the receiver ID.
		"receiver ID": pkcs7(frame(2, "<x"+secret, testID)),
		"wrong ID":    pkcs7(frame(uint32(len(secret)), secret, secret)),
		"length":      pkcs7(frame(1<<30, secret, testID)),
		"padding":     append(frame(uint32(len(secret)), secret, testID), make([]byte, 32-(20+len(secret)+len(testID))%32)...),
	} {
		if len(plain)%16 != 0 {
			plain = zeroPad(plain)
		}
		_, err := c.Decrypt(rawEncrypt(t, testKey, plain))
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		for _, leak := range []string{secret, secret[:8], "<x"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%s: error %q quotes decrypted bytes %q", name, err, leak)
			}
		}
	}
}

// The replay window does not depend on the key pair: a message under the
// previous pair is held to it too.
func TestReplayWindowWithPrevious(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey), WithClock(fixedClock(1700000000)))
	old := mustNew(t, Safe, otherToken, otherKey, testID, WithClock(fixedClock(1700000000-301)))
	q, body, _ := old.SealRequest("gh", []byte(plainMsg))
	if _, err := c.Open(q, body); !errors.Is(err, ErrStaleTimestamp) {
		t.Fatalf("Open(previous pair, 5m01s old) = %v", err)
	}
}
