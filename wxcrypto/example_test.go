package wxcrypto_test

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

// The account of WeCom's published sample; its values come with official
// test vectors.
const (
	token          = "QDG6eK"
	encodingAESKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	corpID         = "wx5823bf96d3bd56c7"
)

// A wx.config signature, with the example of WeChat's JS-SDK documentation.
func ExampleSignJSSDK() {
	sig := wxcrypto.SignJSSDK(
		"sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
		"Wm3WZYTPz0wzccnW",
		1414587457,
		"http://mp.weixin.qq.com?params=value#fragment-is-not-signed",
	)
	fmt.Println(sig)
	// Output: 0f9de62fce790f9a083d5c99e95740ceb90c27ed
}

// What a page needs for wx.config, as JSON.
func ExampleNewJSSDKConfig() {
	cfg := wxcrypto.NewJSSDKConfig("wx5823bf96d3bd56c7",
		"sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
		"http://mp.weixin.qq.com?params=value", 1414587457, "Wm3WZYTPz0wzccnW")
	b, _ := json.Marshal(cfg)
	fmt.Println(string(b))
	// Output: {"appId":"wx5823bf96d3bd56c7","timestamp":1414587457,"nonceStr":"Wm3WZYTPz0wzccnW","signature":"0f9de62fce790f9a083d5c99e95740ceb90c27ed"}
}

// The URL check of WeCom's published sample: the echostr comes encrypted.
func ExampleCrypto_VerifyURL() {
	// The sample was signed in 2014: judge it by the clock of then. A
	// server uses the real clock, and would refuse so old a request as a
	// replay (ErrStaleTimestamp).
	then := func() time.Time { return time.Unix(1409659589, 0) }
	c, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID, wxcrypto.WithClock(then))
	if err != nil {
		log.Fatal(err)
	}
	echo, err := c.VerifyURL(url.Values{
		"msg_signature": {"5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"},
		"timestamp":     {"1409659589"},
		"nonce":         {"263014780"},
		"echostr":       {"P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="},
	})
	fmt.Println(echo, err)
	// Output: 1616140317555161061 <nil>
}

// Opening the message of WeCom's published sample.
func ExampleCrypto_Open() {
	// The sample was signed in 2014: see ExampleCrypto_VerifyURL.
	then := func() time.Time { return time.Unix(1409659813, 0) }
	c, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID, wxcrypto.WithClock(then))
	if err != nil {
		log.Fatal(err)
	}
	query := url.Values{
		"msg_signature": {"477715d11cdb4164915debcba66cb864d751f3e6"},
		"timestamp":     {"1409659813"},
		"nonce":         {"1372623149"},
	}
	body := []byte("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>")
	m, err := c.Open(query, body)
	if err != nil {
		log.Fatal(err)
	}
	var msg struct{ MsgType, Content string }
	if err := xml.Unmarshal(m.Body, &msg); err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Encrypted, msg.MsgType, msg.Content)
	// Output: true text hello
}

// A complete server endpoint: the URL check on GET, messages on POST, with
// an encrypted answer when the message came encrypted. A simulated WeChat
// drives it.
func Example_server() {
	c, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID)
	if err != nil {
		log.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			echo, err := c.VerifyURL(r.URL.Query())
			if err != nil {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			io.WriteString(w, echo)
			return
		}
		m, err := c.OpenRequest(r)
		switch {
		case errors.Is(err, wxcrypto.ErrSignature), errors.Is(err, wxcrypto.ErrStaleTimestamp):
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		case err != nil:
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var in struct{ FromUserName, ToUserName, Content string }
		if err := xml.Unmarshal(m.Body, &in); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		answer := fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
			"<CreateTime>0</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[收到：%s]]></Content></xml>",
			in.FromUserName, in.ToUserName, in.Content)
		out, err := c.Reply(m, []byte(answer))
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Write(out)
	})
	srv := httptest.NewServer(handler)
	defer srv.Close()

	// WeChat's side: push a message, read the encrypted answer.
	wechat, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID)
	if err != nil {
		log.Fatal(err)
	}
	query, body, err := wechat.SealRequest("gh_account", []byte(
		"<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>"+
			"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content></xml>"))
	if err != nil {
		log.Fatal(err)
	}
	resp, err := http.Post(srv.URL+"?"+query.Encode(), "text/xml", strings.NewReader(string(body)))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sealed, _ := io.ReadAll(resp.Body)
	reply, err := wechat.OpenReply(sealed)
	if err != nil {
		log.Fatal(err)
	}
	var out struct{ ToUserName, Content string }
	xml.Unmarshal(reply, &out)
	fmt.Println(out.ToUserName, out.Content)

	// A forged request is refused.
	query.Set("msg_signature", strings.Repeat("0", 40))
	resp2, err := http.Post(srv.URL+"?"+query.Encode(), "text/xml", strings.NewReader(string(body)))
	if err != nil {
		log.Fatal(err)
	}
	resp2.Body.Close()
	fmt.Println(resp2.StatusCode)
	// Output:
	// oUser 收到：你好
	// 403
}

