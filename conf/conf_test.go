package conf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wxcrypto"
)

// Keys shaped like the console's: 43 characters of base64.
const (
	aesKey1 = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	aesKey2 = "HIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwx"
	secret  = "s3cr3t-app-secret-0123456789abcd"
)

func TestNewDefaultsAndValidation(t *testing.T) {
	c, err := conf.New(conf.WithAppID("wx1", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.EncryptMode() != "safe" {
		t.Errorf("default encrypt mode %q, want safe (as the seed)", c.EncryptMode())
	}
	if c.AppID() != "wx1" || c.AppSecret() != secret {
		t.Error("getters do not return the AppID and AppSecret")
	}
	// The default store is in memory: two Confs do not share a token.
	other, err := conf.New(conf.WithAppID("wx1", secret), conf.WithHTTPClient(&httpClientNoNet))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	seeded, err := conf.New(conf.WithAppID("wx1", secret), conf.WithAccessToken("SEEDED", time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	defer seeded.Close()
	if tok, err := seeded.AccessToken(t.Context()); err != nil || tok != "SEEDED" {
		t.Fatalf("seeded Conf: %q, %v", tok, err)
	}
	if _, err := other.AccessToken(t.Context()); err == nil {
		t.Error("a second Conf without WithStore saw the first one's token: the default store is not its own")
	}

	cases := []struct {
		name string
		opts []conf.Option
		want error // nil: any error, checked by text
		text string
	}{
		{"unknown mode", []conf.Option{conf.WithEncryptMode("paranoid")}, wxcrypto.ErrUnknownMode, "paranoid"},
		{"short key", []conf.Option{conf.WithToken("t"), conf.WithAppID("wx1", ""), conf.WithEncodingAESKey("short")}, wxcrypto.ErrKeyLength, "EncodingAESKey"},
		{"bad base64 key", []conf.Option{conf.WithToken("t"), conf.WithAppID("wx1", ""), conf.WithEncodingAESKey(strings.Repeat("!", 43))}, wxcrypto.ErrKeyEncoding, "EncodingAESKey"},
		{"safe key without token", []conf.Option{conf.WithAppID("wx1", ""), conf.WithEncodingAESKey(aesKey1)}, conf.ErrNeedParam, "Token"},
		{"compatible key without appid", []conf.Option{conf.WithEncryptMode("compatible"), conf.WithToken("t"), conf.WithEncodingAESKey(aesKey1)}, conf.ErrNeedParam, "AppID"},
		{"nil store", []conf.Option{conf.WithStore(nil)}, nil, "nil store"},
		{"nil client", []conf.Option{conf.WithHTTPClient(nil)}, nil, "nil client"},
		{"bad base URL", []conf.Option{conf.WithBaseURLs("ftp://x")}, nil, "ftp://x"},
		{"no base URL", []conf.Option{conf.WithBaseURLs()}, nil, "no URL"},
		{"negative margin", []conf.Option{conf.WithMargin(-time.Second)}, nil, "negative"},
		{"zero reread", []conf.Option{conf.WithReread(0)}, nil, "positive"},
		{"tiny lease", []conf.Option{conf.WithLeaseTTL(time.Millisecond)}, nil, "under one second"},
		{"nil logger", []conf.Option{conf.WithLogger(nil)}, nil, "nil logger"},
		{"bad busy retries", []conf.Option{conf.WithBusyRetries(-1, time.Second)}, nil, "WithBusyRetries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := conf.New(tc.opts...)
			if err == nil {
				c.Close()
				t.Fatal("New accepted it")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v does not match %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not name %q", err, tc.text)
			}
		})
	}
	// Normal mode needs no key; a key in normal mode needs no token.
	for _, opts := range [][]conf.Option{
		{conf.WithEncryptMode("normal")},
		{conf.WithEncryptMode("normal"), conf.WithEncodingAESKey(aesKey1)},
	} {
		c, err := conf.New(opts...)
		if err != nil {
			t.Fatalf("normal mode: %v", err)
		}
		c.Close()
	}
}

func TestSettersValidateAndCryptoFollows(t *testing.T) {
	c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithToken("tok1"), conf.WithEncodingAESKey(aesKey1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cr1, err := c.Crypto()
	if err != nil {
		t.Fatal(err)
	}
	if cr1.Mode() != wxcrypto.Safe || cr1.ReceiverID() != "wx1" {
		t.Fatalf("crypto mode %s receiver %s", cr1.Mode(), cr1.ReceiverID())
	}
	sealed, err := cr1.Encrypt([]byte("你好, WeChat"))
	if err != nil {
		t.Fatal(err)
	}

	if err := c.SetEncryptMode("bogus"); !errors.Is(err, wxcrypto.ErrUnknownMode) {
		t.Fatalf("SetEncryptMode(bogus) = %v", err)
	}
	if err := c.SetEncodingAESKey("nope"); !errors.Is(err, wxcrypto.ErrKeyLength) {
		t.Fatalf("SetEncodingAESKey(nope) = %v", err)
	}
	if c.EncryptMode() != "safe" || c.EncodingAESKey() != aesKey1 {
		t.Fatal("a rejected setter changed the settings")
	}
	if err := c.SetEncryptMode("compatible"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetEncodingAESKey(aesKey2); err != nil {
		t.Fatal(err)
	}
	if err := c.SetToken("tok2"); err != nil {
		t.Fatal(err)
	}
	if c.Token() != "tok2" || c.EncodingAESKey() != aesKey2 || c.EncryptMode() != "compatible" {
		t.Fatal("getters do not follow the setters")
	}
	cr2, err := c.Crypto()
	if err != nil {
		t.Fatal(err)
	}
	if cr2 == cr1 || cr2.Mode() != wxcrypto.Compatible {
		t.Fatal("crypto did not follow the new settings")
	}
	// Inside the rotation grace, a message sealed with the old key opens.
	if msg, err := cr2.Decrypt(sealed); err != nil || string(msg) != "你好, WeChat" {
		t.Fatalf("old-key message during rotation: %q, %v", msg, err)
	}
	// The new key works for new messages.
	again, _ := cr2.Encrypt([]byte("x"))
	if msg, err := cr2.Decrypt(again); err != nil || string(msg) != "x" {
		t.Fatalf("new-key round trip: %q, %v", msg, err)
	}
	if err := c.SetToken(""); !errors.Is(err, conf.ErrNeedParam) {
		t.Fatalf("SetToken(\"\") in compatible mode with a key = %v, want ErrNeedParam", err)
	}
}

func TestKeyRotationGraceEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := conf.New(conf.WithAppID("wx1", ""), conf.WithToken("tok"), conf.WithEncodingAESKey(aesKey1), conf.WithKeyRotationGrace(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		old, _ := c.Crypto()
		sealed, _ := old.Encrypt([]byte("hello"))
		if err := c.SetEncodingAESKey(aesKey2); err != nil {
			t.Fatal(err)
		}
		cr, _ := c.Crypto()
		if _, err := cr.Decrypt(sealed); err != nil {
			t.Fatalf("inside the grace: %v", err)
		}
		time.Sleep(time.Minute)
		cr, _ = c.Crypto()
		if _, err := cr.Decrypt(sealed); err == nil {
			t.Fatal("the old key still works after the grace")
		}
	})
}

func TestCryptoNeedsKeyInSafeMode(t *testing.T) {
	c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Crypto(); !errors.Is(err, conf.ErrNeedParam) || !errors.Is(err, wxcrypto.ErrNoKey) {
		t.Fatalf("safe mode without key: %v", err)
	}
	if err := c.SetEncryptMode("normal"); err != nil {
		t.Fatal(err)
	}
	cr, err := c.Crypto()
	if err != nil || cr.Mode() != wxcrypto.Normal {
		t.Fatalf("normal mode: %v, %v", cr, err)
	}
}

func TestSettersAreSafeUnderConcurrency(t *testing.T) {
	c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithToken("t0"), conf.WithEncodingAESKey(aesKey1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				switch (i + j) % 4 {
				case 0:
					_ = c.SetToken(fmt.Sprintf("t%d", j))
				case 1:
					_ = c.SetEncodingAESKey([]string{aesKey1, aesKey2}[j%2])
				case 2:
					_ = c.SetEncryptMode([]string{"safe", "compatible", "normal"}[j%3])
				default:
					cr, err := c.Crypto()
					if err != nil {
						t.Errorf("Crypto: %v", err)
						return
					}
					if _, err := cr.Encrypt([]byte("m")); err != nil && cr.Mode() != wxcrypto.Normal {
						t.Errorf("Encrypt: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestSecretsNeverPrinted(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fake := wechattest.New(wechattest.WithApp("wx1", secret))
	c, err := conf.New(
		conf.WithAppID("wx1", secret), conf.WithToken("server-token-xyz"), conf.WithEncodingAESKey(aesKey1),
		conf.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(fake)}), conf.WithBaseURLs("http://wechat.test"),
		conf.WithLogger(logger),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok, err := c.AccessToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.GrantAccessToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	item, _ := c.GetAccessToken(t.Context())
	logger.Info("printing", "conf", c, "item", item)
	cr, _ := c.Crypto()
	printed := strings.Join([]string{
		c.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v", c, r, r), fmt.Sprintf("%v %#v", item, item), cr.String(), logs.String(),
	}, "\n")
	for name, s := range map[string]string{"secret": secret, "token": "server-token-xyz", "aes key": aesKey1, "access token": tok, "granted token": r.AccessToken} {
		if strings.Contains(printed, s) {
			t.Errorf("the %s was printed:\n%s", name, printed)
		}
	}
	if !strings.Contains(logs.String(), "granted") {
		t.Errorf("the debug log does not mention the grant:\n%s", logs.String())
	}
	if !strings.Contains(c.String(), "wx1") {
		t.Error("String should show the AppID")
	}
}

func TestErrorsNeverCarrySecret(t *testing.T) {
	// A host that refuses connections: net/http's error names the URL,
	// which holds the secret in its query.
	c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithBaseURLs("http://127.0.0.1:1"), conf.WithBusyRetries(0, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.AccessToken(t.Context())
	if err == nil {
		t.Fatal("expected a connection error")
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "secret=") {
		t.Fatalf("error carries the secret: %v", err)
	}
	if !strings.Contains(err.Error(), "/cgi-bin/token") {
		t.Fatalf("error does not say what failed: %v", err)
	}
}

func TestObserverSeesGrantAndLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := wechattest.New()
		st := store.NewMemory()
		var ea, eb events
		a := node(t, fake, st, conf.WithObserver(ea.observe))
		b := node(t, fake, st, conf.WithObserver(eb.observe))
		if _, err := a.AccessToken(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := b.AccessToken(context.Background()); err != nil {
			t.Fatal(err)
		}
		if ea.count(conf.EventGranted) != 1 || eb.count(conf.EventGranted) != 0 || eb.count(conf.EventLoaded) != 1 {
			t.Fatalf("a: %v, b: %v", ea.n, eb.n)
		}
		for _, et := range []conf.EventType{conf.EventGranted, conf.EventGrantFailed, conf.EventLoaded, conf.EventLeaseWaited, conf.EventInvalidated, conf.EventStoreError} {
			if et.String() == "unknown" {
				t.Errorf("event %d has no name", et)
			}
		}
	})
}

func TestKindsAndKeys(t *testing.T) {
	want := map[conf.Kind]string{conf.AccessToken: "{wx9}:access_token", conf.JSAPITicket: "{wx9}:jsapi_ticket", conf.WXCardTicket: "{wx9}:wx_card_ticket"}
	for k, key := range want {
		if got := conf.Key("wx9", k); got != key {
			t.Errorf("Key(%s) = %q, want %q", k, got, key)
		}
	}
	c, _ := conf.New()
	defer c.Close()
	if _, err := c.Credential(context.Background(), conf.Kind(7)); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := c.Invalidate(context.Background(), conf.AccessToken, ""); err == nil {
		t.Error("Invalidate with an empty value accepted")
	}
}
