package wxcrypto

import (
	"bytes"
	"fmt"
	"testing"
)

var benchSizes = []int{1 << 10, 64 << 10}

func benchMsg(n int) []byte {
	// Mixed ASCII and Chinese, as real messages are.
	const unit = "<xml>微信 message</xml>"
	return bytes.Repeat([]byte(unit), n/len(unit)+1)[:n]
}

func BenchmarkEncrypt(b *testing.B) {
	c := mustNew(b, Safe, testToken, testKey, testID)
	for _, n := range benchSizes {
		msg := benchMsg(n)
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Encrypt(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendEncrypt(b *testing.B) {
	c := mustNew(b, Safe, testToken, testKey, testID)
	for _, n := range benchSizes {
		msg := benchMsg(n)
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				var err error
				if buf, err = c.AppendEncrypt(buf[:0], msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	c := mustNew(b, Safe, testToken, testKey, testID)
	for _, n := range benchSizes {
		enc, err := c.Encrypt(benchMsg(n))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Decrypt(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	c := mustNew(b, Safe, testToken, testKey, testID)
	q, body, err := c.SealRequest("gh_1", benchMsg(1<<10))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Open(q, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	c := mustNew(b, Safe, testToken, testKey, testID)
	msg := benchMsg(1 << 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Seal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	c := mustNew(b, Normal, testToken, "", testID)
	sig := Signature(testToken, "1409659589", "263014780")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.VerifySignature(sig, "1409659589", "263014780"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignJSSDK(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		SignJSSDK(docTicket, docNonce, docTimestamp, "http://mp.weixin.qq.com?params=value")
	}
}