// Encrypt and Decrypt alone, with Chinese text: the length field counts
// bytes, so it round-trips.
func ExampleCrypto_Encrypt() {
	c, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID)
	if err != nil {
		log.Fatal(err)
	}
	enc, err := c.Encrypt([]byte("你好，世界"))
	if err != nil {
		log.Fatal(err)
	}
	msg, err := c.Decrypt(enc)
	fmt.Println(string(msg), err)
	// Output: 你好，世界 <nil>
}

// Rotating the key without losing a message: the new pair is current, the
// old one previous, until WeChat uses the new one.
func ExampleWithPrevious() {
	const oldToken, oldKey = "spamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	app, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID,
		wxcrypto.WithPrevious(oldToken, oldKey))
	if err != nil {
		log.Fatal(err)
	}
	// WeChat still uses the old pair.
	wechat, _ := wxcrypto.New(wxcrypto.Safe, oldToken, oldKey, corpID)
	query, body, _ := wechat.SealRequest("gh_account", []byte("<xml><Content>hi</Content></xml>"))
	m, err := app.Open(query, body)
	fmt.Println(string(m.Body), m.Previous, err)
	// Output: <xml><Content>hi</Content></xml> true <nil>
}

// Checking an EncodingAESKey from configuration before using it.
func ExampleValidateKey() {
	for _, key := range []string{encodingAESKey, "too-short", strings.Repeat("!", 43)} {
		err := wxcrypto.ValidateKey(key)
		fmt.Println(err == nil, errors.Is(err, wxcrypto.ErrKeyLength), errors.Is(err, wxcrypto.ErrKeyEncoding))
	}
	// Output:
	// true false false
	// false true false
	// false false true
}

// Parsing the encrypt mode from configuration.
func ExampleParseMode() {
	m, err := wxcrypto.ParseMode("Safe")
	fmt.Println(m, err)
	_, err = wxcrypto.ParseMode("aes")
	fmt.Println(err)
	// Output:
	// safe <nil>
	// wxcrypto: parse mode: unknown encrypt mode "aes" (want normal, compatible or safe)
}

// WeCom's URL check with its own method: the handler of a callback URL
// answers a GET with the decrypted echostr, and nothing else.
func ExampleCrypto_VerifyWeComURL() {
	// The sample was signed in 2014: judge it by the clock of then.
	then := func() time.Time { return time.Unix(1409659589, 0) }
	c, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID, wxcrypto.WithClock(then))
	if err != nil {
		log.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		echo, err := c.VerifyWeComURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
		if err != nil {
			http.Error(w, "forbidden", http.StatusForbidden) // log err: it quotes no secret
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(echo)
	})

	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/wecom?"+url.Values{
		"msg_signature": {"5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"},
		"timestamp":     {"1409659589"},
		"nonce":         {"263014780"},
		"echostr":       {"P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="},
	}.Encode(), nil))
	fmt.Println(rec.Code, rec.Body.String())

	_, err = c.VerifyWeComURL("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "1", "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==")
	fmt.Println(errors.Is(err, wxcrypto.ErrSignature))
	// Output:
	// 200 1616140317555161061
	// true
}
