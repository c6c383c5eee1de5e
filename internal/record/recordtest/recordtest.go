// Package recordtest checks a store that keeps its items as internal/record
// records on a server (redisstore, memcachestore) for the rules that follow
// from the format and that storetest.Run cannot see from outside: the bytes
// stored under a key, newer-wins to the nanosecond, expired items never
// written, and records that the store did not write. The backends' own tests
// keep what differs between servers (TTLs, races, outages).
package recordtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/internal/record"
	"github.com/wechatconf/wechatconf/store"
)

// Backend is the store under test and a way around it to its server.
type Backend struct {
	// Name is the package, as it appears in store.OpError.Backend.
	Name string
	// New returns a store over a fresh, empty prefix, and that prefix.
	New func(t *testing.T) (s store.Store, prefix string)
	// Raw reads what the server holds under full (prefix and key), and
	// reports false when it holds nothing.
	Raw func(t *testing.T, full string) (rec []byte, ok bool)
	// Put writes rec under full on the server, bypassing the store, to live
	// an hour there.
	Put func(t *testing.T, full string, rec []byte)
}

// key is shaped like the keys package conf uses.
const key = "{wx123}:access_token"

// oracle writes a record the way internal/record documents it, without
// using it.
func oracle(exp time.Time, value string) []byte {
	return fmt.Appendf(nil, "%019d%s", exp.UnixNano(), value)
}

// Run checks b in one subtest a rule, each on a store of its own from
// b.New. Call it from the backend's tests, beside storetest.Run.
func Run(t *testing.T, b Backend) {
	t.Helper()
	if b.Name == "" || b.New == nil || b.Raw == nil || b.Put == nil {
		t.Fatal("recordtest.Run: Backend needs Name, New, Raw and Put")
	}
	for _, c := range []struct {
		name string
		run  func(*testing.T, Backend)
	}{
		{"Layout", testLayout},
		{"NewerWinsToTheNanosecond", testNewerWins},
		{"ExpiredItemsAreNotWritten", testExpiredNotWritten},
		{"LingeringExpiredRecordIsAMiss", testLingering},
		{"ForeignRecordIsAnError", testForeign},
		{"ExpiryPastTheLastRecord", testFarExpiry},
		{"MalformedRecordsHeal", testMalformedHeal},
		{"ImplausibleRecordsReplaced", testImplausible},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, b) })
	}
}

func mustSet(t *testing.T, s store.Store, it store.Item) {
	t.Helper()
	if err := s.Set(t.Context(), key, it); err != nil {
		t.Fatalf("Set(%q, value %q expiring %v): %v", key, it.Value, it.ExpiresAt, err)
	}
}

func expect(t *testing.T, s store.Store, value string) {
	t.Helper()
	got, err := s.Get(t.Context(), key)
	if err != nil || got.Value != value {
		t.Fatalf("Get(%q) = value %q, error %v; want %q", key, got.Value, err, value)
	}
}

// testLayout: one record under prefix+key, exactly as documented, and the
// item comes back to the nanosecond.
func testLayout(t *testing.T, b Backend) {
	s, p := b.New(t)
	want := store.Item{Value: "tok-1 \"quoted\" 令牌 0123", ExpiresAt: time.Now().Add(2*time.Hour + 123456789)}
	mustSet(t, s, want)
	raw, ok := b.Raw(t, p+key)
	if !ok {
		t.Fatalf("nothing stored under %q after Set", p+key)
	}
	if w := oracle(want.ExpiresAt, want.Value); string(raw) != string(w) {
		t.Fatalf("record under %q = %q, want %q", p+key, raw, w)
	}
	got, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Value != want.Value || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("Get = %q expiring %v, want %q expiring %v (to the nanosecond)", got.Value, got.ExpiresAt, want.Value, want.ExpiresAt)
	}
}

