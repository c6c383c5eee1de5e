package wxcrypto

import (
	"bytes"
	"encoding/xml"
	"net/url"
	"strings"
	"testing"
)

// FuzzDecrypt feeds arbitrary text to Decrypt: it must return a message or
// one of the decryption errors, never panic, and whatever it accepts must
// survive a fresh round trip. Seeds: testdata/fuzz/FuzzDecrypt.
func FuzzDecrypt(f *testing.F) {
	f.Add(vecMsgEncrypt)
	f.Add(vecEchoStr)
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAA==")
	c := mustNew(f, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey))
	f.Fuzz(func(t *testing.T, in string) {
		msg, err := c.Decrypt(in)
		if err != nil {
			if msg != nil || !isAny(err, append(decryptSentinels, ErrTooLarge)...) {
				t.Fatalf("Decrypt(%q) = %q, %v", in, msg, err)
			}
			return
		}
		enc, err := c.Encrypt(msg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.Decrypt(enc)
		if err != nil || !bytes.Equal(again, msg) {
			t.Fatalf("round trip of %q: %q, %v", msg, again, err)
		}
	})
}

// FuzzDecryptFrame encrypts arbitrary plaintext frames with the right key
// (random ciphertexts almost never get past the padding), so the fuzzer
// reaches the padding, length and receiver ID checks. Whatever Decrypt
// accepts must be exactly what the frame says.
func FuzzDecryptFrame(f *testing.F) {
	f.Add(pkcs7(frame(5, "hello", testID)))
	f.Add(pkcs7(frame(uint32(len(chinese)), chinese, testID)))
	f.Add(pkcs7(frame(1000, "hello", testID)))
	f.Add(pkcs7(frame(5, "hello", "wxOther")))
	f.Add(zeroPad(frame(5, "hello", testID)))
	f.Add([]byte{})
	c := mustNew(f, Safe, testToken, testKey, testID)
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) == 0 || len(plain)%16 != 0 {
			plain = zeroPad(plain)
		}
		msg, err := c.Decrypt(rawEncrypt(t, testKey, plain))
		if err != nil {
			if !isAny(err, ErrPadding, ErrLength, ErrReceiverID) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		pad := int(plain[len(plain)-1])
		body := plain[:len(plain)-pad]
		want := body[20 : len(body)-len(testID)]
		if !bytes.Equal(msg, want) || string(body[len(body)-len(testID):]) != testID {
			t.Fatalf("Decrypt accepted %x as %q", plain, msg)
		}
	})
}

// FuzzParseEnvelope feeds arbitrary bodies to the XML envelope parser.
func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(vecMsgBody))
	f.Add([]byte(plainMsg))
	f.Add([]byte("<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"))
	f.Add([]byte("<xml><Encrypt><![CDATA[x]]>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := ParseEnvelope(body)
		if err != nil {
			if !isAny(err, ErrMalformedXML, ErrTooLarge) || env != (Envelope{}) {
				t.Fatalf("ParseEnvelope(%q) = %+v, %v", body, env, err)
			}
			return
		}
		if env.XMLName.Local != "xml" {
			t.Fatalf("ParseEnvelope accepted root <%s>", env.XMLName.Local)
		}
		// The token walk reads what xml.Unmarshal would (it only
		// refuses more: deep nesting, repeated fields).
		var want Envelope
		if err := xml.Unmarshal(body, &want); err != nil || want != env {
			t.Fatalf("ParseEnvelope(%q) = %+v; xml.Unmarshal = %+v, %v", body, env, want, err)
		}
	})
}

