package interop

import (
	"bytes"
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/officialaccount"
	offconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

const (
	token  = "QDG6eK"
	key    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	appID  = "wx5823bf96d3bd56c7"
	key2   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	appID2 = "wxb11529c136998cb6"
)

// messages covers Chinese text (byte length ≠ character count), every
// length around the 32-byte padding block, and large bodies.
func messages() map[string][]byte {
	m := map[string][]byte{
		"chinese": []byte("<xml><Content><![CDATA[你好，世界！测试一下中文的情况，消息长度是按字节来算的]]></Content></xml>"),
		"emoji":   []byte("<xml><Content><![CDATA[👍🏽 ok]]></Content></xml>"),
		"64KiB":   bytes.Repeat([]byte("微信消息"), 64<<10/12),
		"binary":  {0, 0xff, 0x10, 0x20},
	}
	for n := 1; n <= 70; n++ {
		m["len"+strconv.Itoa(n)] = bytes.Repeat([]byte{'a' + byte(n%26)}, n)
	}
	return m
}

func mustNew(t testing.TB, mode wxcrypto.Mode, tok, k, id string) *wxcrypto.Crypto {
	t.Helper()
	c, err := wxcrypto.New(mode, tok, k, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOursDecryptsWithTheirs(t *testing.T) {
	for _, acct := range []struct{ key, id string }{{key, appID}, {key2, appID2}} {
		c := mustNew(t, wxcrypto.Safe, token, acct.key, acct.id)
		for name, msg := range messages() {
			enc, err := c.Encrypt(msg)
			if err != nil {
				t.Fatal(err)
			}
			_, got, err := util.DecryptMsg(acct.id, enc, acct.key)
			if err != nil {
				t.Fatalf("%s: silenceper cannot decrypt ours: %v", name, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("%s: silenceper read %q, want %q", name, got, msg)
			}
		}
	}
}

func TestTheirsDecryptsWithOurs(t *testing.T) {
	for _, acct := range []struct{ key, id string }{{key, appID}, {key2, appID2}} {
		c := mustNew(t, wxcrypto.Safe, token, acct.key, acct.id)
		for name, msg := range messages() {
			random := make([]byte, 16)
			rand.Read(random)
			enc, err := util.EncryptMsg(random, msg, acct.id, acct.key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Decrypt(string(enc))
			if err != nil {
				t.Fatalf("%s: we cannot decrypt silenceper's: %v", name, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("%s: we read %q, want %q", name, got, msg)
			}
		}
	}
}

// Both refuse a ciphertext for another AppID: the check is the same.
func TestReceiverIDCheckAgrees(t *testing.T) {
	c := mustNew(t, wxcrypto.Safe, token, key, appID)
	enc, _ := c.Encrypt([]byte("hello"))
	if _, _, err := util.DecryptMsg(appID2, enc, key); err == nil {
		t.Fatal("silenceper accepted a message for another AppID")
	}
	theirs, _ := util.EncryptMsg(make([]byte, 16), []byte("hello"), appID2, key)
	if _, err := c.Decrypt(string(theirs)); err == nil {
		t.Fatal("we accepted a message for another AppID")
	}
}

func TestSignaturesAgree(t *testing.T) {
	for _, p := range [][4]string{
		{token, "1409659813", "1372623149", "RypEvHKD8QQK"},
		{"a", "b", "c", "d"},
		{"zz", "1", "", "长"},
	} {
		if ours, theirs := wxcrypto.MsgSignature(p[0], p[1], p[2], p[3]), util.Signature(p[0], p[1], p[2], p[3]); ours != theirs {
			t.Errorf("MsgSignature%q = %s, silenceper %s", p, ours, theirs)
		}
		if ours, theirs := wxcrypto.Signature(p[0], p[1], p[2]), util.Signature(p[0], p[1], p[2]); ours != theirs {
			t.Errorf("Signature%q = %s, silenceper %s", p[:3], ours, theirs)
		}
	}
}

// A whole exchange through silenceper's Official Account server: we play
// WeChat (SealRequest), their server verifies, decrypts, answers and
// encrypts, and we open the answer (OpenReply).
func TestWholeMessageThroughTheirServer(t *testing.T) {
	wechat := mustNew(t, wxcrypto.Safe, token, key, appID)
	oa := officialaccount.NewOfficialAccount(&offconfig.Config{
		AppID: appID, AppSecret: "unused", Token: token, EncodingAESKey: key, Cache: cache.NewMemory(),
	})
	var got string
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv := oa.GetServer(r, w)
		srv.SetMessageHandler(func(m *message.MixMessage) *message.Reply {
			got = m.Content
			return &message.Reply{MsgType: message.MsgTypeText, MsgData: message.NewText("收到：" + m.Content)}
		})
		if err := srv.Serve(); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if err := srv.Send(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})

	in := "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>" +
		"<CreateTime>1409659813</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content><MsgId>1</MsgId></xml>"
	q, body, err := wechat.SealRequest("gh_1", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("their server: %d %s", rec.Code, rec.Body)
	}
	if got != "你好" {
		t.Fatalf("their server read %q", got)
	}
	reply, err := wechat.OpenReply(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("OpenReply(their answer): %v\n%s", err, rec.Body)
	}
	var text message.Text
	if err := xml.Unmarshal(reply, &text); err != nil || string(text.Content) != "收到：你好" {
		t.Fatalf("their answer = %q, %v", reply, err)
	}
}

// The other way: a request built with silenceper's primitives, the way
// their users (and WeChat) build it, is opened by us, and our reply is read
// with their primitives.
func TestWholeMessageTheirRequestOurServer(t *testing.T) {
	app := mustNew(t, wxcrypto.Safe, token, key, appID)
	in := []byte("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Content><![CDATA[中文消息]]></Content></xml>")
	random := make([]byte, 16)
	rand.Read(random)
	enc, err := util.EncryptMsg(random, in, appID, key)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh timestamp, as WeChat sends: an old one is a replay.
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), "1372623149"
	body, _ := xml.Marshal(message.EncryptedXMLMsg{ToUserName: "gh_1", EncryptedMsg: string(enc)})
	q := url.Values{
		"signature": {util.Signature(token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce},
		"encrypt_type": {"aes"}, "msg_signature": {util.Signature(token, ts, nonce, string(enc))},
	}
	m, err := app.Open(q, body)
	if err != nil {
		t.Fatalf("Open(their request): %v", err)
	}
	if !bytes.Equal(m.Body, in) || !m.Encrypted {
		t.Fatalf("Open = %q", m.Body)
	}

	out, err := app.Reply(m, []byte("<xml><Content><![CDATA[回复]]></Content></xml>"))
	if err != nil {
		t.Fatal(err)
	}
	var env message.ResponseEncryptedXMLMsg
	if err := xml.Unmarshal(out, &env); err != nil {
		t.Fatal(err)
	}
	if sig := util.Signature(token, strconv.FormatInt(env.Timestamp, 10), env.Nonce, env.EncryptedMsg); sig != env.MsgSignature {
		t.Fatalf("silenceper computes MsgSignature %s, reply carries %s", sig, env.MsgSignature)
	}
	_, reply, err := util.DecryptMsg(appID, env.EncryptedMsg, key)
	if err != nil || !strings.Contains(string(reply), "回复") {
		t.Fatalf("silenceper reads our reply as %q, %v", reply, err)
	}
}

func ExampleMsgSignature() {
	fmt.Println(wxcrypto.MsgSignature(token, "1409659813", "1372623149", "x") == util.Signature(token, "1409659813", "1372623149", "x"))
	// Output: true
}
