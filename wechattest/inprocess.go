package wechattest

import (
	"net/http"
	"net/http/httptest"
)

// InProcess returns an http.RoundTripper that serves every request with h
// in the calling goroutine: no sockets, so a client of a Fake (or WeCom)
// can run inside a testing/synctest bubble with fake time. A request whose
// context is done before or after h runs fails with the context's error,
// as a real transport's would.
func InProcess(h http.Handler) http.RoundTripper { return inProcess{h} }

type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}