// FuzzOpen feeds arbitrary queries and bodies to Open in each mode: every
// failure must wrap a sentinel, and nothing is accepted without a valid
// signature (the fuzzer cannot forge SHA-1 with the token).
func FuzzOpen(f *testing.F) {
	f.Add(vecQuery().Encode(), []byte(vecMsgBody))
	f.Add(plainQuery(testToken, "1", "2").Encode(), []byte(plainMsg))
	f.Add("encrypt_type=aes", []byte("<xml><Encrypt>x</Encrypt></xml>"))
	f.Add("msg_signature=&timestamp=%zz", []byte("<xml/>"))
	cs := []*Crypto{
		mustNew(f, Normal, testToken, "", testID),
		mustNew(f, Compatible, testToken, testKey, testID),
		mustNew(f, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey)),
	}
	sentinels := append([]error{ErrMalformedXML, ErrModeMismatch, ErrSignature, ErrStaleTimestamp, ErrNoKey, ErrTooLarge}, decryptSentinels...)
	f.Fuzz(func(t *testing.T, rawQuery string, body []byte) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		for _, c := range cs {
			m, err := c.Open(q, body)
			if err != nil {
				if m != nil || !isAny(err, sentinels...) || !strings.HasPrefix(err.Error(), "wxcrypto: open: ") {
					t.Fatalf("%s: Open = %v, %v", c.Mode(), m, err)
				}
				continue
			}
			ts, nonce := q.Get("timestamp"), q.Get("nonce")
			signed := q.Get("signature") == Signature(testToken, ts, nonce) ||
				q.Get("msg_signature") != "" && (q.Get("msg_signature") == MsgSignature(testToken, ts, nonce, mustEnvT(t, body).Encrypt) ||
					q.Get("msg_signature") == MsgSignature(otherToken, ts, nonce, mustEnvT(t, body).Encrypt))
			if !signed {
				t.Fatalf("%s: Open accepted an unsigned request %q", c.Mode(), rawQuery)
			}
		}
	})
}

func mustEnvT(t *testing.T, body []byte) Envelope {
	env, err := ParseEnvelope(body)
	if err != nil {
		t.Fatalf("Open accepted a body ParseEnvelope refuses: %v", err)
	}
	return env
}

// FuzzVerifyWeComURL feeds arbitrary URL checks to VerifyWeComURL: every
// failure wraps a sentinel, and nothing is accepted unless msg_signature
// is the token's signature over the echostr (the fuzzer cannot forge
// SHA-1), and what is accepted is what the echostr decrypts to. Seeds:
// testdata/fuzz/FuzzVerifyWeComURL.
func FuzzVerifyWeComURL(f *testing.F) {
	f.Add(vecEchoSig, vecEchoTS, vecEchoNonce, vecEchoStr)
	f.Add("", "", "", "")
	f.Add(MsgSignature(testToken, vecEchoTS, vecEchoNonce, "AAAAAAAAAAAAAAAAAAAAAA=="), vecEchoTS, vecEchoNonce, "AAAAAAAAAAAAAAAAAAAAAA==")
	f.Add(MsgSignature(testToken, "x", vecEchoNonce, vecEchoStr), "x", vecEchoNonce, vecEchoStr)
	c := mustNew(f, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey), WithMaxSkew(0))
	sentinels := append([]error{ErrSignature, ErrStaleTimestamp, ErrNoKey, ErrTooLarge}, decryptSentinels...)
	f.Fuzz(func(t *testing.T, sig, ts, nonce, echo string) {
		got, err := c.VerifyWeComURL(sig, ts, nonce, echo)
		if err != nil {
			if got != nil || !isAny(err, sentinels...) || !strings.HasPrefix(err.Error(), "wxcrypto: verify WeCom URL: ") {
				t.Fatalf("VerifyWeComURL = %q, %v", got, err)
			}
			return
		}
		if sig != MsgSignature(testToken, ts, nonce, echo) && sig != MsgSignature(otherToken, ts, nonce, echo) {
			t.Fatalf("accepted an unsigned check %q %q %q", sig, ts, nonce)
		}
		want, err := c.Decrypt(echo)
		if err != nil || !bytes.Equal(want, got) {
			t.Fatalf("accepted %q, but Decrypt says %q, %v", got, want, err)
		}
	})
}
