package conf

import (
	"errors"

	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/internal/wxapi"
)

// ErrNeedParam is returned when an operation needs a parameter that was not
// given: a token or ticket asked for without an AppID and AppSecret, or an
// encrypt mode of compatible or safe with an EncodingAESKey but no Token or
// AppID. It is the Go counterpart of the Python seed's NeedParamError; match
// it with errors.Is.
var ErrNeedParam = errors.New("conf: missing parameter")

// ErrTokenInvalid matches WeChat's answers that a credential is invalid or
// expired (errcodes 40001, 40014, 42001 on a call that uses the credential;
// not 40001 on /cgi-bin/token itself, where it means a wrong AppSecret).
// Do and Transport react to it by refreshing and retrying once. wecom uses
// the same sentinel, with WeCom's table.
var ErrTokenInvalid = wxapi.ErrTokenInvalid

// ErrQuota matches WeChat's quota answers (45009 daily limit, 45011 minute
// limit). They are never retried: every retry spends more of the quota.
var ErrQuota = wxapi.ErrQuota

// ErrBusy matches WeChat's "system busy" answer (errcode -1) once the
// bounded retries with backoff are spent.
var ErrBusy = wxapi.ErrBusy

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

// APIError is an errcode answer from WeChat: errcode, errmsg, the endpoint
// path (never the query: it may hold the secret) and the platform that
// answered (the zero value is the Official Account; wecom sets WeCom).
// errors.Is matches ErrTokenInvalid, ErrQuota and ErrBusy by the
// platform's errcode table.
type APIError = wxapi.APIError

// IsInvalidCredentialCode reports whether errcode means that the access
// token (or ticket) used by a call is invalid or expired: 40001, 40014 or
// 42001. Callers of other WeChat APIs can map their own answers with it.
func IsInvalidCredentialCode(code int) bool {
	return wxapi.InvalidCode(wxapi.OfficialAccount, code)
}

// HTTPError is a non-200 HTTP answer from a WeChat API host.
type HTTPError = wxapi.HTTPError
