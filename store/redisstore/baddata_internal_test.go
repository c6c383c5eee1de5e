package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/internal/record"
	"github.com/wechatconf/wechatconf/internal/record/recordtest"
	"github.com/wechatconf/wechatconf/internal/testserver"
	"github.com/wechatconf/wechatconf/store"
)

func internalClient(t *testing.T) *redis.Client {
	t.Helper()
	srv := testserver.Redis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// stamped builds a record the way internal/record documents it.
func stamped(exp time.Time, value string) string {
	return fmt.Sprintf("%019d%s", exp.UnixNano(), value)
}

// decodable are records that record.Decode accepts, at the edges of what it
// accepts.
var decodable = []string{
	"0000000000000000000x",
	"0000000000000000001x",
	"0000000000999999999x",
	"0000000001000000000x",
	"1767225600123456789TOKEN",
	"1767225600123456789",
	"9223372035999999999x",
	"9223372036000000000x",
	"9223372036854775806x",
	"9223372036854775807x",
	"9223372036854775807",
	"18446744073709551615POISON",
	"0000000000000000001" + strings.Repeat("v", 4096),
	"1767225600123456789 \x00\xff value with anything in it",
}

// scriptKeeps runs the Set script over rec stored raw (without a TTL), for
// a new item expiring at newExp written at now with the given bound, and
// reports whether the script kept rec. It also checks that the key then
// holds what the script's answer says.
func scriptKeeps(t *testing.T, c *redis.Client, full, rec string, newExp, now time.Time, bound time.Duration) bool {
	t.Helper()
	ctx := context.Background()
	if err := c.Set(ctx, full, rec, 0).Err(); err != nil {
		t.Fatal(err)
	}
	newRec, err := record.Encode(store.Item{Value: "new", ExpiresAt: newExp})
	if err != nil {
		t.Fatal(err)
	}
	wrote, err := runSet(ctx, c, full, newRec, 60000, "agree", now, bound)
	if err != nil {
		t.Fatalf("set script over %q: %v", rec, err)
	}
	got, err := c.Get(ctx, full).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]string{true: string(newRec), false: rec}[wrote]; got != want {
		t.Fatalf("set script over %q answered wrote=%v but the key holds %q", rec, wrote, got)
	}
	return !wrote
}

// TestSetScriptAgreesWithDecode feeds one table of raw records to
// record.Decode and to the Set script (raw SET, then the script's
// decision) and checks that they agree byte for byte on what is a record:
// the script keeps exactly the records that Decode accepts, that are
// Plausible at the writer's clock, and that expire later than the new item.
// Lua's tonumber read "0xFFFFFFFF..." as the year 2106 and "      inf" as
// for ever, where Decode refused them.
func TestSetScriptAgreesWithDecode(t *testing.T) {
	c := internalClient(t)
	table := append(append([]string{}, recordtest.Malformed...), decodable...)

	// Validity alone: the writer's now is the epoch, the bound as long as a
	// Duration goes, the new item's stamp 0. Only a record without a value
	// or with a stamp past the bound or not after 0 is written over,
	// besides those Decode rejects.
	epoch := time.Unix(0, 0)
	bound := time.Duration(math.MaxInt64)
	limit := epoch.Add(bound.Truncate(time.Second))
	for i, rec := range table {
		it, err := record.Decode(rec)
		want := err == nil && it.Value != "" && !it.ExpiresAt.After(limit) && it.ExpiresAt.After(epoch)
		if got := scriptKeeps(t, c, fmt.Sprintf("agree:validity:%d", i), rec, epoch, epoch, bound); got != want {
			t.Errorf("record %q: the script keeps it: %v; Decode and the bound say %v (Decode error %v): they must agree", rec, got, want, err)
		}
	}

	// Plausibility at a real clock, to the nanosecond at both edges: the
	// bound store.MaxLifetime+store.ClockSlack, and the new item's expiry.
	now := time.Now()
	newExp := now.Add(time.Hour)
	edge := now.Add(store.MaxLifetime + store.ClockSlack)
	for _, exp := range []time.Time{
		edge.Add(-time.Nanosecond), edge, edge.Add(time.Nanosecond), edge.Add(time.Second),
		newExp.Add(-time.Nanosecond), newExp, newExp.Add(time.Nanosecond),
		now.Add(2 * time.Hour), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		table = append(table, stamped(exp, "v"), stamped(exp, ""))
	}
	for i, rec := range table {
		it, err := record.Decode(rec)
		want := err == nil && it.Plausible(now) && it.ExpiresAt.After(newExp)
		if got := scriptKeeps(t, c, fmt.Sprintf("agree:plausible:%d", i), rec, newExp, now, store.MaxLifetime+store.ClockSlack); got != want {
			t.Errorf("record %q at now %d: the script keeps it: %v; Decode and Item.Plausible say %v (error %v): they must agree", rec, now.UnixNano(), got, want, err)
		}
	}
}

// TestKeysOfAnotherType: a hash where an item or a lease belongs (another
// program's) is ErrMalformed to Get and overwritten by Set, and taken over
// by Lock; Unlock and Extend of a lease whose key became one see it as not
// theirs.
func TestKeysOfAnotherType(t *testing.T) {
	ctx := context.Background()
	c := internalClient(t)
	s := MustNew(t, c, WithPrefix("other-type:"))
	const key = "{wx1}:access_token"
	if err := c.HSet(ctx, "other-type:"+key, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrMalformed) {
		t.Fatalf("Get of a hash: %v, want an error matching store.ErrMalformed", err)
	}
	want := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(ctx, key, want); err != nil {
		t.Fatalf("Set over a hash: %v, want it overwritten", err)
	}
	if got, err := s.Get(ctx, key); err != nil || got.Value != "v" {
		t.Fatalf("Get after Set over a hash = %v, %v", got, err)
	}

	lockKey := "other-type:" + key + lockSuffix
	if err := c.HSet(ctx, lockKey, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("Lock over a hash without a TTL: %v, want the lease", err)
	}
	if err := c.Del(ctx, lockKey).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, lockKey, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Errorf("Unlock of a lease whose key became a hash: %v, want nil", err)
	}
	if err := l.(store.Extender).Extend(ctx, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Extend of a lease whose key became a hash: %v, want ErrLeaseLost", err)
	}
}

// TestForeignLeaseRecord: a lock key without a TTL (no Lock writes one)
// used to block Lock for ever; Lock takes it over, with the TTL it was
// asked for. A lock key with a TTL is a lease, whoever wrote it.
func TestForeignLeaseRecord(t *testing.T) {
	ctx := context.Background()
	c := internalClient(t)
	s := MustNew(t, c, WithPrefix("foreign-lease:"))
	const key = "{wx1}:access_token"
	lockKey := "foreign-lease:" + key + lockSuffix
	for _, raw := range []string{"", "garbage", "\x00\xff"} {
		if err := c.Set(ctx, lockKey, raw, 0).Err(); err != nil {
			t.Fatal(err)
		}
		l, err := s.Lock(ctx, key, 30*time.Second)
		if err != nil {
			t.Fatalf("Lock over the lock key %q without a TTL: %v, want the lease", raw, err)
		}
		if ttl := c.PTTL(ctx, lockKey).Val(); ttl <= 0 || ttl > 30*time.Second {
			t.Fatalf("lease TTL after taking over %q: %v, want (0, 30s]", raw, ttl)
		}
		if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("second Lock after taking over %q: %v, want ErrLocked", raw, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx, lockKey, "someone else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, key, time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Lock over a foreign lock key with a TTL: %v, want ErrLocked", err)
	}
}
