package wxcrypto

import (
	"errors"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Within the window, the timestamp check alone lets a captured request
// through again; with a ReplayCache it is refused, in every mode.
func TestReplayCacheRefusesExactReplay(t *testing.T) {
	now := time.Now()
	for _, mode := range []Mode{Normal, Compatible, Safe} {
		rc := NewMemoryReplayCache()
		c := mustNew(t, mode, testToken, testKey, testID, WithClock(func() time.Time { return now }), WithReplayCache(rc))
		q, body, err := c.SealRequest("gh", []byte(plainMsg))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Open(q, body); err != nil {
			t.Fatalf("%s: first: %v", mode, err)
		}
		for i := range 3 {
			if m, err := c.Open(q, body); !errors.Is(err, ErrReplay) || m != nil {
				t.Fatalf("%s: replay %d: %v, %v; want ErrReplay", mode, i+1, m, err)
			}
		}
		// Another request (another nonce) passes.
		q2, body2, _ := c.SealRequest("gh", []byte(plainMsg))
		if _, err := c.Open(q2, body2); err != nil {
			t.Fatalf("%s: second request: %v", mode, err)
		}
		if rc.Len() != 2 {
			t.Errorf("%s: %d records, want 2", mode, rc.Len())
		}
	}
}

// Issue #11, inside the window: in compatible mode an encrypted request's
// signature, timestamp and nonce, sent again as plaintext with a forged
// body, are refused once the cache saw the original.
func TestReplayCacheStopsForgedPlaintextInWindow(t *testing.T) {
	now := time.Now()
	c := mustNew(t, Compatible, testToken, testKey, testID, WithClock(func() time.Time { return now }), WithReplayCache(NewMemoryReplayCache()))
	q, body, _ := c.SealRequest("gh", []byte(plainMsg))
	if _, err := c.Open(q, body); err != nil {
		t.Fatal(err)
	}
	forged := url.Values{"signature": {q.Get("signature")}, "timestamp": {q.Get("timestamp")}, "nonce": {q.Get("nonce")}}
	if _, err := c.Open(forged, []byte("<xml><Content>forged</Content></xml>")); !errors.Is(err, ErrReplay) {
		t.Fatalf("forged plaintext with a captured signature: %v, want ErrReplay", err)
	}
}

// Two nodes sharing one cache: a request opened on one is a replay on the
// other; of many concurrent copies exactly one is accepted.
func TestReplayCacheSharedAndConcurrent(t *testing.T) {
	rc := NewMemoryReplayCache()
	a := mustNew(t, Safe, testToken, testKey, testID, WithClock(time.Now), WithReplayCache(rc))
	b := mustNew(t, Safe, testToken, testKey, testID, WithClock(time.Now), WithReplayCache(rc))
	q, body, _ := a.SealRequest("gh", []byte(plainMsg))
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a
			if i%2 == 1 {
				c = b
			}
			if _, err := c.Open(q, body); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrReplay) {
				t.Errorf("Open: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d copies accepted, want 1", ok.Load())
	}
}

// Only Open records: verifying the same request first is no replay, and a
// forged request is never recorded.
func TestReplayCacheRecordsOnlyAcceptedOpens(t *testing.T) {
	rc := NewMemoryReplayCache()
	c := mustNew(t, Safe, testToken, testKey, testID, WithClock(time.Now), WithReplayCache(rc))
	q, body, _ := c.SealRequest("gh", []byte(plainMsg))
	if err := c.VerifySignature(q.Get("signature"), q.Get("timestamp"), q.Get("nonce")); err != nil {
		t.Fatal(err)
	}
	bad := url.Values{"msg_signature": {"0000"}, "timestamp": {q.Get("timestamp")}, "nonce": {q.Get("nonce")}, "encrypt_type": {"aes"}}
	if _, err := c.Open(bad, body); !errors.Is(err, ErrSignature) {
		t.Fatal(err)
	}
	if rc.Len() != 0 {
		t.Fatalf("%d records before Open", rc.Len())
	}
	if _, err := c.Open(q, body); err != nil {
		t.Fatalf("Open after VerifySignature: %v", err)
	}
}

type failingCache struct{}

func (failingCache) Add(string, time.Time) (bool, error) { return false, errors.New("cache down") }

func TestReplayCacheFailsClosed(t *testing.T) {
	c := mustNew(t, Safe, testToken, testKey, testID, WithClock(time.Now), WithReplayCache(failingCache{}))
	q, body, _ := c.SealRequest("gh", []byte(plainMsg))
	if m, err := c.Open(q, body); err == nil || m != nil || errors.Is(err, ErrReplay) {
		t.Fatalf("Open with a failing cache = %v, %v", m, err)
	}
}

func TestMemoryReplayCacheExpires(t *testing.T) {
	rc := NewMemoryReplayCache()
	now := time.Unix(1700000000, 0)
	rc.now = func() time.Time { return now }
	if seen, _ := rc.Add("a", now.Add(5*time.Minute)); seen {
		t.Fatal("new key seen")
	}
	if seen, _ := rc.Add("a", now.Add(5*time.Minute)); !seen {
		t.Fatal("key not seen again")
	}
	if seen, _ := rc.Add("past", now.Add(-time.Second)); seen || rc.Len() != 1 {
		t.Fatalf("an already expired record was kept (%d)", rc.Len())
	}
	now = now.Add(5*time.Minute + time.Second)
	if seen, _ := rc.Add("a", now.Add(time.Minute)); seen {
		t.Fatal("an expired record counted")
	}
	for i := range 100 {
		rc.Add(strconv.Itoa(i), now.Add(time.Minute))
	}
	now = now.Add(2 * time.Minute)
	rc.Add("b", now.Add(time.Minute))
	if rc.Len() != 1 {
		t.Fatalf("%d records after a sweep, want 1", rc.Len())
	}
}
