package record_test

import (
	"fmt"
	"log"
	"time"

	"github.com/wechatconf/wechatconf/internal/record"
	"github.com/wechatconf/wechatconf/store"
)

// A record is the expiry stamp, then the value; Decode gives the item back.
func Example() {
	exp := time.Unix(1767225600, 123456789)
	rec, err := record.Encode(store.Item{Value: "ACCESS_TOKEN", ExpiresAt: exp})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(rec))

	it, err := record.Decode(string(rec))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(it.Value, it.ExpiresAt.Equal(exp))

	_, err = record.Decode("not a record")
	fmt.Println(err)
	// Output:
	// 1767225600123456789ACCESS_TOKEN
	// ACCESS_TOKEN true
	// malformed record (is another program writing under this prefix?): 12 bytes, fewer than the 19 digits of the expiry
}
