package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wechatconf/wechatconf/store"
)

// Importing this package registers the schemes postgres and postgresql with
// store.Register (in an init function, the database/sql driver idiom: see
// redisstore for why), so that store.Open and the wechatconf command take
//
//	postgres://[USER[:PASSWORD]@]HOST[:PORT]/DB[?OPTIONS]   pgxpool.ParseConfig
//	postgresql://...                                        the same
//	postgres:host=HOST dbname=DB user=USER ...              a libpq key=value DSN
//
// The Store uses DefaultTable, migrates on first use and has WithNotify (the
// listening connection is taken only by the first Watch). It owns the pool
// it made (no connection is made until the first operation) and closes it
// in Close.
func init() {
	store.Register("postgres", openURL)
	store.Register("postgresql", openURL)
}

// openURL is the store.OpenFunc of this package's schemes.
func openURL(ctx context.Context, u *url.URL) (store.Store, error) {
	conn := u.String()
	if u.Opaque != "" || (u.Host == "" && u.User == nil && u.Path == "") {
		conn = u.Opaque // postgres:KEY=VALUE...: pgx takes the DSN alone
		if strings.TrimSpace(conn) == "" {
			return nil, errors.New("pgstore: want a URL (postgres://...) or a key=value DSN (postgres:host=... dbname=...)")
		}
	}
	cfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s", parseWhy(err))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %s", parseWhy(err))
	}
	s, err := New(pool, WithNotify())
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.closePool = pool.Close
	return s, nil
}

// parseWhy is pgx's complaint about a connection string without the string
// itself ("cannot parse `...`: why" keeps the why); store.Open scrubs the
// rest.
func parseWhy(err error) string {
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if i := strings.LastIndex(msg, "`: "); i >= 0 && strings.HasPrefix(msg, "cannot parse `") {
			msg = msg[i+3:]
		}
	}
	return msg
}
