package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/wechatconf/wechatconf/internal/secret"
)

// OpenFunc opens the store that u names. It is what a backend registers for
// its URL schemes with Register. ctx bounds the opening only (a dial, a
// ping), not the life of the Store.
//
// The Store returned owns what OpenFunc made for it (a client, a pool, a
// file): it must implement io.Closer and release those in Close. An
// OpenFunc's errors must not quote a password: describe the URL with
// u.Redacted(), or better not at all (Open names the URL itself, with every
// secret masked, and masks what it can find in the error too).
type OpenFunc func(ctx context.Context, u *url.URL) (Store, error)

var registry struct {
	mu sync.RWMutex
	m  map[string]OpenFunc
}

// Register makes open the opener of URLs with scheme for Open, in the
// spirit of database/sql.Register. Backends call it from an init function,
// so that importing a backend, even for its side effects only
// (import _ "example.com/etcdstore"), makes its schemes known to Open and to
// the wechatconf command. Schemes are case-insensitive.
//
// Like sql.Register, Register panics when scheme is not a URL scheme (a
// letter, then letters, digits, '+', '-' or '.'), when open is nil, or when
// the scheme is registered twice: each is a mistake in a program, caught
// when it starts, never a reaction to input.
func Register(scheme string, open OpenFunc) {
	if s, rest, ok := secret.SplitScheme(scheme + ":"); !ok || rest != "" || s == "" {
		panic(fmt.Sprintf("store: Register(%q): not a URL scheme", scheme))
	}
	if open == nil {
		panic(fmt.Sprintf("store: Register(%q): open is nil", scheme))
	}
	scheme = strings.ToLower(scheme)
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if _, dup := registry.m[scheme]; dup {
		panic(fmt.Sprintf("store: Register(%q): registered twice", scheme))
	}
	if registry.m == nil {
		registry.m = make(map[string]OpenFunc)
	}
	registry.m[scheme] = open
}

// Schemes returns the registered URL schemes, in lower case and sorted: what
// Open takes, for a usage message or a check before Open.
func Schemes() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	out := make([]string, 0, len(registry.m))
	for s := range registry.m {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Open opens the store that rawURL names, with the opener registered for
// its scheme. Package store registers "memory:" (a new Memory); each backend
// of this module registers its own when imported:
//
//	memory:                                      package store
//	bolt:PATH                                    boltstore
//	redis://, rediss://, redis+cluster://,       redisstore
//	redis+sentinel:// (and rediss+...)
//	memcache://HOST:PORT[,HOST:PORT...]          memcachestore
//	postgres://, postgresql://, postgres:K=V...  pgstore
//
// The Store owns what its opener made and releases it in Close: call
// s.(io.Closer).Close() when done (every Store from this module's openers
// implements io.Closer).
//
// Errors name the URL with every secret masked (a password in the user
// part, secret-looking query parameters such as password=, PostgreSQL DSN
// settings such as password='...'), never the raw text that failed to
// parse, and wrap the opener's error so that errors.Is and errors.As see
// it.
func Open(ctx context.Context, rawURL string) (Store, error) {
	if ctx == nil {
		return nil, errors.New("store: Open: nil context")
	}
	shown := secret.URL(rawURL)
	scheme, _, ok := secret.SplitScheme(rawURL)
	if !ok {
		return nil, fmt.Errorf("store: open %s: no scheme (registered: %s)", shown, strings.Join(Schemes(), ", "))
	}
	registry.mu.RLock()
	open := registry.m[scheme]
	registry.mu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("store: open %s: unknown scheme %q (registered: %s; is the backend imported?)", shown, scheme, strings.Join(Schemes(), ", "))
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the whole URL: keep only why it failed,
		// scrubbed.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store: open %s: not a URL: %s", shown, secret.Scrub(err.Error(), rawURL))
	}
	s, err := open(ctx, u)
	if err != nil {
		return nil, &openError{msg: secret.Scrub(fmt.Sprintf("store: open %s: %v", shown, err), rawURL), err: err}
	}
	if s == nil {
		return nil, fmt.Errorf("store: open %s: the %q opener returned no Store and no error", shown, scheme)
	}
	return s, nil
}

// openError is an opener's error with the secrets of the URL scrubbed from
// its message; Unwrap still reaches the opener's error.
type openError struct {
	msg string
	err error
}

func (e *openError) Error() string { return e.msg }
func (e *openError) Unwrap() error { return e.err }

func init() {
	Register("memory", openMemory)
}

// openMemory opens "memory:" (or "memory://"), a new, empty Memory.
func openMemory(_ context.Context, u *url.URL) (Store, error) {
	if u.Opaque != "" || u.Host != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, errors.New("memory: takes nothing after the colon")
	}
	return NewMemory(), nil
}

var _ io.Closer = (*Memory)(nil)
