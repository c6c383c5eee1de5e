package boltstore

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// TestOpenURL checks bolt:PATH, which importing boltstore registers with
// store.Open: the Store owns the file, and Close lets another Open have it.
func TestOpenURL(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "open.db")
	for i := range 2 {
		s, err := store.Open(ctx, "bolt:"+path)
		if err != nil {
			t.Fatalf("store.Open #%d: %v", i, err)
		}
		if i == 0 {
			if err := s.Set(ctx, "k", store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		} else if got, err := s.Get(ctx, "k"); err != nil || got.Value != "v" {
			t.Fatalf("Get after reopening: %v, %v", got, err)
		}
		if err := s.(io.Closer).Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Get after Close: %v, want ErrClosed", err)
		}
	}
	for raw, want := range map[string]string{
		"bolt:":          "needs a file path",
		"bolt:/x.db?a=b": "no user part or query",
	} {
		if _, err := store.Open(ctx, raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("store.Open(%q): %v, want an error saying %q", raw, err, want)
		}
	}
}
