package wechattest

import (
	"fmt"
	"net/http"
)

type faultKind int

const (
	faultBusy faultKind = iota // the zero Fault is Busy
	faultHTTPStatus
	faultMalformed
	faultErrcode
	faultLostAnswer
)

// Fault is a way for a credential request to fail, injected with
// Fake.FailNext or WeCom.FailNext. Build one with Busy, HTTPStatus, Malformed or Errcode; the
// zero Fault behaves as Busy().
type Fault struct {
	kind   faultKind
	status int
	code   int
	msg    string
}

// malformedBody is what Malformed answers: JSON cut short, as when a proxy
// drops the connection mid-body. It holds no credential.
const malformedBody = `{"errcode":0,"errmsg":"ok","access_tok`

// Busy answers errcode -1, WeChat's "system busy, try again": the one error
// a client should retry with backoff.
func Busy() Fault { return Fault{kind: faultBusy} }

// HTTPStatus answers the given HTTP status with a plain-text body, as a load
// balancer or gateway in front of WeChat might (502, 503, 504). A status
// outside 200–599 becomes 500, since net/http cannot send it.
func HTTPStatus(code int) Fault {
	if code < 200 || code > 599 {
		code = http.StatusInternalServerError
	}
	return Fault{kind: faultHTTPStatus, status: code}
}

// Malformed answers HTTP 200, Content-Type application/json, with a body that
// is not valid JSON: a client must report it and cache nothing.
func Malformed() Fault { return Fault{kind: faultMalformed} }

// Errcode answers HTTP 200 with {"errcode":code,"errmsg":msg}: any platform
// error the Fake does not model by itself (40164 IP not whitelisted, 40243
// secret frozen, 45009 quota, ...). Errcode(0, "ok") yields a "success" with
// no credential in it, another shape a client must refuse.
func Errcode(code int, msg string) Fault { return Fault{kind: faultErrcode, code: code, msg: msg} }

// LostAnswer grants the credential as usual, then answers HTTP 502 instead
// of returning it, as when a gateway drops WeChat's answer: the grant counts
// (and replaces the previous credential under the grace rule), but the
// client never learns the new value.
func LostAnswer() Fault { return Fault{kind: faultLostAnswer} }

// String describes the fault for test failure messages.
func (f Fault) String() string {
	switch f.kind {
	case faultHTTPStatus:
		return fmt.Sprintf("wechattest.HTTPStatus(%d)", f.status)
	case faultMalformed:
		return "wechattest.Malformed()"
	case faultErrcode:
		return fmt.Sprintf("wechattest.Errcode(%d, %q)", f.code, f.msg)
	case faultLostAnswer:
		return "wechattest.LostAnswer()"
	default:
		return "wechattest.Busy()"
	}
}

// write answers the request the way the fault says.
func (f Fault) write(w http.ResponseWriter) {
	switch f.kind {
	case faultHTTPStatus:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(f.status)
		fmt.Fprintf(w, "wechattest: injected HTTP %d\n", f.status)
	case faultMalformed:
		w.Header().Set("Content-Type", contentTypeJSON)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(malformedBody))
	case faultErrcode:
		writeJSON(w, http.StatusOK, errorBody{Errcode: f.code, Errmsg: f.msg})
	case faultLostAnswer:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintln(w, "wechattest: injected lost answer")
	default:
		writeJSON(w, http.StatusOK, errorBody{Errcode: CodeBusy, Errmsg: msgBusy})
	}
}
