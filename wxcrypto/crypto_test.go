package wxcrypto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
	}{
		{"normal", Normal}, {"compatible", Compatible}, {"safe", Safe},
		{" Safe ", Safe}, {"NORMAL", Normal},
	} {
		got, err := ParseMode(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "aes", "secure", "safe mode"} {
		_, err := ParseMode(bad)
		if !errors.Is(err, ErrUnknownMode) {
			t.Errorf("ParseMode(%q) error = %v, want ErrUnknownMode", bad, err)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseMode(%q) error %q does not name the value", bad, err)
		}
	}
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		want error
	}{
		{"official sample", testKey, nil},
		{"nonzero trailing bits", otherKey, nil},
		{"empty", "", ErrKeyLength},
		{"42 chars", testKey[:42], ErrKeyLength},
		{"44 chars", testKey + "A", ErrKeyLength},
		{"with padding", testKey[:42] + "=", ErrKeyEncoding},
		{"bad character", "!" + testKey[1:], ErrKeyEncoding},
		{"url alphabet", "-" + testKey[1:], ErrKeyEncoding},
		{"space inside", testKey[:20] + " " + testKey[21:], ErrKeyEncoding},
		{"multibyte", "é" + testKey[2:], ErrKeyEncoding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateKey(tc.key)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ValidateKey: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("ValidateKey error = %v, want %v", err, tc.want)
			}
			if other := map[error]error{ErrKeyLength: ErrKeyEncoding, ErrKeyEncoding: ErrKeyLength}[tc.want]; errors.Is(err, other) {
				t.Fatalf("error %v matches both key sentinels", err)
			}
			if len(tc.key) > 8 && strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q reveals the key", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name             string
		mode             Mode
		token, key, id   string
		opts             []Option
		want             error
		mentionsPrevious bool
	}{
		{name: "unknown mode", mode: "aes", token: testToken, key: testKey, want: ErrUnknownMode},
		{name: "empty mode", mode: "", token: testToken, key: testKey, want: ErrUnknownMode},
		{name: "no token", mode: Normal, want: ErrNoToken},
		{name: "safe without key", mode: Safe, token: testToken, want: ErrNoKey},
		{name: "compatible without key", mode: Compatible, token: testToken, want: ErrNoKey},
		{name: "short key", mode: Safe, token: testToken, key: "abc", want: ErrKeyLength},
		{name: "bad key in normal mode", mode: Normal, token: testToken, key: strings.Repeat("#", 43), want: ErrKeyEncoding},
		{name: "bad previous key", mode: Safe, token: testToken, key: testKey,
			opts: []Option{WithPrevious("old", "short")}, want: ErrKeyLength, mentionsPrevious: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.mode, tc.token, tc.key, tc.id, tc.opts...)
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("New = %v, %v; want nil, %v", c, err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "wxcrypto: new: ") {
				t.Errorf("error %q lacks package and operation", err)
			}
			if tc.mentionsPrevious != strings.Contains(err.Error(), "previous") {
				t.Errorf("error %q: mentions previous = %v, want %v", err, !tc.mentionsPrevious, tc.mentionsPrevious)
			}
		})
	}

	// Normal mode runs without a key, but cannot encrypt.
	c := mustNew(t, Normal, testToken, "", testID)
	if _, err := c.Encrypt([]byte("x")); !errors.Is(err, ErrNoKey) {
		t.Errorf("Encrypt without key: %v, want ErrNoKey", err)
	}
	if _, err := c.Decrypt(vecMsgEncrypt); !errors.Is(err, ErrNoKey) {
		t.Errorf("Decrypt without key: %v, want ErrNoKey", err)
	}
	if c.Mode() != Normal || c.ReceiverID() != testID {
		t.Errorf("Mode, ReceiverID = %q, %q", c.Mode(), c.ReceiverID())
	}
}

