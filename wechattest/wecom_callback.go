package wechattest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// CallbackURLCheck builds the request WeCom sends when a callback URL is
// saved in its console, for an app whose callback settings are token,
// encodingAESKey and corpID: the query (msg_signature, timestamp, nonce,
// echostr) of the GET, and wantEcho, the plaintext a correct server must
// answer with as its whole body. Send it as GET yourURL?query.Encode().
//
// The echostr is a random 19-digit decimal string, as WeCom's are,
// encrypted as WeCom encrypts messages (AES-256-CBC, IV = key[:16], 16
// random bytes, the 4-byte big-endian length, the text, the CorpID, PKCS#7
// padding to 32 bytes, base64); msg_signature is sha1 of the sorted token,
// timestamp, nonce and encrypted echostr; the timestamp is the fake's
// clock (WithWeComClock), so a server sharing the clock sees a fresh
// request. The computation is this package's own, independent of wxcrypto,
// so that it checks wxcrypto rather than mirrors it.
//
// The error says what is wrong with the arguments (an empty token or
// corpID, a key that is not 43 characters of base64) and never quotes the
// token or the key.
func (w *WeCom) CallbackURLCheck(token, encodingAESKey, corpID string) (query url.Values, wantEcho string, err error) {
	if token == "" {
		return nil, "", errors.New("wechattest: callback URL check: empty token")
	}
	if corpID == "" {
		return nil, "", errors.New("wechattest: callback URL check: empty CorpID")
	}
	key, err := weComKey(encodingAESKey)
	if err != nil {
		return nil, "", fmt.Errorf("wechattest: callback URL check: %w", err)
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(8e18)) // never fails (crypto/rand); +1e18 stays 19 digits in an int64
	wantEcho = strconv.FormatInt(n.Int64()+1e18, 10)
	echostr := weComEncrypt(key, []byte(wantEcho), corpID)
	ts := strconv.FormatInt(w.cfg.now().Unix(), 10)
	nonce, _ := rand.Int(rand.Reader, big.NewInt(1e10))
	nonceStr := nonce.String()
	query = url.Values{
		"msg_signature": {weComSign(token, ts, nonceStr, echostr)},
		"timestamp":     {ts},
		"nonce":         {nonceStr},
		"echostr":       {echostr},
	}
	return query, wantEcho, nil
}

// weComKey decodes an EncodingAESKey: 43 characters, base64 of 32 bytes
// once "=" is appended (leniently, as WeCom's keys often carry nonzero
// trailing bits).
func weComKey(encodingAESKey string) ([]byte, error) {
	if len(encodingAESKey) != 43 {
		return nil, fmt.Errorf("EncodingAESKey is %d characters, want 43", len(encodingAESKey))
	}
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("EncodingAESKey is not base64 of 32 bytes")
	}
	return key, nil
}

// weComEncrypt encrypts msg for receiver the way WeCom does.
func weComEncrypt(key, msg []byte, receiver string) string {
	plain := make([]byte, 20, 20+len(msg)+len(receiver)+32)
	_, _ = rand.Read(plain[:16])
	binary.BigEndian.PutUint32(plain[16:20], uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, receiver...)
	pad := 32 - len(plain)%32
	for range pad {
		plain = append(plain, byte(pad))
	}
	block, _ := aes.NewCipher(key) // 32 bytes: cannot fail
	cipher.NewCBCEncrypter(block, key[:16]).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain)
}

// weComSign is sha1 of the sorted, concatenated parts, in lowercase hex.
func weComSign(parts ...string) string {
	p := slices.Clone(parts)
	slices.Sort(p)
	sum := sha1.Sum([]byte(strings.Join(p, "")))
	return hex.EncodeToString(sum[:])
}

// CallbackMessage builds a message as WeCom pushes it to an app's callback
// URL: the query (msg_signature, timestamp, nonce) and the XML body of the
// POST, <xml><ToUserName>corpID</ToUserName><AgentID>agentID</AgentID>
// <Encrypt>...</Encrypt></xml>, with msg encrypted for corpID and signed
// over the Encrypt text. msg is the plaintext XML the server should read
// (a text message or an event). The timestamp is the fake's clock. Errors
// are CallbackURLCheck's.
func (w *WeCom) CallbackMessage(token, encodingAESKey, corpID string, agentID int64, msg []byte) (query url.Values, body []byte, err error) {
	if token == "" {
		return nil, nil, errors.New("wechattest: callback message: empty token")
	}
	if corpID == "" {
		return nil, nil, errors.New("wechattest: callback message: empty CorpID")
	}
	key, err := weComKey(encodingAESKey)
	if err != nil {
		return nil, nil, fmt.Errorf("wechattest: callback message: %w", err)
	}
	enc := weComEncrypt(key, msg, corpID)
	ts := strconv.FormatInt(w.cfg.now().Unix(), 10)
	nonce, _ := rand.Int(rand.Reader, big.NewInt(1e10))
	body, err = xml.Marshal(weComPush{ToUserName: cdataText{corpID}, AgentID: cdataText{strconv.FormatInt(agentID, 10)}, Encrypt: cdataText{enc}})
	if err != nil {
		return nil, nil, fmt.Errorf("wechattest: callback message: %w", err)
	}
	query = url.Values{
		"msg_signature": {weComSign(token, ts, nonce.String(), enc)},
		"timestamp":     {ts},
		"nonce":         {nonce.String()},
	}
	return query, body, nil
}

type cdataText struct {
	Text string `xml:",cdata"`
}

// weComPush is the envelope of a pushed WeCom message.
type weComPush struct {
	XMLName    xml.Name  `xml:"xml"`
	ToUserName cdataText `xml:"ToUserName"`
	AgentID    cdataText `xml:"AgentID"`
	Encrypt    cdataText `xml:"Encrypt"`
}
