package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzInvalidateBody feeds arbitrary bodies to the decoder of POST
// /v1/invalidate, behind the same size bound: it answers 400 or 413 with a
// message that quotes nothing of the body, or a kind and a non-empty
// value. Seeds: testdata/fuzz/FuzzInvalidateBody.
func FuzzInvalidateBody(f *testing.F) {
	f.Add([]byte(`{"kind":"access_token","value":"tok"}`))
	f.Add([]byte(`{"value":"tok"}`))
	f.Add([]byte(`{"kind":"wx_card_ticket","value":"t","extra":1}`))
	f.Add([]byte(`{"value":"a"}{"value":"b"}`))
	f.Add([]byte(`{"value":"` + strings.Repeat("x", maxInvalidateBody) + `"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		r := http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(body)), maxInvalidateBody)
		kind, value, status, msg := decodeInvalidate(r)
		switch status {
		case 0:
			if _, known := credKindByName(kind.String()); value == "" || !known {
				t.Fatalf("accepted %q as kind %v, value %q", body, kind, value)
			}
			if len(body) > maxInvalidateBody {
				t.Fatalf("accepted a body of %d bytes", len(body))
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if msg == "" || len(body) >= 8 && strings.Contains(msg, string(body)) {
				t.Fatalf("status %d, message %q", status, msg)
			}
			if status == http.StatusRequestEntityTooLarge && len(body) <= maxInvalidateBody {
				t.Fatalf("413 for %d bytes", len(body))
			}
		default:
			t.Fatalf("status %d for %q", status, body)
		}
	})
}

// fuzzSchemes are the store schemes FuzzStoreURL puts before a password.
var fuzzSchemes = []string{"redis", "rediss", "redis+cluster", "rediss+sentinel", "memcache", "postgres", "postgresql", "bogus"}

// FuzzStoreURL parses and redacts arbitrary store locations: never a
// panic, and whatever sits in the password place of a URL, or in the
// password= setting of a key=value DSN, is in neither the redacted form
// nor any parse error. Seeds: testdata/fuzz/FuzzStoreURL.
func FuzzStoreURL(f *testing.F) {
	f.Add(uint8(0), "hunter2", "127.0.0.1:6379/0")
	f.Add(uint8(0), "x/hunter2", "127.0.0.1:1/0")
	f.Add(uint8(1), "hunter2", "h:6380/0?skip_verify=true")
	f.Add(uint8(2), "hunter2", "h:7000?addr=h:7001")
	f.Add(uint8(3), "hunter2", "h:26379?master_name=m&password=q")
	f.Add(uint8(4), "hunter2", "127.0.0.1:1")
	f.Add(uint8(5), "hun'ter 2", "h/db?sslmode=disable")
	f.Add(uint8(6), "hunter2%zz", "h:notaport/db")
	f.Add(uint8(7), "hunter2", "x")
	f.Fuzz(func(t *testing.T, si uint8, pw, rest string) {
		scheme := fuzzSchemes[int(si)%len(fuzzSchemes)]
		for _, raw := range []string{
			scheme + "://u:" + pw + "@" + rest,
			"postgres:host=h password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "' " + rest,
			pw,
		} {
			desc := redactURL(raw)
			_, err := parseStore(raw)
			if raw == pw {
				continue // no place for a password: only no panic
			}
			// Too short, or found anyway in what is not secret.
			if len(pw) < 4 || strings.Contains(redactURL(strings.Replace(raw, pw, "", 1)), pw) || strings.Contains(mask+scheme, pw) {
				continue
			}
			if strings.Contains(desc, pw) {
				t.Fatalf("redactURL(%q) = %q shows the password", raw, desc)
			}
			if err != nil && strings.Contains(err.Error(), pw) {
				t.Fatalf("parseStore(%q): %v shows the password", raw, err)
			}
		}
	})
}
