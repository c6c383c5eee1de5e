package conf

import (
	"errors"
	"fmt"

	"github.com/wechatconf/wechatconf/credential"
)

// ErrNeedParam is returned when an operation needs a parameter that was not
// given: a token or ticket asked for without an AppID and AppSecret, or an
// encrypt mode of compatible or safe with an EncodingAESKey but no Token or
// AppID. It is the Go counterpart of the Python seed's NeedParamError; match
// it with errors.Is.
var ErrNeedParam = errors.New("conf: missing parameter")

// ErrTokenInvalid matches WeChat's answers that a credential is invalid or
// expired (errcodes 40001, 40014, 42001 on a call that uses the credential).
// Do and Transport react to it by refreshing and retrying once.
var ErrTokenInvalid = errors.New("conf: credential invalid or expired")

// ErrQuota matches WeChat's quota answers (45009 daily limit, 45011 minute
// limit). They are never retried: every retry spends more of the quota.
var ErrQuota = errors.New("conf: wechat quota reached")

// ErrBusy matches WeChat's "system busy" answer (errcode -1) once the
// bounded retries with backoff are spent.
var ErrBusy = errors.New("conf: wechat busy")

// ErrClosed is returned by every method of a Conf after Close. It is
// credential.ErrClosed.
var ErrClosed = credential.ErrClosed

// ErrUnavailable is returned when no valid credential could be obtained in
// time: a refresh-only node found none in the store, waiting for another
// node's grant ran past its bound, or the store failed and a grant without
// its lease was not allowed. It is credential.ErrUnavailable.
var ErrUnavailable = credential.ErrUnavailable

// ErrRefreshLimited matches the error of an Invalidate or Grant* call
// refused because a refresh of the same credential was forced less than
// WithForcedRefreshInterval ago, on any node sharing the store. The
// credential forced then is current; if WeChat still rejects it, try again
// after RefreshLimitedError.Next. It is credential.ErrRefreshLimited.
var ErrRefreshLimited = credential.ErrRefreshLimited

// RefreshLimitedError is the error of a forced refresh refused by the
// cluster-wide limit; Next says when the next one is allowed.
type RefreshLimitedError = credential.RefreshLimitedError

// APIError is an errcode answer from WeChat. It carries the errcode and
// errmsg, and the endpoint path (never the query: it may hold the secret).
type APIError struct {
	Endpoint string // e.g. "/cgi-bin/token"
	Code     int
	Msg      string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("conf: wechat %s: errcode %d: %s", e.Endpoint, e.Code, e.Msg)
}

// Is makes errors.Is match the sentinel that describes the errcode. On
// /cgi-bin/token itself, 40001 means a wrong AppSecret, not a stale token, so
// it does not match ErrTokenInvalid there.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrTokenInvalid:
		if e.Endpoint == pathToken || e.Endpoint == pathStableToken {
			return false
		}
		return IsInvalidCredentialCode(e.Code)
	case ErrQuota:
		return e.Code == 45009 || e.Code == 45011
	case ErrBusy:
		return e.Code == -1
	}
	return false
}

// IsInvalidCredentialCode reports whether errcode means that the access
// token (or ticket) used by a call is invalid or expired: 40001, 40014 or
// 42001. Callers of other WeChat APIs can map their own answers with it.
func IsInvalidCredentialCode(code int) bool {
	return code == 40001 || code == 40014 || code == 42001
}

// HTTPError is a non-200 HTTP answer from a WeChat API host.
type HTTPError struct {
	Endpoint string
	Status   int
}

// Error implements error.
func (e *HTTPError) Error() string {
	return fmt.Sprintf("conf: wechat %s: HTTP status %d", e.Endpoint, e.Status)
}
