package store

import (
	"context"
	"errors"
	"time"
)

// GetFunc reads the item stored under key from wherever the user keeps it.
// It reports a missing item by returning ErrNotFound (or a zero Item and a
// nil error); any other error means the place could not be read.
type GetFunc func(ctx context.Context, key string) (Item, error)

// SetFunc writes item under key to wherever the user keeps it.
type SetFunc func(ctx context.Context, key string, item Item) error

// FromFuncs adapts a pair of user functions to a Store. It is the Go form of
// the Python SDK's access_token_getfunc / access_token_setfunc (and the
// jsapi_ticket pair): code that already keeps credentials in its own cache or
// database plugs in here without writing a backend.
//
// Get returns ErrNotFound when get reports ErrNotFound, returns an item with
// no Value, or returns an item that has expired. Any other error from get is
// passed on (wrapped) and is never turned into a miss.
//
// Set calls get first and skips the write when the stored item expires later
// (newer wins) and is Plausible at Set's clock; a stored item with no Value
// or an expiry beyond MaxLifetime+ClockSlack is overwritten. Sets through
// one FromFuncs value take turns, so newer-wins holds among the goroutines
// that share it. Across processes (or FromFuncs values) that
// read-then-write is NOT atomic: between the two calls another node may
// write, and its newer item can be overwritten by an older one. Whether that
// can happen is up to the user's functions; make set itself compare
// expiries (a conditional UPDATE, a CAS) when several nodes share the place.
// If get fails, Set fails without calling set, unless the error matches
// ErrMalformed.
//
// Undecodable records: the adapter never sees the user's bytes, so only get
// can tell that what it read is not an item. It should then return an
// error matching ErrMalformed (fmt.Errorf("%w: ...", store.ErrMalformed)):
// Get passes that on (wrapped, still matching ErrMalformed, never as a
// miss), and Set treats the key as empty and calls set, so the record heals
// at the next grant. A get that returns any other error for such a record
// makes it an outage, and Set fails on it for as long as it is there; a get
// that makes up an item instead is believed, within what Item.Plausible
// lets Set and the refresh engine check. So the adapter guarantees only
// what it can see: empty and implausible items lose newer-wins, and
// ErrMalformed from get is reported and healed.
//
// WARNING: the lease is in-process only. Lock takes a lease inside the Store
// value that FromFuncs returns; it excludes only callers sharing that value.
// It does NOT stop two processes (or two FromFuncs values) from taking a
// lease on the same key at the same time, so with several nodes each of them
// may call WeChat to grant a new credential, and each grant invalidates the
// previous one. Use a backend with a distributed lease (redisstore, pgstore,
// memcachestore) for several nodes. The leases implement Extender; the
// Store does not implement Watcher (it cannot see other processes' writes),
// so waiters poll.
//
// A nil get or set makes the operations that need it fail with an error
// saying so.
func FromFuncs(get GetFunc, set SetFunc) Store {
	return &funcStore{get: get, set: set, setting: make(chan struct{}, 1)}
}

type funcStore struct {
	get    GetFunc
	set    SetFunc
	leases leaseTable
	// setting is held (a value sent) by the Set in progress: a semaphore
	// rather than a mutex, so that a waiting Set gives up with its ctx.
	setting chan struct{}
}

var (
	errNilGet = errors.New("FromFuncs was given a nil GetFunc")
	errNilSet = errors.New("FromFuncs was given a nil SetFunc")
)

func (f *funcStore) Get(ctx context.Context, key string) (Item, error) {
	if err := ctx.Err(); err != nil {
		return Item{}, memErr("get", key, err)
	}
	item, err := f.read(ctx, key)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Item{}, memErr("get", key, ErrNotFound)
		}
		return Item{}, memErr("get", key, err)
	}
	if !time.Now().Before(item.ExpiresAt) {
		return Item{}, memErr("get", key, ErrNotFound)
	}
	return item, nil
}

// read calls the user's get and turns an item without a value into
// ErrNotFound.
func (f *funcStore) read(ctx context.Context, key string) (Item, error) {
	if f.get == nil {
		return Item{}, errNilGet
	}
	item, err := f.get(ctx, key)
	if err != nil {
		return Item{}, err
	}
	if item.Value == "" {
		return Item{}, ErrNotFound
	}
	return item, nil
}

func (f *funcStore) Set(ctx context.Context, key string, item Item) error {
	if err := ctx.Err(); err != nil {
		return memErr("set", key, err)
	}
	if err := checkItem(item); err != nil {
		return memErr("set", key, err)
	}
	if f.set == nil {
		return memErr("set", key, errNilSet)
	}
	select {
	case f.setting <- struct{}{}:
		defer func() { <-f.setting }()
	case <-ctx.Done():
		return memErr("set", key, ctx.Err())
	}
	cur, err := f.read(ctx, key)
	switch {
	case err == nil:
		if cur.Plausible(time.Now()) && cur.Newer(item) {
			return nil
		}
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrMalformed):
		// Nothing there that newer-wins protects: overwrite.
	default:
		// Without the stored item newer-wins cannot be kept: fail rather
		// than risk writing an older grant over a newer one.
		return memErr("set", key, err)
	}
	if err := f.set(ctx, key, item); err != nil {
		return memErr("set", key, err)
	}
	return nil
}

// Lock takes an in-process lease: see the warning on FromFuncs.
func (f *funcStore) Lock(ctx context.Context, key string, ttl time.Duration) (Lease, error) {
	return f.leases.lock(ctx, key, ttl)
}
