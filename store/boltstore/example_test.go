package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/store/boltstore"
)

// One process keeps its token in a file; a restart finds it there.
func Example() {
	dir, err := os.MkdirTemp("", "boltstore-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "wechatconf.db")
	ctx := context.Background()

	s, err := boltstore.Open(path, boltstore.WithTimeout(2*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	// Take the lease before granting, so that only one goroutine calls
	// WeChat; store the grant; release.
	lease, err := s.Lock(ctx, "{wx123}:access_token", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	err = s.Set(ctx, "{wx123}:access_token", store.Item{Value: "ACCESS_TOKEN", ExpiresAt: time.Now().Add(2 * time.Hour)})
	if err != nil {
		log.Fatal(err)
	}
	if err := lease.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	s.Close()

	// The next run of the program.
	s, err = boltstore.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	item, err := s.Get(ctx, "{wx123}:access_token")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(item.Value)
	// Output: ACCESS_TOKEN
}

// A second Open of a held file fails, naming the networked backends to use
// when several processes must share credentials.
func ExampleOpen_fileLocked() {
	dir, err := os.MkdirTemp("", "boltstore-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "wechatconf.db")

	first, err := boltstore.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer first.Close()

	_, err = boltstore.Open(path, boltstore.WithTimeout(100*time.Millisecond))
	fmt.Println(errors.Is(err, boltstore.ErrFileLocked))
	// Output: true
}
