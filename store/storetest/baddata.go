package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The BadData group: nothing a store holds is trusted beyond what WeChat can
// mean. Newer-wins protects only plausible items (store.Item.Plausible), and
// a record that cannot be decoded is reported as store.ErrMalformed by Get
// and overwritten by the next Set, so that a poisoned or foreign record
// heals at the next grant instead of wedging the key for ever.

// DefaultMalformed are the undecodable records that Run plants through
// WithRawWriter when WithMalformed is not given: shorter than any header a
// record format needs, and not text of any sane encoding. A backend whose
// format accepts one of them must pass WithMalformed with records it cannot
// decode.
var DefaultMalformed = [][]byte{
	{},
	[]byte("x"),
	{0xff, 0xfe, 0x00, 0x01},
	[]byte("garbage"),
}

// WithRawWriter gives Run a way around the store to its backend: write must
// store raw, as is and bypassing the store, as the record of key in the
// namespace of s (a store that newStore made), where s.Get(key) finds it,
// for at least a minute. Run plants records that the store cannot decode
// (DefaultMalformed, or those given with WithMalformed) and expects Get to
// fail with an error matching store.ErrMalformed (neither a miss nor a
// panic) and the next Set to overwrite the record whatever its expiry seems
// to be. write is called with the subtest's t and should fail it when the
// write fails. Without this option the BadData/Undecodable subtest is
// skipped.
func WithRawWriter(write func(t *testing.T, s store.Store, key string, raw []byte)) Option {
	return func(c *config) {
		if write == nil {
			c.problems = append(c.problems, "WithRawWriter was given a nil func")
			return
		}
		c.raw = write
	}
}

// WithMalformed replaces DefaultMalformed: records, in the form the
// WithRawWriter func writes (for a backend whose records are not bytes, such
// as SQL rows, whatever that func documents), that the store cannot decode.
// Each one is planted under a key of its own. Give the ones that real
// servers have seen: 'infinity' timestamps, stamps out of range, foreign
// encodings.
func WithMalformed(raws ...[]byte) Option {
	return func(c *config) {
		if len(raws) == 0 {
			c.problems = append(c.problems, "WithMalformed was given no records")
			return
		}
		c.malformed = append(c.malformed, raws...)
	}
}

var badDataCases = []testCase{
	{"FarFutureReplaced", testFarFutureReplaced},
	{"EmptyValueReplaced", testEmptyValueReplaced},
	{"PlausibleStillWins", testPlausibleStillWins},
	{"Undecodable", testUndecodable},
}

// plant stores an implausible item with Set, the way a node with a broken
// clock or a buggy writer would. A store may refuse it with an error (then
// it cannot hold it, and there is nothing to replace): plant reports false.
func plant(t *testing.T, s store.Store, key string, item store.Item) bool {
	t.Helper()
	if err := s.Set(t.Context(), key, item); err != nil {
		t.Logf("Set(%q, %s) refused an implausible item (allowed): %v", key, show(item), err)
		return false
	}
	return true
}

// wantReplaced sets a normal item on h over the implausible one under key
// and checks that it was stored.
func wantReplaced(t *testing.T, s, h store.Store, key string, bad store.Item) {
	t.Helper()
	good := store.Item{Value: tokenValue("good"), ExpiresAt: time.Now().Add(time.Hour)}
	mustSet(t, h, key, good)
	got, err := s.Get(t.Context(), key)
	if err != nil || !sameItem(got, good) {
		t.Errorf("implausible items: after Set(%s) over the stored %s, Get = %s, error %v; newer-wins protects only plausible items (Item.Plausible): Set must replace a stored item with no value or an expiry beyond MaxLifetime+ClockSlack",
			show(good), show(bad), show(got), err)
	}
}

