package credential_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
)

// A Keeper for a credential of your own: a store key, a grant function and
// a policy. Every process that shares the store shares the credential, and
// one of them grants it.
func Example() {
	shared := store.NewMemory() // in production: redisstore, pgstore, ...
	grants := 0
	newNode := func() *credential.Keeper {
		k, err := credential.New(credential.Config{
			Name:  "my_token",
			Key:   "{my-app}:my_token",
			Store: shared,
			Grant: func(ctx context.Context, r credential.Request) (credential.Grant, error) {
				grants++ // call WeChat here
				return credential.Grant{Item: store.Item{Value: "T1", ExpiresAt: time.Now().Add(2 * time.Hour)}}, nil
			},
		})
		if err != nil {
			log.Fatal(err)
		}
		return k
	}
	a, b := newNode(), newNode()
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	ta, _ := a.Get(ctx)
	tb, _ := b.Get(ctx)
	fmt.Println(ta.Value == tb.Value, grants)
	// Output: true 1
}

// Do calls WeChat with the credential and, when the policy says WeChat
// rejected it, replaces it (compare-then-refresh) and calls once more.
func ExampleDo() {
	n := 0
	k, err := credential.New(credential.Config{
		Name: "my_token", Key: "{my-app}:my_token", Store: store.NewMemory(),
		Grant: func(context.Context, credential.Request) (credential.Grant, error) {
			n++
			return credential.Grant{Item: store.Item{Value: fmt.Sprint("T", n), ExpiresAt: time.Now().Add(2 * time.Hour)}}, nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	errRejected := errors.New("errcode 40014")
	invalid := func(err error) bool { return errors.Is(err, errRejected) }
	err = credential.Do(context.Background(), k, invalid, func(tok string) error {
		fmt.Println("called with", tok)
		if tok == "T1" {
			return errRejected // WeChat: invalid access_token
		}
		return nil
	})
	fmt.Println(err)
	// Output:
	// called with T1
	// called with T2
	// <nil>
}
