// Package wechattest is an in-process fake of WeChat's credential API, for
// tests that must see how a client behaves against the platform's rules
// without reaching api.weixin.qq.com: how many grants it makes, whether it
// survives a token being replaced by another client, a slow or failing
// platform, a quota running out, or a clock jumping past an expiry.
//
// A Fake is an http.Handler holding all state; a Server puts one behind an
// httptest.Server on 127.0.0.1 so that a real HTTP client can reach it:
//
//	srv := wechattest.NewServer(wechattest.WithClock(clock.Now))
//	defer srv.Close()
//	// point the code under test at srv.URL() instead of https://api.weixin.qq.com
//
// # What is modelled
//
//   - GET /cgi-bin/token?grant_type=client_credential&appid=..&secret=..:
//     each grant issues a new token. The previous one stays valid for the
//     grace window (WithGrace, default five minutes) or until its own
//     expiry, whichever comes first; anything older is invalid at once.
//     Grants per app per day are limited (WithDailyQuota, default 2000;
//     then errcode 45009).
//   - POST /cgi-bin/stable_token with a JSON body: stable tokens are a
//     family of their own, valid beside the classic ones. Without
//     force_refresh the same token is returned, with its remaining
//     expires_in, while more than 300 s remain; at 300 s or less a new one is
//     issued and the old one stays valid until its expiry. With
//     force_refresh a new one is issued, the previous one keeps the grace
//     window, and at most 20 forced refreshes per app per day (45009), 30 s
//     apart (45011), are allowed.
//   - GET /cgi-bin/ticket/getticket?access_token=..&type=jsapi|wx_card: needs
//     a valid classic or stable token (41001 missing, 40001 invalid, 42001
//     expired; 40097 for an unknown type). Each call issues a new ticket of
//     that type; the previous one keeps the grace window, older ones die.
//   - GET /cgi-bin/getcallbackip?access_token=..: one protected call, so that
//     a client's retry-on-40001 path can be exercised.
//   - Errors are HTTP 200 with {"errcode":N,"errmsg":"..."} and Content-Type
//     application/json, like WeChat's. An unknown path is a 404.
//   - Time: every expiry, grace and quota-day decision reads the clock given
//     with WithClock (a Clock from this package, or any func() time.Time), so
//     a test can jump hours ahead in a microsecond. Quota days end at
//     midnight China Standard Time (UTC+8), as WeChat's do.
//   - Bad days, at run time: FailNext injects errcode -1 (busy), any HTTP
//     status, a body that is not JSON, or any errcode; SetLatency slows every
//     credential request (ending early when the request's context is done or
//     the Server is closed); Revoke kills every live credential of an app;
//     GrantElsewhere plays another client that grants a token behind the
//     code under test's back.
//
// # WeCom (企业微信)
//
// NewWeCom (and NewWeComServer) is a second fake, of qyapi.weixin.qq.com,
// with WeCom's rules, which differ from the Official Account's: a corp has
// apps, each with its own secret and token (a contacts-sync or
// customer-contact secret is an app without AgentID); gettoken returns the
// same token while it is valid (remaining expires_in) and a new one only
// after it expired or was revoked (Revoke, RevokeAgent); gettoken and both
// jsapi_tickets are rate-limited (45009; WithGetTokenLimit,
// WithTicketLimit) and concurrency may be (45033; WithWeComMaxConcurrent);
// the corp ticket comes from get_jsapi_ticket, the agent ticket from
// ticket/get?type=agent_config with the app's own token; agent/get answers
// 301002 to a token of another app. FailNext, SetLatency and a shared clock
// (WithWeComClock) work as for the Official Account fake, and
// CallbackURLCheck builds the encrypted URL check WeCom sends to a
// callback URL. NewWeCom's documentation lists every path and errcode.
//
// Tokens and tickets are random (crypto/rand), URL-safe strings as long as
// WeChat's (128 characters for tokens, 86 for tickets), unique per Fake.
//
// # What is not modelled
//
// The IP whitelist (40164), frozen secrets (40243), the stable_token and
// ticket daily quotas other than the forced-refresh limit, the quota-clearing
// API, the "rid" suffix WeChat appends to errmsg, HTTPS, regional domains and
// every API beyond the four paths above. Errcodes that are not modelled can
// still be injected with FailNext(n, Errcode(code, msg)). Older platform
// versions answered a wrong AppSecret with 40001 instead of 40125; inject that
// the same way if the code under test must cope with it.
//
// The Fake writes no logs at all, so secrets, tokens and tickets never reach
// one; error bodies never echo the secret a client sent.
package wechattest
