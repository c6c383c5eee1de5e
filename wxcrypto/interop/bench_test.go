package interop

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

// Side by side: wxcrypto and silenceper/wechat/v2 encrypting and
// decrypting the same 1 KiB and 64 KiB messages. Ours draws its 16 random
// bytes from crypto/rand inside Encrypt; theirs is handed them.
//
//	go test -run='^$' -bench=. -benchmem -count=6 ./... | benchstat -col /impl -

var sizes = []int{1 << 10, 64 << 10}

func benchMsg(n int) []byte {
	const unit = "<xml>微信 message</xml>"
	return bytes.Repeat([]byte(unit), n/len(unit)+1)[:n]
}

func BenchmarkEncrypt(b *testing.B) {
	c, err := wxcrypto.New(wxcrypto.Safe, token, key, appID)
	if err != nil {
		b.Fatal(err)
	}
	random := bytes.Repeat([]byte{7}, 16)
	for _, n := range sizes {
		msg := benchMsg(n)
		b.Run(fmt.Sprintf("size=%dKiB/impl=wxcrypto", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Encrypt(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("size=%dKiB/impl=silenceper", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := util.EncryptMsg(random, msg, appID, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	c, err := wxcrypto.New(wxcrypto.Safe, token, key, appID)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range sizes {
		enc, err := c.Encrypt(benchMsg(n))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("size=%dKiB/impl=wxcrypto", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decrypt(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("size=%dKiB/impl=silenceper", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := util.DecryptMsg(appID, enc, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
