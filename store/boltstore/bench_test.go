package boltstore

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// The numbers include bbolt's fsync on every Update (Set, Lock, Unlock), as
// a real deployment pays it.

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s := open(b)
	if err := s.Set(ctx, "{wx1}:access_token", store.Item{Value: "token-value-of-a-realistic-length-0123456789abcdef0123456789abcdef", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, "{wx1}:access_token"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSet(b *testing.B) {
	ctx := context.Background()
	s := open(b)
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		exp = exp.Add(time.Millisecond) // newer every time: every Set writes
		if err := s.Set(ctx, "{wx1}:access_token", store.Item{Value: "token-value-of-a-realistic-length-0123456789abcdef0123456789abcdef", ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLockUnlock(b *testing.B) {
	ctx := context.Background()
	s := open(b)
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.Lock(ctx, "{wx1}:access_token", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
