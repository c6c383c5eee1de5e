package wechattest

import (
	"net/http"
	"net/http/httptest"
	"sync"
)

// WeComServer is a WeCom fake behind a real HTTP listener on 127.0.0.1:
// point the code under test's base URL at URL() instead of
// https://qyapi.weixin.qq.com. The embedded WeCom gives the test its
// controls (FailNext, Revoke, Stats, CallbackURLCheck, ...).
type WeComServer struct {
	*WeCom
	ts   *httptest.Server
	once sync.Once
}

// NewWeComServer starts a WeCom fake configured by opts on a free loopback
// port. Call Close when done (t.Cleanup(srv.Close) in a test).
func NewWeComServer(opts ...WeComOption) *WeComServer {
	w := NewWeCom(opts...)
	return &WeComServer{WeCom: w, ts: httptest.NewServer(w)}
}

// URL returns the base URL, such as "http://127.0.0.1:41234", with no
// trailing slash.
func (s *WeComServer) URL() string { return s.ts.URL }

// Client returns an HTTP client set up for the server; any client works.
func (s *WeComServer) Client() *http.Client { return s.ts.Client() }

// Close ends every latency wait at once (those requests get HTTP 503),
// closes the listener and waits for the handlers to return. It is safe to
// call more than once.
func (s *WeComServer) Close() {
	s.once.Do(func() {
		s.shutdown()
		s.ts.Close()
	})
}
