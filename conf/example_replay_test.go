package conf_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/wxcrypto"
)

// Messages stamped more than the replay window from the clock are refused:
// a captured request cannot be sent again later.
func ExampleWithReplayWindow() {
	const token, key, appID = "tok", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wx1"
	c, err := conf.New(conf.WithAppID(appID, ""), conf.WithToken(token), conf.WithEncodingAESKey(key),
		conf.WithReplayWindow(2*time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	cr, err := c.Crypto()
	if err != nil {
		log.Fatal(err)
	}

	// What WeChat pushed ten minutes ago, replayed now.
	then := func() time.Time { return time.Now().Add(-10 * time.Minute) }
	wechat, _ := wxcrypto.New(wxcrypto.Safe, token, key, appID, wxcrypto.WithClock(then))
	query, body, _ := wechat.SealRequest("gh_1", []byte("<xml><Content>hi</Content></xml>"))
	_, err = cr.Open(query, body)
	fmt.Println(errors.Is(err, wxcrypto.ErrStaleTimestamp))
	// Output: true
}
