package wechattest

import (
	"net/http"
	"net/http/httptest"
	"sync"
)

// Server is a Fake behind a real HTTP listener on 127.0.0.1, for code under
// test that talks HTTP to WeChat: point its base URL at URL(). The embedded
// Fake gives the test its controls (FailNext, Revoke, Stats, ...).
type Server struct {
	*Fake
	ts   *httptest.Server
	once sync.Once
}

// NewServer starts a Fake configured by opts on a free loopback port. Call
// Close when done (t.Cleanup(srv.Close) in a test).
func NewServer(opts ...Option) *Server {
	f := New(opts...)
	return &Server{Fake: f, ts: httptest.NewServer(f)}
}

// URL returns the base URL, such as "http://127.0.0.1:41234", with no
// trailing slash: the stand-in for "https://api.weixin.qq.com".
func (s *Server) URL() string { return s.ts.URL }

// Client returns an HTTP client set up for the server; any client works, as
// the server speaks plain HTTP.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close ends every in-flight latency wait at once (those requests get HTTP
// 503), closes the listener and waits for the handlers to return. It is safe
// to call more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.shutdown()
		s.ts.Close()
	})
}
