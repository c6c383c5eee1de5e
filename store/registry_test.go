package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

const pw = "S3CRETPW"

var errFake = errors.New("fake opener refused")

func init() {
	// An opener that quotes the whole URL in its error, as a careless
	// third-party one might: Open must scrub it.
	store.Register("x-fake", func(_ context.Context, u *url.URL) (store.Store, error) {
		if u.Query().Get("fail") != "" {
			return nil, fmt.Errorf("cannot reach %s: %w", u.String(), errFake)
		}
		return store.NewMemory(), nil
	})
}

func TestOpenMemory(t *testing.T) {
	ctx := t.Context()
	s, err := store.Open(ctx, "memory:")
	if err != nil {
		t.Fatal(err)
	}
	item := store.Item{Value: "v", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.Set(ctx, "k", item); err != nil {
		t.Fatal(err)
	}
	if err := s.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := store.Open(ctx, "memory:junk"); err == nil || !strings.Contains(err.Error(), "takes nothing") {
		t.Fatalf("Open(memory:junk): %v, want an error saying memory: takes nothing", err)
	}
}

func TestOpenRegistered(t *testing.T) {
	ctx := t.Context()
	if !slices.Contains(store.Schemes(), "x-fake") || !slices.Contains(store.Schemes(), "memory") {
		t.Fatalf("Schemes() = %v, want x-fake and memory in it", store.Schemes())
	}
	s, err := store.Open(ctx, "X-FAKE://user:"+pw+"@host/")
	if err != nil || s == nil {
		t.Fatalf("Open of a registered scheme (upper case): %v", err)
	}
}

func TestOpenErrorsHideSecrets(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		raw, want string
	}{
		{"nosuch://user:" + pw + "@host", `unknown scheme "nosuch"`},
		{"user:" + pw + "@host", `unknown scheme "user"`},
		{"host=h password=" + pw, "no scheme"},
		{"x-fake://user:" + pw + "@host/%zz", "not a URL"},
		{"x-fake://user:" + pw + "@host/?fail=1&password=" + pw, "fake opener refused"},
		{"x-fake://host/?fail=1&password=" + pw, "fake opener refused"},
	} {
		_, err := store.Open(ctx, tc.raw)
		if err == nil {
			t.Errorf("Open(%s): no error", tc.want)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("Open error reveals the password: %v", err)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "store: ") {
			t.Errorf("Open error %q, want it to start with store: and say %q", err, tc.want)
		}
	}
	_, err := store.Open(ctx, "x-fake://h/?fail=1")
	if !errors.Is(err, errFake) {
		t.Errorf("Open error %v does not wrap the opener's error", err)
	}
	if _, err := store.Open(nil, "memory:"); err == nil {
		t.Error("Open(nil ctx): no error")
	}
}

func TestRegisterPanicsOnMistakes(t *testing.T) {
	open := func(context.Context, *url.URL) (store.Store, error) { return store.NewMemory(), nil }
	for name, f := range map[string]func(){
		"twice":      func() { store.Register("memory", open) },
		"nil open":   func() { store.Register("x-nil", nil) },
		"bad scheme": func() { store.Register("1bad", open) },
		"empty":      func() { store.Register("", open) },
		"colon":      func() { store.Register("a:b", open) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register %s: no panic", name)
				}
			}()
			f()
		}()
	}
}
