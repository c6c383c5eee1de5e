package main

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wechatconf/wechatconf/store"
)

// noWait is the context of serveCredential's first try: already done, so
// that the Conf answers from its local copy or returns errNoWait instead of
// waiting. It carries no values (serve installs none), and being a
// zero-size value it costs no allocation as a context.Context.
var noWait context.Context = noWaitContext{}

// errNoWait is noWait's Err. It is context.Canceled for errors.Is, as the
// context contract asks, and tells serveCredential that the Conf would
// have waited.
var errNoWait error = noWaitError{}

// closedChan is noWait's Done channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

type noWaitContext struct{}

func (noWaitContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (noWaitContext) Done() <-chan struct{}       { return closedChan }
func (noWaitContext) Err() error                  { return errNoWait }
func (noWaitContext) Value(any) any               { return nil }

type noWaitError struct{}

func (noWaitError) Error() string        { return "context canceled (no wait)" }
func (noWaitError) Is(target error) bool { return target == context.Canceled }

// The header values of every JSON answer. The slices are shared by all
// answers (assigned, not Set, which would allocate one per answer); their
// capacity equals their length, so an Add elsewhere copies instead of
// writing into them.
var (
	contentTypeJSON = []string{"application/json"}[:1:1]
	cacheNoStore    = []string{"no-store"}[:1:1]
)

// setJSONHeaders sets the headers of a JSON answer. The keys are in
// canonical form already.
func setJSONHeaders(h http.Header) {
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = cacheNoStore
}

// statusResponse is the answer of /healthz and /readyz.
type statusResponse struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// bufPool holds the buffers credential answers are appended into.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooled is the largest buffer put back into bufPool.
const maxPooled = 4 << 10

// writeCredential answers item of kind with 200 at now and returns the
// status. The body is byte for byte what encoding/json writes for toResponse's
// value (SetEscapeHTML(false), then a newline), appended by hand; a value
// that would need escaping, which WeChat never sends, goes through
// encoding/json itself.
func writeCredential(w http.ResponseWriter, a *app, kind credKind, item store.Item, now time.Time) int {
	if !a.plainValue(kind, item.Value) {
		return writeJSON(w, http.StatusOK, toResponseAt(kind, item, now))
	}
	bp := bufPool.Get().(*[]byte)
	b := appendCredential((*bp)[:0], kind, item, now)
	setJSONHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	if cap(b) <= maxPooled {
		*bp = b
		bufPool.Put(bp)
	}
	return http.StatusOK
}

// appendCredential appends the JSON of toResponse(kind, item) at now;
// item.Value must be plainJSON.
func appendCredential(b []byte, kind credKind, item store.Item, now time.Time) []byte {
	b = append(b, '{')
	if item.Value != "" { // omitempty
		if kind == credAccessToken {
			b = append(b, `"access_token":"`...)
		} else {
			b = append(b, `"ticket":"`...)
		}
		b = append(b, item.Value...)
		b = append(b, `",`...)
	}
	if kind != credAccessToken {
		b = append(b, `"type":"`...)
		b = append(b, ticketTypes[kind]...)
		b = append(b, `",`...)
	}
	b = append(b, `"expires_at":`...)
	b = strconv.AppendInt(b, item.ExpiresAt.Unix(), 10)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, int64(max(item.ExpiresAt.Sub(now), 0)/time.Second), 10)
	return append(b, "}\n"...)
}

// plainValue is plainJSON(v), remembered for the last plain value of
// kind. Comparing v with that value is a pointer comparison when, as on
// the hot path, both are the engine's one local copy. A nil app remembers
// nothing.
func (a *app) plainValue(kind credKind, v string) bool {
	if a == nil || kind >= numCredKinds {
		return plainJSON(v)
	}
	if p := a.plain[kind].Load(); p != nil && *p == v {
		return true
	}
	if !plainJSON(v) {
		return false
	}
	found := v // a copy of its own, so that only this branch allocates
	a.plain[kind].Store(&found)
	return true
}

// plainJSON reports whether s is printable ASCII that JSON strings hold
// unescaped (no quote, no backslash).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
