package pgstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wechatconf/wechatconf/store"
)

// TestRowsThatAreNoItem: an items row with expires_at 'infinity' or
// '-infinity' made Get fail with pgx's "cannot scan Infinity"; Get reports
// it as store.ErrMalformed, without quoting the value, and Set overwrites
// it, as it does rows that are implausible (an empty value, an expiry far
// ahead), with or without WithNotify.
func TestRowsThatAreNoItem(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	table := freshTable()
	for _, opts := range [][]Option{{WithTable(table)}, {WithTable(table), WithNotify(), WithPrefix("notify:")}} {
		s := newStore(t, pool, opts...)
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		for _, lit := range []string{"infinity", "-infinity"} {
			putRow(t, pool, s, "k", "SECRET-POISON", lit)
			_, err := s.Get(ctx, "k")
			wantOpErr(t, err, "get", "k", store.ErrMalformed)
			if errors.Is(err, store.ErrNotFound) || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("Get of a row expiring %s: %v; want ErrMalformed, not a miss, not quoting the value", lit, err)
			}
			want := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Microsecond)}
			if err := s.Set(ctx, "k", want); err != nil {
				t.Fatalf("Set over a row expiring %s: %v", lit, err)
			}
			if got, err := s.Get(ctx, "k"); err != nil || got.Value != "v" || !got.ExpiresAt.Equal(want.ExpiresAt) {
				t.Fatalf("Get after Set over a row expiring %s = %v, %v; want %v", lit, got, err, want)
			}
		}
		for _, row := range []struct{ value, exp string }{
			{"POISON", "2100-01-01T00:00:00Z"},
			{"", "2100-01-01T00:00:00Z"},
			{"", time.Now().Add(time.Hour).Format(time.RFC3339Nano)},
			{"POISON", time.Now().Add(store.MaxLifetime + store.ClockSlack + time.Minute).Format(time.RFC3339Nano)},
			{"POISON", "294276-12-31T23:59:59Z"},
		} {
			putRow(t, pool, s, "k", row.value, row.exp)
			if err := s.Set(ctx, "k", store.Item{Value: "good", ExpiresAt: time.Now().Add(2 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, "k"); err != nil || got.Value != "good" {
				t.Errorf("Set over the implausible row (%q, %s): Get = %v, %v; want it replaced", row.value, row.exp, got, err)
			}
		}
		// Up to the bound, newer-wins stands.
		kept := time.Now().Add(store.MaxLifetime + store.ClockSlack - time.Minute)
		putRow(t, pool, s, "k", "kept", kept.Format(time.RFC3339Nano))
		if err := s.Set(ctx, "k", store.Item{Value: "older", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "k"); err != nil || got.Value != "kept" {
			t.Errorf("Set of an older item over a plausible row: Get = %v, %v; want the row kept", got, err)
		}
	}
}

// TestInfiniteLeaseRow: a lease row with expires_at 'infinity' (pgstore
// never writes one) would block Lock for ever; Lock takes it over as free,
// bumping the fence, and the holder it was taken from cannot Extend it.
func TestInfiniteLeaseRow(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	s := newStore(t, pool, WithTable(freshTable()))
	l, err := s.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fence := l.(*lease).fence
	q := `UPDATE ` + pgx.Identifier{s.table + "_leases"}.Sanitize() + ` SET expires_at = 'infinity' WHERE key = $1`
	if _, err := pool.Exec(ctx, q, s.prefix+"k"); err != nil {
		t.Fatal(err)
	}
	if err := l.(*lease).Extend(ctx, time.Minute); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Extend of a lease whose row expires at 'infinity': %v, want ErrLeaseLost (it holds no lease)", err)
	}
	l2, err := s.Lock(ctx, "k", time.Minute)
	if err != nil {
		t.Fatalf("Lock over a lease row expiring at 'infinity': %v; want the lease", err)
	}
	if f := l2.(*lease).fence; f != fence+1 {
		t.Errorf("fence after taking over an infinite lease row = %d, want %d", f, fence+1)
	}
	if _, err := s.Lock(ctx, "k", time.Minute); !errors.Is(err, store.ErrLocked) {
		t.Errorf("second Lock: %v, want ErrLocked", err)
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
