package boltstore

import (
	"context"
	"errors"
	"net/url"

	"github.com/wechatconf/wechatconf/store"
)

// Importing this package registers the scheme bolt with store.Register (in
// an init function, the database/sql driver idiom: see redisstore for why),
// so that store.Open and the wechatconf command take
//
//	bolt:PATH    bolt:/var/lib/wechatconf/wechatconf.db, bolt:relative.db
//
// The Store comes from Open, with DefaultBucket and DefaultTimeout: it owns
// the file and closes it in Close.
func init() { store.Register("bolt", openURL) }

// openURL is the store.OpenFunc of bolt:.
func openURL(_ context.Context, u *url.URL) (store.Store, error) {
	path := u.Opaque
	if path == "" {
		path = u.Host + u.Path // bolt:/abs, bolt://rel, bolt:///abs
	}
	if u.User != nil || u.RawQuery != "" {
		return nil, errors.New("boltstore: want bolt:PATH, with no user part or query")
	}
	if path == "" {
		return nil, errors.New("boltstore: bolt: needs a file path, as in bolt:/var/lib/wechatconf/wechatconf.db")
	}
	return Open(path)
}
