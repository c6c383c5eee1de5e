package conf_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/wxcrypto"
)

// sealedAt builds a request as WeChat would have pushed it at t.
func sealedAt(t *testing.T, mode wxcrypto.Mode, at time.Time) (map[string][]string, []byte) {
	t.Helper()
	wechat, err := wxcrypto.New(mode, "tok1", aesKey1, "wx1", wxcrypto.WithClock(func() time.Time { return at }))
	if err != nil {
		t.Fatal(err)
	}
	q, body, err := wechat.SealRequest("gh_1", []byte("<xml><Content>hi</Content></xml>"))
	if err != nil {
		t.Fatal(err)
	}
	return q, body
}

// Issue #11: a message stamped in 2001 was accepted three times through
// conf.Crypto(), and conf had no way to turn the replay window on.
func TestCryptoRefusesReplaysByDefault(t *testing.T) {
	for _, mode := range []string{"normal", "compatible", "safe"} {
		c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithToken("tok1"), conf.WithEncodingAESKey(aesKey1), conf.WithEncryptMode(mode))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cr, err := c.Crypto()
		if err != nil {
			t.Fatal(err)
		}
		q, body := sealedAt(t, wxcrypto.Mode(mode), time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC))
		for i := range 3 {
			if m, err := cr.Open(q, body); !errors.Is(err, wxcrypto.ErrStaleTimestamp) || m != nil {
				t.Fatalf("%s: replay %d: Open = %v, %v; want ErrStaleTimestamp", mode, i+1, m, err)
			}
		}
		q, body = sealedAt(t, wxcrypto.Mode(mode), time.Now().Add(-time.Minute))
		if _, err := cr.Open(q, body); err != nil {
			t.Fatalf("%s: a minute-old message: %v", mode, err)
		}
	}
}

func TestWithReplayWindow(t *testing.T) {
	halfHour, twoHours := time.Now().Add(-30*time.Minute), time.Now().Add(-2*time.Hour)
	for _, tc := range []struct {
		window            time.Duration
		halfHourOK, twoOK bool
	}{
		{time.Hour, true, false},
		{0, true, true}, // off
		{conf.DefaultReplayWindow, false, false},
	} {
		c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithToken("tok1"), conf.WithEncodingAESKey(aesKey1), conf.WithReplayWindow(tc.window))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cr, _ := c.Crypto()
		for at, ok := range map[time.Time]bool{halfHour: tc.halfHourOK, twoHours: tc.twoOK} {
			q, body := sealedAt(t, wxcrypto.Safe, at)
			_, err := cr.Open(q, body)
			if ok != (err == nil) || err != nil && !errors.Is(err, wxcrypto.ErrStaleTimestamp) {
				t.Errorf("window %v, message %v old: Open = %v", tc.window, time.Since(at).Round(time.Minute), err)
			}
		}
		// The window survives a rebuild of the Crypto (a key rotation).
		if err := c.SetEncodingAESKey(aesKey2); err != nil {
			t.Fatal(err)
		}
		if cr2, _ := c.Crypto(); cr2 == cr || !strings.Contains(cr2.String(), "maxSkew:"+tc.window.String()) {
			t.Errorf("after rotation: %s, want maxSkew %v", cr2, tc.window)
		}
	}
	if _, err := conf.New(conf.WithReplayWindow(-time.Second)); err == nil || !strings.Contains(err.Error(), "WithReplayWindow") {
		t.Fatalf("negative window: %v", err)
	}
}

// syncBuffer is a bytes.Buffer for a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Issue #11: an http:// API base was accepted silently.
func TestInsecureChoicesWarnedOnceAtNew(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []conf.Option
		warns []string
	}{
		{"https", []conf.Option{conf.WithBaseURLs("https://api.weixin.qq.com")}, nil},
		{"loopback", []conf.Option{conf.WithBaseURLs("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:2", "http://a.localhost")}, nil},
		{"plain remote", []conf.Option{conf.WithBaseURLs("https://api.weixin.qq.com", "http://user:hunter2@proxy.example.com:8080/")}, []string{"insecure API base", "host=proxy.example.com:8080"}},
		{"skip verify", []conf.Option{conf.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}})}, []string{"TLS certificates", "not verified"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged syncBuffer
			log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c, err := conf.New(append([]conf.Option{conf.WithAppID("wx1", secret), conf.WithLogger(log)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			out := logged.String()
			if strings.Contains(out, "hunter2") || strings.Contains(out, secret) {
				t.Fatalf("log reveals a secret: %s", out)
			}
			if len(tc.warns) == 0 {
				if strings.Contains(out, "insecure") {
					t.Fatalf("unexpected warning: %s", out)
				}
				return
			}
			if n := strings.Count(out, "level=WARN"); n != 1 {
				t.Fatalf("%d warnings, want 1: %s", n, out)
			}
			for _, w := range tc.warns {
				if !strings.Contains(out, w) {
					t.Errorf("warning lacks %q: %s", w, out)
				}
			}
		})
	}
}

// Two nodes sharing a replay cache: a message one opened is a replay on
// the other, also after a key rotation rebuilt the Crypto.
func TestWithReplayCacheSharedByNodes(t *testing.T) {
	rc := wxcrypto.NewMemoryReplayCache()
	var nodes [2]*wxcrypto.Crypto
	for i := range nodes {
		c, err := conf.New(conf.WithAppID("wx1", secret), conf.WithToken("tok1"), conf.WithEncodingAESKey(aesKey1), conf.WithReplayCache(rc))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i == 1 {
			if err := c.SetEncodingAESKey(aesKey1); err != nil { // a rebuild, same key
				t.Fatal(err)
			}
		}
		if nodes[i], err = c.Crypto(); err != nil {
			t.Fatal(err)
		}
	}
	q, body := sealedAt(t, wxcrypto.Safe, time.Now())
	if _, err := nodes[0].Open(q, body); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Open(q, body); !errors.Is(err, wxcrypto.ErrReplay) {
		t.Fatalf("replay on the other node: %v, want ErrReplay", err)
	}
	if _, err := conf.New(conf.WithReplayCache(nil)); err == nil {
		t.Fatal("nil cache accepted")
	}
}

// Seen: WithBaseURLs quoted a refused URL whole, user part and all.
func TestWithBaseURLsNeverQuotesAPassword(t *testing.T) {
	for _, u := range []string{"https://u:hunter2@host?x=1", "https://u:hunter2@host#f", "ftp://u:hunter2@host", "://u:hunter2@", "https://u:hunter2@"} {
		_, err := conf.New(conf.WithBaseURLs(u))
		if err == nil {
			t.Fatalf("%s accepted", "URL with a password")
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error quotes the password: %v", err)
		}
	}
}
