package wxcrypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// The account of WeCom's published sample (加解密方案说明): its token, key
// and CorpID come with the official test vectors below.
const (
	testToken = "QDG6eK"
	testKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	testID    = "wx5823bf96d3bd56c7"

	// Another valid key, for rotation tests; its last character has
	// nonzero trailing bits, as WeChat's keys often do.
	otherKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	otherToken = "spamtest"
)

// Official WeCom vectors: URL verification and one pushed message.
const (
	vecEchoSig   = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
	vecEchoTS    = "1409659589"
	vecEchoNonce = "263014780"
	vecEchoStr   = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
	vecEchoPlain = "1616140317555161061"

	vecMsgSig     = "477715d11cdb4164915debcba66cb864d751f3e6"
	vecMsgTS      = "1409659813"
	vecMsgNonce   = "1372623149"
	vecMsgEncrypt = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
	vecMsgBody    = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[" + vecMsgEncrypt + "]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"
	// vecMsgPlain is what the vector decrypts to; its content is "hello".
	vecMsgPlain = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>"
)

// chinese is a message whose byte length (UTF-8) differs from its
// character count: the case the Python seed gets wrong.
const chinese = "<xml><Content><![CDATA[你好，世界！消息长度按字节计算。]]></Content></xml>"

// vecTime lies between the official vectors' timestamps, within the
// replay window of both.
const vecTime = 1409659700

// mustNew returns a Crypto whose clock stands at vecTime, so that the
// official vectors (signed in 2014) are fresh; a WithClock in opts wins.
func mustNew(t testing.TB, mode Mode, token, key, id string, opts ...Option) *Crypto {
	t.Helper()
	c, err := New(mode, token, key, id, append([]Option{WithClock(fixedClock(vecTime))}, opts...)...)
	if err != nil {
		t.Fatalf("New(%s): %v", mode, err)
	}
	return c
}

// aesKey decodes an EncodingAESKey independently of the package.
func aesKey(t testing.TB, encodingKey string) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(encodingKey + "=")
	if err != nil || len(k) != 32 {
		t.Fatalf("bad test key: %v (%d bytes)", err, len(k))
	}
	return k
}

// rawEncrypt CBC-encrypts data (a whole number of AES blocks, no padding
// added) the way WeChat does, and returns base64: a way to build
// ciphertexts of any inner structure, well-formed or not.
func rawEncrypt(t testing.TB, encodingKey string, data []byte) string {
	t.Helper()
	k := aesKey(t, encodingKey)
	b, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(data))
	cipher.NewCBCEncrypter(b, k[:16]).CryptBlocks(out, data)
	return base64.StdEncoding.EncodeToString(out)
}

// rawDecrypt undoes rawEncrypt, leaving the padding in place.
func rawDecrypt(t testing.TB, encodingKey, b64 string) []byte {
	t.Helper()
	k := aesKey(t, encodingKey)
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct)%16 != 0 {
		t.Fatalf("ciphertext of %d bytes", len(ct))
	}
	cipher.NewCBCDecrypter(b, k[:16]).CryptBlocks(ct, ct)
	return ct
}

// frame builds random(16) + length(4) + msg + id, with the length field
// given explicitly so tests can lie in it.
func frame(length uint32, msg, id string) []byte {
	b := bytes.Repeat([]byte{0x5a}, 16)
	b = binary.BigEndian.AppendUint32(b, length)
	b = append(b, msg...)
	return append(b, id...)
}

// zeroPad fills up the last AES block with zero bytes: invalid PKCS#7.
func zeroPad(b []byte) []byte {
	return append(b, make([]byte, 16-len(b)%16)...)
}

// pkcs7 pads to the 32-byte block.
func pkcs7(b []byte) []byte {
	pad := 32 - len(b)%32
	return append(b, bytes.Repeat([]byte{byte(pad)}, pad)...)
}

func fixedClock(sec int64) func() time.Time {
	return func() time.Time { return time.Unix(sec, 0) }
}

// decryptSentinels are the errors a failed decryption may wrap.
var decryptSentinels = []error{ErrBase64, ErrBlockSize, ErrPadding, ErrLength, ErrReceiverID}

func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
