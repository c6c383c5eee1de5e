package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/wechatconf/wechatconf/store"
)

// Importing this package registers its URL schemes with store.Register, the
// way importing a database/sql driver does: an init function, not an
// explicit Register call, because a program that imports the package for
// store.Open (or the wechatconf command) has nothing else to do with it, and
// one blank import is the idiom Go users already know. Programs that call
// New with a client of their own pay only for a map entry.
//
//	redis://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]        redis.ParseURL
//	rediss://...                                            the same, over TLS
//	redis+cluster://[USER:PASSWORD@]HOST:PORT?addr=HOST:PORT...  redis.ParseClusterURL
//	redis+sentinel://HOST:PORT?master_name=NAME&addr=...    redis.ParseFailoverURL
//	rediss+cluster://, rediss+sentinel://                   the same, over TLS
//
// go-redis's URL options apply. The Store uses DefaultPrefix; it owns the
// client it made and closes it in Close.
func init() {
	for _, scheme := range []string{"redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"} {
		store.Register(scheme, openURL)
	}
}

// openURL is the store.OpenFunc of this package's schemes.
func openURL(_ context.Context, u *url.URL) (store.Store, error) {
	base, kind, _ := strings.Cut(strings.ToLower(u.Scheme), "+")
	if u.Opaque != "" || u.Host == "" {
		return nil, fmt.Errorf("redisstore: want %s://[USER:PASSWORD@]HOST:PORT...", u.Scheme)
	}
	// go-redis reads redis:// and rediss:// only.
	v := *u
	v.Scheme = base
	raw := v.String()
	var c redis.UniversalClient
	switch kind {
	case "":
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, parseErr(err)
		}
		c = redis.NewClient(opt)
	case "cluster":
		opt, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, parseErr(err)
		}
		c = redis.NewClusterClient(opt)
	case "sentinel":
		opt, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, parseErr(err)
		}
		if opt.MasterName == "" {
			return nil, errors.New("redisstore: a sentinel URL needs the master's name: add ?master_name=NAME")
		}
		if opt.RouteByLatency || opt.RouteRandomly {
			// NewFailoverClient panics on these.
			return nil, errors.New("redisstore: route_by_latency and route_randomly need a failover cluster client; build one and call New")
		}
		c = redis.NewFailoverClient(opt)
	default:
		return nil, fmt.Errorf("redisstore: unknown scheme %q", u.Scheme)
	}
	s, err := New(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	s.closeClient = c.Close
	return s, nil
}

// parseErr is go-redis's complaint about a URL without the *url.Error
// wrapper, which would quote the whole URL (store.Open scrubs the rest).
func parseErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("redisstore: invalid URL: %w", err)
}