// testNewerWins compares at the record's precision, across a whole-second
// boundary (redisstore's script compares seconds, then nanoseconds), and
// stores an item whose expiry equals the stored one (the stored one does not
// expire later). Every expiry stays within store.MaxLifetime: beyond it
// (plus store.ClockSlack) an item is implausible and loses newer-wins.
func testNewerWins(t *testing.T, b Backend) {
	s, _ := b.New(t)
	base := time.Now().Add(30 * time.Minute)
	mustSet(t, s, store.Item{Value: "b", ExpiresAt: base})
	mustSet(t, s, store.Item{Value: "a", ExpiresAt: base.Add(-time.Nanosecond)})
	expect(t, s, "b")
	mustSet(t, s, store.Item{Value: "c", ExpiresAt: base.Add(time.Nanosecond)})
	expect(t, s, "c")
	mustSet(t, s, store.Item{Value: "d", ExpiresAt: base.Add(time.Nanosecond)})
	expect(t, s, "d")
	// Across a whole second: f's nanoseconds are larger, its second earlier.
	sec := base.Truncate(time.Second).Add(time.Hour)
	mustSet(t, s, store.Item{Value: "e", ExpiresAt: sec.Add(time.Nanosecond)})
	mustSet(t, s, store.Item{Value: "f", ExpiresAt: sec.Add(-time.Nanosecond)})
	expect(t, s, "e")
	// Within one second, the nanoseconds decide.
	mustSet(t, s, store.Item{Value: "g", ExpiresAt: sec.Add(2 * time.Nanosecond)})
	expect(t, s, "g")
	mustSet(t, s, store.Item{Value: "h", ExpiresAt: sec.Add(time.Nanosecond)})
	expect(t, s, "g")
}

func testExpiredNotWritten(t *testing.T, b Backend) {
	s, p := b.New(t)
	for _, it := range []store.Item{
		{Value: "old", ExpiresAt: time.Now().Add(-time.Second)},
		{Value: "zero"},
	} {
		if err := s.Set(t.Context(), key, it); err != nil {
			t.Fatalf("Set of an item expiring %v: %v, want nil (dropped)", it.ExpiresAt, err)
		}
		if raw, ok := b.Raw(t, p+key); ok {
			t.Fatalf("Set of an item expiring %v wrote %q", it.ExpiresAt, raw)
		}
	}
}

// testLingering: a record whose expiry has passed while the server still
// holds it is a miss, and a fresh Set replaces it.
func testLingering(t *testing.T, b Backend) {
	s, p := b.New(t)
	b.Put(t, p+key, oracle(time.Now().Add(-time.Millisecond), "stale"))
	if got, err := s.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an expired record = %q, %v; want ErrNotFound", got.Value, err)
	}
	mustSet(t, s, store.Item{Value: "new", ExpiresAt: time.Now().Add(time.Hour)})
	expect(t, s, "new")
}

// testForeign: a record the store did not write is an error, not a miss
// (another program shares the prefix), and Set overwrites it.
func testForeign(t *testing.T, b Backend) {
	s, p := b.New(t)
	b.Put(t, p+key, []byte("not a record"))
	_, err := s.Get(t.Context(), key)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a foreign record: %v, want an error that is not ErrNotFound", err)
	}
	var oe *store.OpError
	if !errors.As(err, &oe) || oe.Backend != b.Name || oe.Op != "get" || oe.Key != key {
		t.Fatalf("Get of a foreign record: %#v, want *store.OpError{%s get %q}", err, b.Name, key)
	}
	if !errors.Is(err, record.ErrMalformed) || !errors.Is(err, store.ErrMalformed) {
		t.Fatalf("Get of a foreign record: %v, does not match record.ErrMalformed and store.ErrMalformed", err)
	}
	mustSet(t, s, store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)})
	expect(t, s, "v")
}

func testFarExpiry(t *testing.T, b Backend) {
	s, p := b.New(t)
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	err := s.Set(t.Context(), key, store.Item{Value: "SECRET-TOKEN", ExpiresAt: far})
	var oe *store.OpError
	switch {
	case err == nil:
		t.Fatal("Set with an expiry in 2300: nil, want an error naming the expiry")
	case !errors.As(err, &oe) || oe.Backend != b.Name || oe.Op != "set" || !strings.Contains(err.Error(), "expiry"):
		t.Fatalf("Set with an expiry in 2300: %v, want *store.OpError{%s set} naming the expiry", err, b.Name)
	case strings.Contains(err.Error(), "SECRET-TOKEN"):
		t.Fatalf("Set with an expiry in 2300: %q reveals the value", err)
	}
	if raw, ok := b.Raw(t, p+key); ok {
		t.Fatalf("a failed Set wrote %q", raw)
	}
}

