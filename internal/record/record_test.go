package record_test

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/record"
	"github.com/wechatconf/wechatconf/store"
)

// oracle writes a record the way the package documents it, independently of
// Encode.
func oracle(exp time.Time, value string) string {
	return fmt.Sprintf("%019d%s", exp.UnixNano(), value)
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		item store.Item
	}{
		{"typical", store.Item{Value: "ACCESS_TOKEN", ExpiresAt: time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC)}},
		{"epoch", store.Item{Value: "v", ExpiresAt: time.Unix(0, 0)}},
		{"one nanosecond", store.Item{Value: "v", ExpiresAt: time.Unix(0, 1)}},
		{"last expiry", store.Item{Value: "v", ExpiresAt: record.MaxExpiry}},
		{"empty value", store.Item{ExpiresAt: time.Unix(1767225600, 0)}},
		{"value of digits", store.Item{Value: "0123456789", ExpiresAt: time.Unix(1767225600, 5)}},
		{"value of any bytes", store.Item{Value: "\x00\xff 令牌\r\n'\"", ExpiresAt: time.Unix(1767225600, 999999999)}},
		{"other location", store.Item{Value: "v", ExpiresAt: time.Date(2026, 1, 1, 8, 0, 0, 0, time.FixedZone("CST", 8*3600))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := record.Encode(tc.item)
			if err != nil {
				t.Fatalf("Encode(%v): %v", tc.item, err)
			}
			if want := oracle(tc.item.ExpiresAt, tc.item.Value); string(got) != want {
				t.Fatalf("Encode(%v) = %q, want %q", tc.item, got, want)
			}
			back, err := record.Decode(string(got))
			if err != nil {
				t.Fatalf("Decode(Encode(%v)): %v", tc.item, err)
			}
			if back.Value != tc.item.Value || !back.ExpiresAt.Equal(tc.item.ExpiresAt) {
				t.Fatalf("Decode(Encode(%v)) = %v (expiring %v), want the item back to the nanosecond",
					tc.item, back, back.ExpiresAt)
			}
		})
	}
}

func TestEncodeOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		name  string
		exp   time.Time
		bound string
	}{
		{"zero time", time.Time{}, "before the first"},
		{"before the epoch", time.Unix(0, -1), "before the first"},
		{"a nanosecond past the last", record.MaxExpiry.Add(time.Nanosecond), "past the last"},
		{"year 2300", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "past the last"},
		{"year 9999", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "past the last"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const secret = "SECRET-TOKEN"
			got, err := record.Encode(store.Item{Value: secret, ExpiresAt: tc.exp})
			if err == nil {
				t.Fatalf("Encode with expiry %v = %q, want an error", tc.exp, got)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "expiry ") || !strings.Contains(msg, tc.bound) {
				t.Errorf("error %q does not name the expiry and say it is %s", msg, tc.bound)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error %q reveals the value", msg)
			}
		})
	}
}

// TestLayout pins what redisstore's Lua script relies on: the first ten
// digits are the Unix seconds and the next nine the nanoseconds.
func TestLayout(t *testing.T) {
	for _, exp := range []time.Time{
		time.Unix(0, 0),
		time.Unix(1, 999999999),
		time.Unix(1767225600, 123456789),
		record.MaxExpiry,
	} {
		rec, err := record.Encode(store.Item{Value: "v", ExpiresAt: exp})
		if err != nil {
			t.Fatal(err)
		}
		sec, err1 := strconv.ParseInt(string(rec[:10]), 10, 64)
		nsec, err2 := strconv.ParseInt(string(rec[10:record.StampLen]), 10, 64)
		if err1 != nil || err2 != nil || sec != exp.Unix() || nsec != int64(exp.Nanosecond()) {
			t.Errorf("record %q for %d.%09d: seconds %q, nanoseconds %q", rec, exp.Unix(), exp.Nanosecond(), rec[:10], rec[10:record.StampLen])
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	const secret = "SECRET"
	for _, tc := range []struct {
		name string
		rec  string
		why  string // in the error
	}{
		{"empty", "", "0 bytes"},
		{"shorter than the stamp", "176722560012345678", "18 bytes"},
		{"text", "not a record at all", "byte 0"},
		{"letter at the end of the stamp", "176722560012345678x" + secret, "byte 18"},
		{"space in the stamp", "1767225600 23456789" + secret, "byte 10"},
		{"plus sign", "+767225600123456789" + secret, "byte 0"},
		{"minus sign", "-767225600123456789" + secret, "byte 0"},
		{"non-ASCII digit", "١٧٦٧٢٢٥٦٠٠١٢٣٤٥٦٧٨٩", "byte 0"},
		{"one past the last expiry", "9223372036854775808" + secret, "past the last"},
		{"all nines", "9999999999999999999" + secret, "past the last"},
		{"overflow in the middle", "9300000000000000000" + secret, "past the last"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := record.Decode(tc.rec)
			if err == nil {
				t.Fatalf("Decode(%q) = %v (expiring %v), want an error", tc.rec, got, got.ExpiresAt)
			}
			if !errors.Is(err, record.ErrMalformed) {
				t.Errorf("Decode(%q): %v, does not match ErrMalformed", tc.rec, err)
			}
			if !errors.Is(err, store.ErrMalformed) {
				t.Errorf("Decode(%q): %v, does not match store.ErrMalformed", tc.rec, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("Decode(%q): error %q does not say %q", tc.rec, err, tc.why)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Decode(%q): error %q quotes the record", tc.rec, err)
			}
			if !got.IsZero() {
				t.Errorf("Decode(%q) returned %v along with its error", tc.rec, got)
			}
		})
	}
}

func TestDecodeEdges(t *testing.T) {
	for _, tc := range []struct {
		rec   string
		value string
		nanos int64
	}{
		{"0000000000000000000", "", 0},
		{"0000000000000000001x", "x", 1},
		{"9223372036854775807", "", math.MaxInt64},
		{"1767225600123456789" + "0123456789", "0123456789", 1767225600123456789},
		{"1767225600123456789" + "令牌", "令牌", 1767225600123456789},
	} {
		got, err := record.Decode(tc.rec)
		if err != nil {
			t.Errorf("Decode(%q): %v", tc.rec, err)
			continue
		}
		if got.Value != tc.value || got.ExpiresAt.UnixNano() != tc.nanos {
			t.Errorf("Decode(%q) = value %q, %d ns; want %q, %d ns", tc.rec, got.Value, got.ExpiresAt.UnixNano(), tc.value, tc.nanos)
		}
	}
}

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// it gives back unchanged through Encode.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		"", "1767225600123456789ACCESS_TOKEN", "9223372036854775807", "9223372036854775808",
		"000000000000000000", "-000000000000000001", "0000000000000000000\x00\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		it, err := record.Decode(rec)
		if err != nil {
			if !errors.Is(err, record.ErrMalformed) {
				t.Fatalf("Decode(%q): %v, does not match ErrMalformed", rec, err)
			}
			return
		}
		back, err := record.Encode(it)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)): %v", rec, err)
		}
		if string(back) != rec {
			t.Fatalf("Encode(Decode(%q)) = %q", rec, back)
		}
	})
}
