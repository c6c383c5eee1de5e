package memcachestore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/wechatconf/wechatconf/store"
)

// Importing this package registers the scheme memcache with store.Register
// (in an init function, the database/sql driver idiom: see redisstore for
// why), so that store.Open and the wechatconf command take
//
//	memcache://HOST:PORT[,HOST:PORT...]
//
// memcached has no authentication: a user part is refused. The Store uses
// DefaultPrefix; it owns the client it made and closes it in Close.
func init() { store.Register("memcache", openURL) }

// openURL is the store.OpenFunc of memcache://.
func openURL(_ context.Context, u *url.URL) (store.Store, error) {
	if u.User != nil {
		return nil, errors.New("memcachestore: memcache:// takes no user or password (memcached has no authentication)")
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, errors.New("memcachestore: want memcache://HOST:PORT[,HOST:PORT...] and nothing more")
	}
	var servers []string
	for _, s := range strings.Split(u.Host, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		host, port, err := net.SplitHostPort(s)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("memcachestore: server %q is not HOST:PORT", s)
		}
		servers = append(servers, s)
	}
	if len(servers) == 0 {
		return nil, errors.New("memcachestore: want memcache://HOST:PORT[,HOST:PORT...]")
	}
	var sl memcache.ServerList
	if err := sl.SetServers(servers...); err != nil {
		return nil, fmt.Errorf("memcachestore: %w", err)
	}
	c := memcache.NewFromSelector(&sl)
	s, err := New(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	s.closeClient = c.Close
	return s, nil
}