// Malformed are records that record.Decode rejects, most of them shaped to
// fool a reader less strict than Decode: Lua's tonumber (which redisstore's
// Set script once used) takes hexadecimal, signs, exponents, "inf" and
// surrounding spaces, and doubles have no int64 bound. Each was read as a
// stamp far in the future somewhere, and so held its key by newer-wins.
var Malformed = []string{
	"",
	"short",
	"176722560012345678",        // 18 digits: no room for the stamp
	"0xFFFFFFFF123456789POISON", // hexadecimal seconds: the year 2106 to tonumber
	"0x7fffffff000000000POISON", // hexadecimal, lower case
	"      inf 000000000POISON", // spaces and inf: infinitely far to tonumber
	"1e99999990000000000POISON", // an exponent: inf again
	"+767225600123456789POISON", // a sign
	"-000000001000000000POISON", // a negative stamp
	"1767225600 23456789POISON", // a space inside the nanoseconds
	"1767225600-23456789POISON", // a sign inside the nanoseconds
	"17672256.0123456789POISON", // a decimal point
	"9223372036854775808POISON", // one past the last int64 nanosecond
	"9999999999999999999POISON", // all nines: the year 2286 as doubles
	"9223372037000000000POISON", // seconds past the bound, nanoseconds zero
	"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00POISON", // binary
	"١٧٦٧٢٢٥٦٠٠١٢٣٤٥٦٧٨٩POISON",                                                          // digits of another script
}

// testMalformedHeal: every record in Malformed is reported by Get as
// store.ErrMalformed (not a miss, not an outage, not quoting the record),
// and overwritten by the next Set, however far ahead a loose reading of its
// stamp would put it.
func testMalformedHeal(t *testing.T, b Backend) {
	for i, rec := range Malformed {
		if _, err := record.Decode(rec); err == nil {
			t.Fatalf("recordtest.Malformed[%d] = %q: record.Decode accepts it", i, rec)
		}
		s, p := b.New(t)
		b.Put(t, p+key, []byte(rec))
		_, err := s.Get(t.Context(), key)
		var oe *store.OpError
		switch {
		case !errors.Is(err, store.ErrMalformed) || errors.Is(err, store.ErrNotFound):
			t.Errorf("Get of the malformed record %q: %v; want an error matching store.ErrMalformed", rec, err)
		case !errors.As(err, &oe) || oe.Backend != b.Name || oe.Op != "get":
			t.Errorf("Get of the malformed record %q: %#v, want a *store.OpError{%s get}", rec, err, b.Name)
		case strings.Contains(err.Error(), "POISON"):
			t.Errorf("Get of the malformed record %q: %q quotes the record", rec, err)
		}
		want := store.Item{Value: "healed", ExpiresAt: time.Now().Add(time.Hour)}
		mustSet(t, s, want)
		raw, _ := b.Raw(t, p+key)
		if w := oracle(want.ExpiresAt, want.Value); string(raw) != string(w) {
			t.Errorf("after Set over the malformed record %q the server holds %q, want %q", rec, raw, w)
		}
	}
}

// testImplausible: records that decode but that WeChat cannot have granted
// (poisoned far-future expiries, no value) lose newer-wins to a normal item.
func testImplausible(t *testing.T, b Backend) {
	now := time.Now()
	for _, rec := range [][]byte{
		oracle(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), "POISON"),
		oracle(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), ""),
		oracle(now.Add(time.Hour), ""),
		oracle(now.Add(store.MaxLifetime+store.ClockSlack+time.Minute), "POISON"),
		[]byte("9223372036854775807POISON"),  // the last expiry a record holds
		[]byte("18446744073709551615POISON"), // 2^64-1: its first 19 digits are 2028
	} {
		s, p := b.New(t)
		b.Put(t, p+key, rec)
		want := store.Item{Value: "good", ExpiresAt: time.Now().Add(2 * time.Hour)}
		mustSet(t, s, want)
		raw, _ := b.Raw(t, p+key)
		if w := oracle(want.ExpiresAt, want.Value); string(raw) != string(w) {
			t.Errorf("Set of a normal item over the implausible record %q left %q, want %q", rec, raw, w)
		}
	}
	// Up to the bound, newer-wins stands.
	s, p := b.New(t)
	kept := oracle(time.Now().Add(store.MaxLifetime+store.ClockSlack-time.Minute), "kept")
	b.Put(t, p+key, kept)
	mustSet(t, s, store.Item{Value: "older", ExpiresAt: time.Now().Add(time.Hour)})
	if raw, _ := b.Raw(t, p+key); string(raw) != string(kept) {
		t.Errorf("Set of an older item replaced the plausible record %q with %q", kept, raw)
	}
}
