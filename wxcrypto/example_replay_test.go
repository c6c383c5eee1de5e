package wxcrypto_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/wechatconf/wechatconf/wxcrypto"
)

// A replay cache refuses a request seen before, even inside the replay
// window. Share one cache among the nodes behind a load balancer (an
// implementation on Redis, say) so that a replay sent to another node is
// refused too.
func ExampleWithReplayCache() {
	cache := wxcrypto.NewMemoryReplayCache()
	c, err := wxcrypto.New(wxcrypto.Safe, token, encodingAESKey, corpID, wxcrypto.WithReplayCache(cache))
	if err != nil {
		log.Fatal(err)
	}
	query, body, _ := c.SealRequest("gh_1", []byte("<xml><Content>hi</Content></xml>")) // as WeChat pushes it

	_, err = c.Open(query, body)
	fmt.Println("first:", err)
	_, err = c.Open(query, body)
	fmt.Println("again:", errors.Is(err, wxcrypto.ErrReplay))
	// Output:
	// first: <nil>
	// again: true
}
