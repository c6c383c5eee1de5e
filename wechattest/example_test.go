package wechattest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/wechatconf/wechatconf/wechattest"
)

// fetchToken is what the code under test would do: GET /cgi-bin/token.
func fetchToken(base string) (token string, errcode int, err error) {
	q := url.Values{
		"grant_type": {"client_credential"},
		"appid":      {wechattest.DefaultAppID},
		"secret":     {wechattest.DefaultAppSecret},
	}
	resp, err := http.Get(base + "/cgi-bin/token?" + q.Encode())
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Errcode     int    `json:"errcode"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", 0, fmt.Errorf("decoding the answer: %w", err)
	}
	return body.AccessToken, body.Errcode, nil
}

// A test starts a Server, points the code under test at its URL and checks
// what the platform saw. In a test, use t.Cleanup(srv.Close).
func Example() {
	srv := wechattest.NewServer()
	defer srv.Close()

	token, errcode, err := fetchToken(srv.URL())
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("errcode:", errcode)
	fmt.Println("token accepted:", srv.Valid(token))
	fmt.Println("grants:", srv.Stats().TokenGrants)
	// Output:
	// errcode: 0
	// token accepted: true
	// grants: 1
}

// FailNext makes the platform misbehave for a while: here it is busy once,
// then answers garbage once, then recovers.
func ExampleFake_FailNext() {
	srv := wechattest.NewServer()
	defer srv.Close()
	srv.FailNext(1, wechattest.Busy())
	srv.FailNext(1, wechattest.Malformed())

	_, errcode, _ := fetchToken(srv.URL())
	fmt.Println("first errcode:", errcode)
	_, _, err := fetchToken(srv.URL())
	fmt.Println("second fails:", err != nil)
	token, _, _ := fetchToken(srv.URL())
	fmt.Println("third works:", srv.Valid(token))
	// Output:
	// first errcode: -1
	// second fails: true
	// third works: true
}

// A shared Clock moves the Fake (and the code under test) through time
// without sleeping: another client's grant leaves our token five minutes to
// live.
func ExampleFake_GrantElsewhere() {
	clock := wechattest.NewClock(time.Time{})
	srv := wechattest.NewServer(wechattest.WithClock(clock.Now))
	defer srv.Close()

	mine, _, _ := fetchToken(srv.URL())
	srv.GrantElsewhere(wechattest.DefaultAppID)
	fmt.Println("within grace:", srv.Valid(mine))
	clock.Advance(5 * time.Minute)
	fmt.Println("after grace:", srv.Valid(mine))
	fmt.Println("external grants:", srv.Stats().ExternalGrants)
	// Output:
	// within grace: true
	// after grace: false
	// external grants: 1
}

// Tokens expire after their TTL by the Fake's clock.
func ExampleWithClock() {
	clock := wechattest.NewClock(time.Time{})
	srv := wechattest.NewServer(wechattest.WithClock(clock.Now), wechattest.WithTokenTTL(time.Hour))
	defer srv.Close()

	token, _, _ := fetchToken(srv.URL())
	clock.Advance(59 * time.Minute)
	fmt.Println(srv.Valid(token))
	clock.Advance(time.Minute)
	fmt.Println(srv.Valid(token))
	// Output:
	// true
	// false
}
