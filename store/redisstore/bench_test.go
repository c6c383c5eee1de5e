package redisstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	_, _, s, _ := newStore(b)
	if err := s.Set(ctx, key, store.Item{Value: "token-value-of-a-realistic-length-0123456789abcdef", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSet(b *testing.B) {
	ctx := context.Background()
	_, _, s, _ := newStore(b)
	it := store.Item{Value: "token-value-of-a-realistic-length-0123456789abcdef", ExpiresAt: time.Now().Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		it.ExpiresAt = it.ExpiresAt.Add(time.Nanosecond) // each Set wins and writes
		if err := s.Set(ctx, key, it); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLockUnlock(b *testing.B) {
	ctx := context.Background()
	_, _, s, _ := newStore(b)
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.Lock(ctx, key, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
