// Package record is the one definition of the string that redisstore and
// memcachestore keep under an item's key: the item's expiry as 19
// zero-padded decimal digits of Unix nanoseconds, then the value as is.
//
//	1767225600123456789ACCESS_TOKEN
//	|   19 digits     ||  value  |
//
// Value and expiry travel in one record, so a reader gets both in one round
// trip and never sees one without the other. The stamp is fixed-width, so
// its first ten digits are the Unix seconds and the next nine the
// nanoseconds: redisstore's Lua script compares stamps that way (Lua's
// numbers are doubles, exact only up to 2^53), so the layout must not change
// without that script.
//
// Expiries from the Unix epoch up to MaxExpiry (early in the year 2262)
// fit. Encode refuses any other, and Decode refuses anything that is not a
// record, with an error and never a panic. Neither error quotes the value:
// records hold credentials.
package record

import (
	"fmt"
	"math"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// StampLen is the length of the expiry stamp that starts every record.
const StampLen = 19

// MaxExpiry is the last expiry a record can hold: Unix nanoseconds in an
// int64.
var MaxExpiry = time.Unix(0, math.MaxInt64)

// minExpiry is the first expiry a record can hold: the stamp has no sign.
var minExpiry = time.Unix(0, 0)

// ErrMalformed is matched (with errors.Is) by Decode's error when the bytes
// are not a record: most likely another program writes under the same
// prefix. It wraps store.ErrMalformed, so Decode's error (and a backend's
// *store.OpError around it) also matches that: the refresh engine treats the
// key as empty, and the next Set overwrites the record.
var ErrMalformed error = malformed{}

// malformed is ErrMalformed's type: its own message, store.ErrMalformed's
// meaning.
type malformed struct{}

func (malformed) Error() string {
	return "malformed record (is another program writing under this prefix?)"
}

func (malformed) Unwrap() error { return store.ErrMalformed }

// Encode returns the record for it: the expiry stamp, then the value. It
// fails, with an error naming the expiry and the bound it crosses, when the
// expiry cannot be written as 19 unsigned digits of Unix nanoseconds.
func Encode(it store.Item) ([]byte, error) {
	switch {
	case it.ExpiresAt.After(MaxExpiry):
		return nil, fmt.Errorf("expiry %s is past the last one a record can hold (%s)",
			it.ExpiresAt.UTC().Format(time.RFC3339), MaxExpiry.UTC().Format(time.RFC3339))
	case it.ExpiresAt.Before(minExpiry):
		return nil, fmt.Errorf("expiry %s is before the first one a record can hold (%s)",
			it.ExpiresAt.UTC().Format(time.RFC3339), minExpiry.UTC().Format(time.RFC3339))
	}
	b := make([]byte, StampLen+len(it.Value))
	n := it.ExpiresAt.UnixNano()
	for i := StampLen - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	copy(b[StampLen:], it.Value)
	return b, nil
}

// Decode parses a record made by Encode. The returned Value shares rec's
// memory (strings are immutable). Anything else gives an error matching
// ErrMalformed that says what is wrong without quoting rec.
func Decode(rec string) (store.Item, error) {
	if len(rec) < StampLen {
		return store.Item{}, fmt.Errorf("%w: %d bytes, fewer than the %d digits of the expiry", ErrMalformed, len(rec), StampLen)
	}
	var n int64
	for i := range StampLen {
		c := rec[i]
		if c < '0' || c > '9' {
			return store.Item{}, fmt.Errorf("%w: byte %d of the expiry is not a decimal digit", ErrMalformed, i)
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return store.Item{}, fmt.Errorf("%w: the expiry is past the last one a record can hold", ErrMalformed)
		}
		n = n*10 + d
	}
	return store.Item{Value: rec[StampLen:], ExpiresAt: time.Unix(0, n)}, nil
}
