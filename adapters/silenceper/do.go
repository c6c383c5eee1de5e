package silenceper

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/silenceper/wechat/v2/util"

	"github.com/wechatconf/wechatconf/conf"
)

// Do runs fn, a call of silenceper's API that uses h's access token, and
// reports a rejection: if fn's error says WeChat found the token invalid or
// expired (IsRejected), the token is invalidated compare-then-refresh and fn
// runs once more. It is the alternative to Transport for code that cannot
// replace util.DefaultHTTPClient; calls that do not go through Do are not
// reported.
//
//	err := silenceper.Do(ctx, h, func() error {
//		_, err := oa.GetBasic().GetCallbackIP()
//		return err
//	})
//
// The token reported is the one the Conf gives just before fn runs; if the
// Conf moved to a newer one while fn ran, fn used the newer one, and the
// report finds the store no longer holding the older one and grants nothing.
func Do(ctx context.Context, h *Handle, fn func() error) error {
	tok, err := h.GetAccessTokenContext(ctx)
	if err != nil {
		return err
	}
	err = fn()
	if err == nil || !IsRejected(err) {
		return err
	}
	fresh, ierr := h.c.Invalidate(ctx, conf.AccessToken, tok)
	if ierr != nil {
		return fmt.Errorf("%w (and no replacement: %w)", err, ierr)
	}
	h.handedOut(ctx, fresh)
	return fn()
}

// errcodeText finds the errcode in the errors silenceper builds with
// fmt.Errorf ("getTicket Error : errcode=40001 , errmsg=..."), which carry
// no type to match.
var errcodeText = regexp.MustCompile(`errcode=(-?\d+)`)

// IsRejected reports whether err, from a silenceper call, says WeChat
// rejected the access token as invalid or expired: errcode 40001, 40014 or
// 42001, in a *util.CommonError (most of silenceper's APIs), in the text of
// the errors silenceper formats itself (its ticket calls), or in a
// wechatconf error (conf.ErrTokenInvalid).
func IsRejected(err error) bool {
	if err == nil {
		return false
	}
	var ce *util.CommonError
	if errors.As(err, &ce) {
		return conf.IsInvalidCredentialCode(int(ce.ErrCode))
	}
	if errors.Is(err, conf.ErrTokenInvalid) {
		return true
	}
	if m := errcodeText.FindStringSubmatch(err.Error()); m != nil {
		code, cerr := strconv.Atoi(m[1])
		return cerr == nil && conf.IsInvalidCredentialCode(code)
	}
	return false
}
