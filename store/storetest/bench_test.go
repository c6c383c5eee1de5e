package storetest_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/storetest"
)

// BenchmarkMemory is the baseline the backends' numbers compare with: no
// I/O at all.
func BenchmarkMemory(b *testing.B) {
	storetest.Bench(b, func(*testing.B) store.Store { return store.NewMemory() })
}

// A benchFault is a store.Memory with one thing wrong that storetest.Bench
// must notice, since it would otherwise measure the wrong path.
type benchFault struct {
	*store.Memory
	fault string
	ops   *opCounts
}

type opCounts struct{ get, set, lock, unlock atomic.Int64 }

func (f benchFault) Get(ctx context.Context, key string) (store.Item, error) {
	f.ops.get.Add(1)
	it, err := f.Memory.Get(ctx, key)
	switch f.fault {
	case "get-fails":
		return store.Item{}, errors.New("get-fails: connection reset")
	case "get-other":
		it.Value = "another item"
	}
	return it, err
}

func (f benchFault) Set(ctx context.Context, key string, item store.Item) error {
	f.ops.set.Add(1)
	switch f.fault {
	case "set-loses":
		return nil // as if every Set lost: nothing written, nothing measured
	case "set-keeps-first":
		if _, err := f.Memory.Get(ctx, key); err == nil {
			return nil // a store that never replaces an item
		}
	}
	return f.Memory.Set(ctx, key, item)
}

func (f benchFault) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	f.ops.lock.Add(1)
	l, err := f.Memory.Lock(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return benchLease{l, f}, nil
}

type benchLease struct {
	store.Lease
	f benchFault
}

func (l benchLease) Unlock(ctx context.Context) error {
	l.f.ops.unlock.Add(1)
	if l.f.fault == "unlock-keeps" {
		return nil // reports success, releases nothing
	}
	return l.Lease.Unlock(ctx)
}

// runBench runs storetest.Bench on a benchFault through testing.Benchmark,
// three iterations a sub-benchmark, and returns the names of the
// sub-benchmarks that failed.
func runBench(t *testing.T, fault string) (failed []string, ops *opCounts) {
	t.Helper()
	if f := flag.Lookup("test.benchtime"); f != nil {
		old := f.Value.String()
		if err := f.Value.Set("3x"); err != nil {
			t.Fatal(err)
		}
		defer f.Value.Set(old)
	}
	ops = new(opCounts)
	// Under testing.Benchmark sub-benchmarks have no names: tell them
	// apart by the order Bench documents, one store each.
	subs := []string{"Get", "Set", "LockUnlock"}
	var (
		mu   sync.Mutex
		made int
	)
	testing.Benchmark(func(b *testing.B) {
		storetest.Bench(b, func(b *testing.B) store.Store {
			mu.Lock()
			name := fmt.Sprintf("sub-benchmark #%d", made+1)
			if made < len(subs) {
				name = subs[made]
			}
			made++
			mu.Unlock()
			b.Cleanup(func() {
				if b.Failed() {
					mu.Lock()
					defer mu.Unlock()
					failed = append(failed, name)
				}
			})
			return benchFault{Memory: store.NewMemory(), fault: fault, ops: ops}
		})
	})
	if made != len(subs) {
		t.Errorf("storetest.Bench made %d stores; want one for each of %v", made, subs)
	}
	return failed, ops
}

// TestBench proves that storetest.Bench runs every operation on a correct
// store without failing, and that each sub-benchmark fails when the store
// errs or would have it measure the wrong path.
func TestBench(t *testing.T) {
	failed, ops := runBench(t, "")
	if len(failed) > 0 {
		t.Fatalf("storetest.Bench failed on store.Memory: %v", failed)
	}
	for name, n := range map[string]int64{
		"Get": ops.get.Load(), "Set": ops.set.Load(), "Lock": ops.lock.Load(), "Unlock": ops.unlock.Load(),
	} {
		if n < 3 {
			t.Errorf("storetest.Bench made %d %s calls in three iterations a sub-benchmark", n, name)
		}
	}
	if ops.lock.Load() != ops.unlock.Load() {
		t.Errorf("storetest.Bench took %d leases and released %d", ops.lock.Load(), ops.unlock.Load())
	}

	for fault, sub := range map[string]string{
		"get-fails":       "Get",
		"get-other":       "Get",
		"set-loses":       "Set",
		"set-keeps-first": "Set",
		"unlock-keeps":    "LockUnlock",
	} {
		if failed, _ := runBench(t, fault); !slices.Contains(failed, sub) {
			t.Errorf("storetest.Bench on a store with fault %q: sub-benchmarks %v failed; want %s among them", fault, failed, sub)
		}
	}
}
