package wxcrypto

import (
	"bytes"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

const plainMsg = "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1409659813</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content></xml>"

func plainQuery(token, ts, nonce string) url.Values {
	return url.Values{"signature": {Signature(token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}}
}

func vecQuery() url.Values {
	return url.Values{
		"signature": {Signature(testToken, vecMsgTS, vecMsgNonce)},
		"timestamp": {vecMsgTS}, "nonce": {vecMsgNonce},
		"encrypt_type": {"aes"}, "msg_signature": {vecMsgSig},
	}
}

func TestParseEnvelope(t *testing.T) {
	env, err := ParseEnvelope([]byte(vecMsgBody))
	if err != nil {
		t.Fatal(err)
	}
	if env.ToUserName != testID || env.Encrypt != vecMsgEncrypt || env.AgentID != "218" {
		t.Fatalf("ParseEnvelope = %+v", env)
	}
	// Compatible mode: plaintext fields beside <Encrypt> are ignored.
	env, err = ParseEnvelope([]byte(strings.Replace(plainMsg, "</xml>", "<Encrypt><![CDATA[abc]]></Encrypt></xml>", 1)))
	if err != nil || env.Encrypt != "abc" || env.ToUserName != "gh_123" {
		t.Fatalf("ParseEnvelope(compatible) = %+v, %v", env, err)
	}
	for name, body := range map[string]string{
		"empty":         "",
		"spaces":        "  \n ",
		"not xml":       "hello",
		"json":          `{"Encrypt":"abc"}`,
		"unclosed":      "<xml><Encrypt>abc</Encrypt>",
		"mismatched":    "<xml><Encrypt>abc</ToUserName></xml>",
		"other root":    "<message><Encrypt>abc</Encrypt></message>",
		"bad entity":    "<xml><Encrypt>&bogus;</Encrypt></xml>",
		"bad cdata":     "<xml><Encrypt><![CDATA[abc</Encrypt></xml>",
		"nul character": "<xml><Encrypt>\x00</Encrypt></xml>",
	} {
		_, err := ParseEnvelope([]byte(body))
		if !errors.Is(err, ErrMalformedXML) {
			t.Errorf("%s: ParseEnvelope error = %v, want ErrMalformedXML", name, err)
		}
	}
}

func TestOpenOfficialVector(t *testing.T) {
	for _, mode := range []Mode{Safe, Compatible} {
		c := mustNew(t, mode, testToken, testKey, testID)
		m, err := c.Open(vecQuery(), []byte(vecMsgBody))
		if err != nil {
			t.Fatalf("%s: Open: %v", mode, err)
		}
		if string(m.Body) != vecMsgPlain || !m.Encrypted || m.Previous || m.ToUserName != testID ||
			m.Timestamp != vecMsgTS || m.Nonce != vecMsgNonce {
			t.Fatalf("%s: Open = %+v", mode, m)
		}
	}
	// WeCom sends neither signature nor encrypt_type: msg_signature alone
	// marks the message as encrypted.
	c := mustNew(t, Safe, testToken, testKey, testID)
	q := url.Values{"msg_signature": {vecMsgSig}, "timestamp": {vecMsgTS}, "nonce": {vecMsgNonce}}
	if m, err := c.Open(q, []byte(vecMsgBody)); err != nil || string(m.Body) != vecMsgPlain {
		t.Fatalf("Open(WeCom query) = %v", err)
	}
}

func TestOpenModes(t *testing.T) {
	sender := mustNew(t, Safe, testToken, testKey, testID)
	q, encBody, err := sender.SealRequest("gh_123", []byte(plainMsg))
	if err != nil {
		t.Fatal(err)
	}
	// Compatible mode: the plaintext and the encrypted copy side by side.
	compatBody := []byte(strings.Replace(plainMsg, "</xml>", "<Encrypt><![CDATA["+mustEnv(t, encBody).Encrypt+"]]></Encrypt></xml>", 1))
	plainQ := plainQuery(testToken, q.Get("timestamp"), q.Get("nonce"))

	type result struct {
		want      error
		encrypted bool
	}
	for _, tc := range []struct {
		name  string
		query url.Values
		body  []byte
		by    map[Mode]result
	}{
		{"plaintext", plainQ, []byte(plainMsg), map[Mode]result{
			Normal: {nil, false}, Compatible: {nil, false}, Safe: {ErrModeMismatch, false}}},
		{"encrypted", q, encBody, map[Mode]result{
			Normal: {ErrModeMismatch, false}, Compatible: {nil, true}, Safe: {nil, true}}},
		{"compatible body", q, compatBody, map[Mode]result{
			Normal: {ErrModeMismatch, false}, Compatible: {nil, true}, Safe: {nil, true}}},
	} {
		for mode, r := range tc.by {
			key := testKey
			if mode == Normal {
				key = ""
			}
			c := mustNew(t, mode, testToken, key, testID)
			m, err := c.Open(tc.query, tc.body)
			if r.want != nil {
				if !errors.Is(err, r.want) || m != nil {
					t.Errorf("%s in %s mode: Open = %v, %v; want %v", tc.name, mode, m, err, r.want)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s in %s mode: Open: %v", tc.name, mode, err)
				continue
			}
			if string(m.Body) != plainMsg || m.Encrypted != r.encrypted {
				t.Errorf("%s in %s mode: Body %q, Encrypted %v", tc.name, mode, m.Body, m.Encrypted)
			}
		}
	}
}

func mustEnv(t *testing.T, body []byte) Envelope {
	t.Helper()
	env, err := ParseEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestOpenErrors(t *testing.T) {
	safe := mustNew(t, Safe, testToken, testKey, testID)
	with := func(k, v string) url.Values {
		q := vecQuery()
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	wrongID := mustNew(t, Safe, testToken, testKey, "wxSomeoneElse")
	notB64 := "<xml><Encrypt>***</Encrypt></xml>"
	for _, tc := range []struct {
		name  string
		c     *Crypto
		query url.Values
		body  string
		want  error
	}{
		{"no msg_signature", safe, url.Values{"encrypt_type": {"aes"}, "timestamp": {vecMsgTS}, "nonce": {vecMsgNonce}}, vecMsgBody, ErrSignature},
		{"wrong msg_signature", safe, with("msg_signature", vecEchoSig), vecMsgBody, ErrSignature},
		{"other nonce", safe, with("nonce", "1"), vecMsgBody, ErrSignature},
		{"body altered", safe, vecQuery(), strings.Replace(vecMsgBody, "RypE", "RypF", 1), ErrSignature},
		{"malformed", safe, vecQuery(), vecMsgBody[:40], ErrMalformedXML},
		{"encrypt_type without Encrypt", mustNew(t, Compatible, testToken, testKey, testID), with("msg_signature", ""), plainMsg, ErrMalformedXML},
		{"wrong receiver", wrongID, vecQuery(), vecMsgBody, ErrReceiverID},
		{"signed garbage", safe, url.Values{"msg_signature": {MsgSignature(testToken, vecMsgTS, "2", "***")}, "timestamp": {vecMsgTS}, "nonce": {"2"}}, notB64, ErrBase64},
		{"plaintext bad signature", mustNew(t, Normal, testToken, "", testID), plainQuery("wrong", "1", "2"), plainMsg, ErrSignature},
		{"plaintext no signature", mustNew(t, Normal, testToken, "", testID), url.Values{"timestamp": {"1"}}, plainMsg, ErrSignature},
		{"stale", mustNew(t, Safe, testToken, testKey, testID, WithMaxSkew(time.Minute)), vecQuery(), vecMsgBody, ErrStaleTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.c.Open(tc.query, []byte(tc.body))
			if !errors.Is(err, tc.want) || m != nil {
				t.Fatalf("Open = %v, %v; want %v", m, err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "wxcrypto: open: ") {
				t.Fatalf("error %q lacks package and operation", err)
			}
		})
	}
}

func TestOpenRequest(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID)
	r := httptest.NewRequest(http.MethodPost, "/wechat?"+vecQuery().Encode(), strings.NewReader(vecMsgBody))
	m, err := c.OpenRequest(r)
	if err != nil || string(m.Body) != vecMsgPlain {
		t.Fatalf("OpenRequest = %v", err)
	}
	big := httptest.NewRequest(http.MethodPost, "/wechat?"+vecQuery().Encode(), bytes.NewReader(make([]byte, MaxBodySize+1)))
	if _, err := c.OpenRequest(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("OpenRequest(big) = %v, want ErrTooLarge", err)
	}
	if _, err := c.OpenRequest(nil); !errors.Is(err, ErrMalformedXML) {
		t.Fatalf("OpenRequest(nil) = %v", err)
	}
	empty := httptest.NewRequest(http.MethodPost, "/wechat", nil)
	empty.Body = nil
	if _, err := c.OpenRequest(empty); !errors.Is(err, ErrMalformedXML) {
		t.Fatalf("OpenRequest(no body) = %v", err)
	}
}

func TestVerifyURL(t *testing.T) {
	// WeCom's published URL check: encrypted echostr.
	encQ := url.Values{"msg_signature": {vecEchoSig}, "timestamp": {vecEchoTS}, "nonce": {vecEchoNonce}, "echostr": {vecEchoStr}}
	for _, mode := range []Mode{Safe, Compatible} {
		c := mustNew(t, mode, testToken, testKey, testID)
		if got, err := c.VerifyURL(encQ); err != nil || got != vecEchoPlain {
			t.Fatalf("%s: VerifyURL(official) = %q, %v", mode, got, err)
		}
		bad := url.Values{"msg_signature": {vecMsgSig}, "timestamp": {vecEchoTS}, "nonce": {vecEchoNonce}, "echostr": {vecEchoStr}}
		if _, err := c.VerifyURL(bad); !errors.Is(err, ErrSignature) {
			t.Fatalf("%s: VerifyURL(bad msg_signature) = %v", mode, err)
		}
	}
	// Official Account: plain signature, echostr returned as is, in every mode.
	for _, mode := range []Mode{Normal, Compatible, Safe} {
		c := mustNew(t, mode, testToken, testKey, testID)
		q := plainQuery(testToken, "1409659589", "263014780")
		q.Set("echostr", "5837397520104627206")
		if got, err := c.VerifyURL(q); err != nil || got != "5837397520104627206" {
			t.Fatalf("%s: VerifyURL(plain) = %q, %v", mode, got, err)
		}
		q.Set("signature", Signature("other", "1409659589", "263014780"))
		got, err := c.VerifyURL(q)
		if !errors.Is(err, ErrSignature) || got != "" {
			t.Fatalf("%s: VerifyURL(bad) = %q, %v", mode, got, err)
		}
		if !strings.HasPrefix(err.Error(), "wxcrypto: verify URL: ") {
			t.Fatalf("error %q lacks package and operation", err)
		}
	}
	// Normal mode ignores msg_signature and wants the plain signature.
	n := mustNew(t, Normal, testToken, "", testID)
	if _, err := n.VerifyURL(encQ); !errors.Is(err, ErrSignature) {
		t.Fatalf("normal VerifyURL(encrypted) = %v", err)
	}
}

func TestSealAndOpenReply(t *testing.T) {
	const now = 1409659813
	c := mustNew(t, Safe, testToken, testKey, testID, WithClock(fixedClock(now)))
	out, err := c.Seal([]byte(chinese))
	if err != nil {
		t.Fatal(err)
	}
	env := mustEnv(t, out)
	if env.TimeStamp != "1409659813" || env.Nonce == "" || env.Encrypt == "" {
		t.Fatalf("Seal envelope = %+v", env)
	}
	if env.MsgSignature != refSign(testToken, env.TimeStamp, env.Nonce, env.Encrypt) {
		t.Fatalf("MsgSignature %s does not sign the envelope", env.MsgSignature)
	}
	if !bytes.Contains(out, []byte("<Encrypt><![CDATA[")) || !bytes.HasPrefix(out, []byte("<xml>")) {
		t.Fatalf("envelope shape: %s", out)
	}
	got, err := c.OpenReply(out)
	if err != nil || string(got) != chinese {
		t.Fatalf("OpenReply = %q, %v", got, err)
	}
	// Tampering is caught.
	tampered := bytes.Replace(out, []byte(env.Nonce), []byte(env.Nonce+"1"), 1)
	if _, err := c.OpenReply(tampered); !errors.Is(err, ErrSignature) {
		t.Fatalf("OpenReply(tampered) = %v", err)
	}
	if _, err := c.OpenReply([]byte("<xml></xml>")); !errors.Is(err, ErrMalformedXML) {
		t.Fatalf("OpenReply(empty) = %v", err)
	}
	// Nonces differ between replies.
	out2, _ := c.Seal([]byte(chinese))
	if mustEnv(t, out2).Nonce == env.Nonce {
		t.Fatal("two replies share a nonce")
	}
	// Normal mode without a key cannot seal.
	if _, err := mustNew(t, Normal, testToken, "", testID).Seal([]byte("x")); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Seal without key = %v", err)
	}
}

func TestReplyFollowsRequest(t *testing.T) {
	c := mustNew(t, Compatible, testToken, testKey, testID)
	plain, err := c.Reply(&Message{Encrypted: false}, []byte(plainMsg))
	if err != nil || string(plain) != plainMsg {
		t.Fatalf("Reply(plaintext) = %q, %v", plain, err)
	}
	if r, err := c.Reply(nil, []byte(plainMsg)); err != nil || string(r) != plainMsg {
		t.Fatalf("Reply(nil) = %q, %v", r, err)
	}
	enc, err := c.Reply(&Message{Encrypted: true}, []byte(plainMsg))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.OpenReply(enc); err != nil || string(got) != plainMsg {
		t.Fatalf("OpenReply(Reply) = %q, %v", got, err)
	}
}

func TestSealRequestNormal(t *testing.T) {
	c := mustNew(t, Normal, testToken, "", testID)
	q, body, err := c.SealRequest("gh_1", []byte(plainMsg))
	if err != nil || string(body) != plainMsg || q.Get("encrypt_type") != "" || q.Get("msg_signature") != "" {
		t.Fatalf("SealRequest(normal) = %v, %q, %v", q, body, err)
	}
	m, err := c.Open(q, body)
	if err != nil || string(m.Body) != plainMsg || m.Encrypted {
		t.Fatalf("Open(SealRequest) = %+v, %v", m, err)
	}
}

// TestRotation walks through a key change in the console: the app is
// deployed with the new pair and the old one as previous, then WeChat
// switches. Nothing is lost on either side of the switch, and each reply
// uses the pair its request came with.
func TestRotation(t *testing.T) {
	wechatOld := mustNew(t, Safe, otherToken, otherKey, testID)
	wechatNew := mustNew(t, Safe, testToken, testKey, testID)
	app := mustNew(t, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey))

	for _, tc := range []struct {
		name     string
		wechat   *Crypto
		previous bool
	}{{"before switch", wechatOld, true}, {"after switch", wechatNew, false}} {
		q, body, err := tc.wechat.SealRequest("gh_1", []byte(chinese))
		if err != nil {
			t.Fatal(err)
		}
		m, err := app.Open(q, body)
		if err != nil {
			t.Fatalf("%s: Open: %v", tc.name, err)
		}
		if string(m.Body) != chinese || m.Previous != tc.previous {
			t.Fatalf("%s: Open = %q, Previous %v", tc.name, m.Body, m.Previous)
		}
		reply, err := app.Reply(m, []byte("收到"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tc.wechat.OpenReply(reply); err != nil || string(got) != "收到" {
			t.Fatalf("%s: WeChat cannot read the reply: %q, %v", tc.name, got, err)
		}
		// URL verification works under both pairs too.
		vq, _, _ := tc.wechat.SealRequest("", nil)
		vq.Set("echostr", "42")
		vq.Del("msg_signature")
		if got, err := app.VerifyURL(vq); err != nil || got != "42" {
			t.Fatalf("%s: VerifyURL = %q, %v", tc.name, got, err)
		}
	}

	// Only the key rotated: the token is shared, so both pairs match the
	// signature and the right key is found by trying.
	keyOnly := mustNew(t, Safe, testToken, testKey, testID, WithPrevious("", otherKey))
	oldKey := mustNew(t, Safe, testToken, otherKey, testID)
	q, body, _ := oldKey.SealRequest("gh_1", []byte(chinese))
	m, err := keyOnly.Open(q, body)
	if err != nil || string(m.Body) != chinese || !m.Previous {
		t.Fatalf("key-only rotation: %+v, %v", m, err)
	}
	reply, _ := keyOnly.Reply(m, []byte("ok"))
	if got, err := oldKey.OpenReply(reply); err != nil || string(got) != "ok" {
		t.Fatalf("key-only rotation reply: %q, %v", got, err)
	}

	// Without WithPrevious the old pair is refused.
	q, body, _ = wechatOld.SealRequest("gh_1", []byte(chinese))
	if _, err := wechatNew.Open(q, body); !errors.Is(err, ErrSignature) {
		t.Fatalf("old pair without WithPrevious: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID)
	done := make(chan error)
	for range 8 {
		go func() {
			for range 50 {
				q, body, err := c.SealRequest("gh", []byte(chinese))
				if err == nil {
					var m *Message
					if m, err = c.Open(q, body); err == nil && string(m.Body) != chinese {
						err = errors.New("wrong body")
					}
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// The reply is well-formed XML that encoding/xml reads back field by field.
func TestSealXMLShape(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID, WithClock(fixedClock(1)), WithRand(bytes.NewReader(make([]byte, 100))))
	out, err := c.Seal([]byte("<xml/>"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		XMLName  xml.Name
		Elements []struct {
			XMLName xml.Name
			Text    string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := xml.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range v.Elements {
		names = append(names, e.XMLName.Local+"="+map[bool]string{true: e.Text}[e.XMLName.Local == "TimeStamp"])
	}
	if v.XMLName.Local != "xml" || strings.Join(names, ",") != "Encrypt=,MsgSignature=,TimeStamp=1,Nonce=" {
		t.Fatalf("reply = %s", out)
	}
	if !strings.Contains(string(out), "<Nonce><![CDATA[0]]></Nonce>") {
		t.Fatalf("nonce from zero random bytes: %s", out)
	}
}

// No error, whatever went wrong, contains the token or the key.
func TestErrorsDoNotRevealSecrets(t *testing.T) {
	const tok, prevTok = "tokenSecret123", "prevTokenSecret9"
	c := mustNew(t, Safe, tok, testKey, testID, WithPrevious(prevTok, otherKey), WithMaxSkew(time.Minute))
	var errs []error
	collect := func(err error) {
		if err == nil {
			t.Fatal("expected an error")
		}
		errs = append(errs, err)
	}
	_, err := c.Decrypt(rawEncrypt(t, testKey, pkcs7(frame(5, "hello", "wxOther"))))
	collect(err)
	_, err = c.Decrypt("!!")
	collect(err)
	collect(c.VerifySignature("x", "1", "2"))
	collect(c.VerifyMsgSignature(Signature(tok, "1", "2"), "1", "2", "e"))
	_, err = c.Open(vecQuery(), []byte(vecMsgBody))
	collect(err)
	_, err = c.Open(plainQuery(tok, "1", "2"), []byte(plainMsg))
	collect(err)
	_, err = c.VerifyURL(plainQuery(tok, "1", "2"))
	collect(err)
	_, err = New(Safe, tok, testKey[:40]+"###", testID)
	collect(err)
	_, err = New(Safe, tok, testKey, testID, WithPrevious(prevTok, otherKey[:42]))
	collect(err)
	for _, err := range errs {
		for _, secret := range []string{tok, prevTok, testKey, otherKey, testKey[:40], otherKey[:42]} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q reveals a secret", err)
			}
		}
	}
}
