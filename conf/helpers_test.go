package conf_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// node returns a Conf for the fake's default app that talks to h in
// process, sharing st.
func node(t testing.TB, h http.Handler, st store.Store, opts ...conf.Option) *conf.Conf {
	t.Helper()
	base := []conf.Option{
		conf.WithAppID(wechattest.DefaultAppID, wechattest.DefaultAppSecret),
		conf.WithHTTPClient(&http.Client{Transport: wechattest.InProcess(h)}),
		conf.WithBaseURLs("http://wechat.test"),
		conf.WithStore(st),
	}
	c, err := conf.New(append(base, opts...)...)
	if err != nil {
		t.Fatalf("conf.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// flakyStore wraps a Store and fails every call while down is set.
type flakyStore struct {
	store.Store
	down  atomic.Bool
	calls atomic.Int64
}

var errDown = errors.New("store is down (injected)")

func (f *flakyStore) Get(ctx context.Context, key string) (store.Item, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return store.Item{}, errDown
	}
	return f.Store.Get(ctx, key)
}

func (f *flakyStore) Set(ctx context.Context, key string, item store.Item) error {
	f.calls.Add(1)
	if f.down.Load() {
		return errDown
	}
	return f.Store.Set(ctx, key, item)
}

func (f *flakyStore) Lock(ctx context.Context, key string, ttl time.Duration) (store.Lease, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return nil, errDown
	}
	return f.Store.Lock(ctx, key, ttl)
}

// events counts observer events by type.
type events struct {
	mu sync.Mutex
	n  map[conf.EventType]int
}

func (e *events) observe(ev conf.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[conf.EventType]int{}
	}
	e.n[ev.Type]++
}

func (e *events) count(t conf.EventType) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[t]
}

// protected calls the fake's getcallbackip with tok and returns WeChat's
// answer as an error (an *conf.APIError) or nil.
func protected(ctx context.Context, h http.Handler, tok string) error {
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/cgi-bin/getcallbackip?access_token="+tok, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := jsonDecode(rec.Body.Bytes(), &body); err != nil {
		return err
	}
	if body.ErrCode != 0 {
		return &conf.APIError{Endpoint: "/cgi-bin/getcallbackip", Code: body.ErrCode, Msg: body.ErrMsg}
	}
	return nil
}

// httpClientNoNet answers 404 to everything, in process.
var httpClientNoNet = http.Client{Transport: wechattest.InProcess(http.NotFoundHandler())}

// wechattestSign computes the JS-SDK signature by the documented recipe,
// independently of wxcrypto.
func wechattestSign(ticket, nonce string, ts int64, pageURL string) string {
	sum := sha1.Sum([]byte("jsapi_ticket=" + ticket + "&noncestr=" + nonce + "&timestamp=" + strconv.FormatInt(ts, 10) + "&url=" + pageURL))
	return hex.EncodeToString(sum[:])
}