func TestStringRedactsSecrets(t *testing.T) {
	const token, prevToken = "sup3rSecretToken", "oldSecretToken99"
	c := mustNew(t, Safe, token, testKey, testID, WithPrevious(prevToken, otherKey))
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("crypto", "c", c)
	outputs := map[string]string{
		"String": c.String(),
		"%v":     fmt.Sprintf("%v", c),
		"%+v":    fmt.Sprintf("%+v", c),
		"%#v":    fmt.Sprintf("%#v", c),
		"%s":     fmt.Sprintf("%s", c),
		"slog":   logged.String(),
	}
	for name, out := range outputs {
		for _, secret := range []string{token, prevToken, testKey, otherKey, testKey[:12], otherKey[:12]} {
			if strings.Contains(out, secret) {
				t.Errorf("%s output %q reveals a secret", name, out)
			}
		}
		if !strings.Contains(out, testID) || !strings.Contains(out, "safe") {
			t.Errorf("%s output %q lacks mode or receiver ID", name, out)
		}
	}
	if !strings.Contains(c.String(), "<redacted 16 bytes>") {
		t.Errorf("String %q does not show the redacted token length", c.String())
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := map[string][]byte{
		"empty":   {},
		"one":     []byte("a"),
		"chinese": []byte(chinese),
		"binary":  {0, 1, 2, 0xff, 0xfe},
		"64KiB":   bytes.Repeat([]byte("微信"), 64<<10/6),
		"vector":  []byte(vecMsgPlain),
	}
	// Every length around the 32-byte padding block, with ID lengths that
	// move the boundary.
	for n := range 70 {
		msgs[fmt.Sprintf("len%02d", n)] = bytes.Repeat([]byte{'x'}, n)
	}
	for _, id := range []string{testID, "", "ww1234567890abcdef", "suite" + strings.Repeat("z", 27)} {
		c := mustNew(t, Safe, testToken, testKey, id)
		for name, msg := range msgs {
			enc, err := c.Encrypt(msg)
			if err != nil {
				t.Fatalf("%s/%q: Encrypt: %v", name, id, err)
			}
			got, err := c.Decrypt(enc)
			if err != nil {
				t.Fatalf("%s/%q: Decrypt: %v", name, id, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("%s/%q: round trip = %q, want %q", name, id, got, msg)
			}
			// The layout, checked with an independent decryption.
			raw := rawDecrypt(t, testKey, enc)
			if len(raw)%32 != 0 {
				t.Fatalf("%s: ciphertext of %d bytes is not padded to 32", name, len(raw))
			}
			pad := int(raw[len(raw)-1])
			if pad < 1 || pad > 32 || !bytes.Equal(raw[len(raw)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
				t.Fatalf("%s: bad padding %d", name, pad)
			}
			if n := binary.BigEndian.Uint32(raw[16:20]); int(n) != len(msg) {
				t.Fatalf("%s: length field %d, want %d bytes", name, n, len(msg))
			}
			if tail := string(raw[20+len(msg) : len(raw)-pad]); tail != id {
				t.Fatalf("%s: receiver ID %q, want %q", name, tail, id)
			}
		}
	}
}

// TestChineseLengthCountsBytes pins the seed's bug: the length field must
// count UTF-8 bytes, not characters.
func TestChineseLengthCountsBytes(t *testing.T) {
	if utf8.RuneCountInString(chinese) == len(chinese) {
		t.Fatal("test message must have multibyte characters")
	}
	c := mustNew(t, Safe, testToken, testKey, testID)
	enc, err := c.Encrypt([]byte(chinese))
	if err != nil {
		t.Fatal(err)
	}
	raw := rawDecrypt(t, testKey, enc)
	if n := binary.BigEndian.Uint32(raw[16:20]); int(n) != len(chinese) {
		t.Fatalf("length field = %d, want %d bytes (%d characters)", n, len(chinese), utf8.RuneCountInString(chinese))
	}
	// A ciphertext written the seed's way (length in characters) is
	// refused, not misread.
	wrong := rawEncrypt(t, testKey, pkcs7(frame(uint32(utf8.RuneCountInString(chinese)), chinese, testID)))
	if _, err := c.Decrypt(wrong); !errors.Is(err, ErrReceiverID) {
		t.Fatalf("character-counted length: %v, want ErrReceiverID", err)
	}
}

func TestOfficialVectorDecrypts(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID)
	got, err := c.Decrypt(vecMsgEncrypt)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != vecMsgPlain {
		t.Fatalf("Decrypt(official vector) = %q", got)
	}
	echo, err := c.Decrypt(vecEchoStr)
	if err != nil || string(echo) != vecEchoPlain {
		t.Fatalf("Decrypt(official echostr) = %q, %v", echo, err)
	}
}

func TestDecryptErrors(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID)
	badPadByte := pkcs7(frame(5, "hello", testID))
	badPadByte[len(badPadByte)-2] ^= 1
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"not base64", "@@@@", ErrBase64},
		{"truncated base64", vecMsgEncrypt[:len(vecMsgEncrypt)-3], ErrBase64},
		{"url alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(vecMsgEncrypt), ErrBase64},
		{"empty", "", ErrBlockSize},
		{"15 bytes", "AAAAAAAAAAAAAAAAAAAA", ErrBlockSize},
		{"17 bytes", "AAAAAAAAAAAAAAAAAAAAAAA=", ErrBlockSize},
		{"pad zero", rawEncrypt(t, testKey, zeroPad(frame(5, "hello", testID))), ErrPadding},
		{"pad 33", rawEncrypt(t, testKey, append(pkcs7(frame(5, "hello", testID))[:32], bytes.Repeat([]byte{33}, 32)...)), ErrPadding},
		{"pad bytes differ", rawEncrypt(t, testKey, badPadByte), ErrPadding},
		{"wrong key", rawEncrypt(t, otherKey, pkcs7(frame(5, "hello", testID))), ErrPadding},
		{"shorter than header", rawEncrypt(t, testKey, pkcs7(bytes.Repeat([]byte{1}, 19))), ErrLength},
		{"length past end", rawEncrypt(t, testKey, pkcs7(frame(1000, "hello", testID))), ErrLength},
		{"length max uint32", rawEncrypt(t, testKey, pkcs7(frame(0xffffffff, "hello", testID))), ErrLength},
		{"wrong receiver", rawEncrypt(t, testKey, pkcs7(frame(5, "hello", "wxOTHER"))), ErrReceiverID},
		{"receiver prefix only", rawEncrypt(t, testKey, pkcs7(frame(5, "hello", testID[:5]))), ErrReceiverID},
		{"length too short", rawEncrypt(t, testKey, pkcs7(frame(4, "hello", testID))), ErrReceiverID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Decrypt(tc.in)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Decrypt = %q, %v; want %v", got, err, tc.want)
			}
			for _, other := range decryptSentinels {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("error %v also matches %v", err, other)
				}
			}
			if !strings.HasPrefix(err.Error(), "wxcrypto: decrypt: ") {
				t.Fatalf("error %q lacks package and operation", err)
			}
		})
	}
}

