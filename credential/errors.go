package credential

import "errors"

// ErrClosed is returned by every method of a Keeper after Close.
var ErrClosed = errors.New("credential: closed")

// ErrUnavailable is returned when no valid credential could be obtained in
// time: a refresh-only node found none in the store, waiting for another
// node's grant ran past its bound, or the store failed and a grant without
// its lease was not allowed.
var ErrUnavailable = errors.New("credential: no valid credential available")