func testFarFutureReplaced(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	for i, bad := range []store.Item{
		{Value: "POISON", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Value: "POISON", ExpiresAt: time.Now().Add(store.MaxLifetime + store.ClockSlack + time.Minute)},
	} {
		key := fmt.Sprintf("{wx00000000000000b%d}:access_token", i)
		if plant(t, s, key, bad) {
			wantReplaced(t, s, handle(i+1, s, peer), key, bad)
		}
	}
}

func testEmptyValueReplaced(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	for i, bad := range []store.Item{
		{Value: "", ExpiresAt: time.Now().Add(store.MaxLifetime)},
		{Value: "", ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		key := fmt.Sprintf("{wx00000000000000c%d}:access_token", i)
		if plant(t, s, key, bad) {
			wantReplaced(t, s, handle(i+1, s, peer), key, bad)
		}
	}
}

// testPlausibleStillWins: the replacement rule must not weaken newer-wins
// for items WeChat could have granted, up to the bound.
func testPlausibleStillWins(t *testing.T, r *runner) {
	s, peer := r.stores(t)
	kept := store.Item{Value: tokenValue("kept"), ExpiresAt: time.Now().Add(store.MaxLifetime + store.ClockSlack - time.Minute)}
	mustSet(t, s, keyToken, kept)
	older := store.Item{Value: tokenValue("older"), ExpiresAt: time.Now().Add(time.Hour)}
	mustSet(t, peer, keyToken, older)
	got := mustGet(t, s, keyToken)
	if !sameItem(got, kept) {
		t.Errorf("newer-wins Set: Set(%s) replaced the plausible %s (Get = %s); only implausible items lose their protection",
			show(older), show(kept), show(got))
	}
}

func testUndecodable(t *testing.T, r *runner) {
	if r.cfg.raw == nil {
		t.Skip("storetest: no WithRawWriter option; that undecodable records are ErrMalformed and healed by Set is not checked")
	}
	raws := r.cfg.malformed
	if len(raws) == 0 {
		raws = DefaultMalformed
	}
	s, peer := r.stores(t)
	for i, raw := range raws {
		key := fmt.Sprintf("{wx0000000000000d%02d}:access_token", i)
		r.cfg.raw(t, s, key, raw)
		var (
			got      store.Item
			err      error
			panicked any
		)
		func() {
			defer func() { panicked = recover() }()
			got, err = s.Get(t.Context(), key)
		}()
		switch {
		case panicked != nil:
			t.Errorf("undecodable records: Get(%q) of the undecodable record %q panicked: %v; want an error matching store.ErrMalformed", key, raw, panicked)
		case err == nil:
			t.Errorf("undecodable records: Get(%q) of the undecodable record %q = %s, nil error; want an error matching store.ErrMalformed", key, raw, show(got))
		case errors.Is(err, store.ErrNotFound):
			t.Errorf("undecodable records: Get(%q) of the undecodable record %q: %v; want store.ErrMalformed, not a miss (it must be reported)", key, raw, err)
		case !errors.Is(err, store.ErrMalformed):
			t.Errorf("undecodable records: Get(%q) of the undecodable record %q: %v; want an error matching store.ErrMalformed (errors.Is), not an outage", key, raw, err)
		}
		good := store.Item{Value: tokenValue("healed"), ExpiresAt: time.Now().Add(time.Hour)}
		if err := handle(i+1, s, peer).Set(t.Context(), key, good); err != nil {
			t.Errorf("undecodable records: Set(%q, %s) over the undecodable record %q: %v; Set must overwrite it", key, show(good), raw, err)
			continue
		}
		if got, err := s.Get(t.Context(), key); err != nil || !sameItem(got, good) {
			t.Errorf("undecodable records: Get(%q) after Set(%s) over the undecodable record %q = %s, error %v; Set must overwrite it",
				key, show(good), raw, show(got), err)
		}
		l := mustLock(t, s, key, r.long(), "beside a healed item")
		mustUnlock(t, l, "beside a healed item")
	}
}