func TestEncryptUsesRandom(t *testing.T) {
	seq := make([]byte, 64)
	for i := range seq {
		seq[i] = byte(i)
	}
	fixed := func() io.Reader { return bytes.NewReader(seq) }
	a := mustNew(t, Safe, testToken, testKey, testID, WithRand(fixed()))
	b := mustNew(t, Safe, testToken, testKey, testID, WithRand(fixed()))
	ea, _ := a.Encrypt([]byte(chinese))
	eb, _ := b.Encrypt([]byte(chinese))
	if ea != eb {
		t.Fatal("same random bytes gave different ciphertexts")
	}
	if raw := rawDecrypt(t, testKey, ea); !bytes.Equal(raw[:16], seq[:16]) {
		t.Fatalf("random prefix = %x, want the reader's bytes", raw[:16])
	}
	ea2, _ := a.Encrypt([]byte(chinese))
	if ea2 == ea {
		t.Fatal("next random bytes gave the same ciphertext")
	}
	// Reused CBC modes start again from the IV: the first block of each
	// ciphertext decrypts to that message's own random bytes.
	for i := 2; i < 4; i++ {
		e, _ := a.Encrypt([]byte(chinese))
		if raw := rawDecrypt(t, testKey, e); !bytes.Equal(raw[:16], seq[16*i:16*i+16]) {
			t.Fatalf("encryption %d: random prefix = %x, want %x", i, raw[:16], seq[16*i:16*i+16])
		}
	}

	// Default randomness: two encryptions differ.
	c := mustNew(t, Safe, testToken, testKey, testID)
	x, _ := c.Encrypt([]byte("same"))
	y, _ := c.Encrypt([]byte("same"))
	if x == y {
		t.Fatal("crypto/rand gave two equal ciphertexts")
	}

	// A failing reader is reported, not ignored.
	broken := mustNew(t, Safe, testToken, testKey, testID, WithRand(bytes.NewReader(make([]byte, 10))))
	if _, err := broken.Encrypt([]byte("x")); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Encrypt with short random reader: %v", err)
	}
}

func TestAppendEncrypt(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID)
	prefix := []byte("<Encrypt>")
	buf := make([]byte, 0, 4096)
	buf = append(buf, prefix...)
	out, err := c.AppendEncrypt(buf, []byte(chinese))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, prefix) {
		t.Fatalf("AppendEncrypt lost the prefix: %q", out)
	}
	if &out[0] != &buf[0] {
		t.Error("AppendEncrypt reallocated although dst had room")
	}
	got, err := c.Decrypt(string(out[len(prefix):]))
	if err != nil || string(got) != chinese {
		t.Fatalf("Decrypt(AppendEncrypt) = %q, %v", got, err)
	}
	// Without room it still works.
	out, err = c.AppendEncrypt(prefix, []byte("x"))
	if err != nil || !bytes.HasPrefix(out, prefix) {
		t.Fatalf("AppendEncrypt(no room) = %q, %v", out, err)
	}
}

func TestDecryptWithPreviousKey(t *testing.T) {
	old := mustNew(t, Safe, otherToken, otherKey, testID)
	rotated := mustNew(t, Safe, testToken, testKey, testID, WithPrevious(otherToken, otherKey))
	fresh := mustNew(t, Safe, testToken, testKey, testID)

	enc, _ := old.Encrypt([]byte(chinese))
	if got, err := rotated.Decrypt(enc); err != nil || string(got) != chinese {
		t.Fatalf("rotated Decrypt(old ciphertext) = %q, %v", got, err)
	}
	if _, err := fresh.Decrypt(enc); !isAny(err, decryptSentinels...) {
		t.Fatalf("fresh Decrypt(old ciphertext) = %v, want a decryption error", err)
	}
	enc, _ = rotated.Encrypt([]byte(chinese))
	if got, err := fresh.Decrypt(enc); err != nil || string(got) != chinese {
		t.Fatalf("rotated encrypts with the current key: %q, %v", got, err)
	}
}
