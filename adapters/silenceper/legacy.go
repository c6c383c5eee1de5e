package silenceper

import (
	"context"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
)

// Legacy names one app's entries in silenceper's own cache, the one its
// default handles (credential.NewDefaultAccessToken, NewStableAccessToken,
// NewDefaultJsTicket) read and write: the cache.Cache given in silenceper's
// config.Config, usually Redis or Memcached shared by the old nodes.
type Legacy struct {
	// Cache is silenceper's cache (config.Config.Cache).
	Cache cache.Cache
	// Prefix is the cache key prefix: credential.CacheKeyOfficialAccountPrefix
	// (the default when empty) or credential.CacheKeyMiniProgramPrefix.
	Prefix string
	// AppID is the app's AppID.
	AppID string
	// Stable is config.Config.UseStableAK: the old nodes use
	// /cgi-bin/stable_token, and so must the Conf (conf.WithStableToken).
	Stable bool
}

// What silenceper's default handles cut off the expires_in WeChat gives
// when they cache a credential: while its entry exists, a credential is
// valid for at least this much longer.
const (
	legacyTokenCut  = 1500 * time.Second // classic tokens and tickets
	legacyStableCut = 300 * time.Second  // stable tokens
)

func (l Legacy) prefix() string {
	if l.Prefix == "" {
		return credential.CacheKeyOfficialAccountPrefix
	}
	return l.Prefix
}

// TokenKey returns the key under which silenceper caches the access token,
// such as "gowechat_officialaccount__access_token_<appid>" (silenceper's
// prefix ends with an underscore and its format adds one more).
func (l Legacy) TokenKey() string {
	if l.Stable {
		return l.prefix() + "_stable_access_token_" + l.AppID
	}
	return l.prefix() + "_access_token_" + l.AppID
}

// TicketKey returns the key under which silenceper caches the JS-SDK
// ticket, such as "gowechat_officialaccount__jsapi_ticket_<appid>".
func (l Legacy) TicketKey() string {
	return l.prefix() + "_jsapi_ticket_" + l.AppID
}

// SeedOptions reads silenceper's cache once and returns conf options
// (conf.WithAccessToken, conf.WithJSAPITicket) that seed a Conf with the
// credentials the old nodes use, so that switching a node to a Handle makes
// no grant: add them to conf.New's options. silenceper's cache does not say
// when a credential expires, only that its entry is there; silenceper caches
// for expires_in less 1500 s (300 s for stable tokens), so a credential
// whose entry exists lives at least that much longer, and that is the
// expiry seeded. The Conf replaces the seed that much early, which is
// safe; a newer credential already in the Conf's store wins over the seed.
// (An entry that WithMirror wrote may have less left: should the Conf's store
// be empty and WeChat answer 42001 on the seed, Transport or Do report it and
// the Conf grants once.)
// Entries that are absent or not strings give no option.
func (l Legacy) SeedOptions() []conf.Option {
	var opts []conf.Option
	cut := legacyTokenCut
	if l.Stable {
		cut = legacyStableCut
	}
	t := now()
	if v := l.get(l.TokenKey()); v != "" {
		opts = append(opts, conf.WithAccessToken(v, t.Add(cut)))
	}
	if v := l.get(l.TicketKey()); v != "" {
		opts = append(opts, conf.WithJSAPITicket(v, t.Add(legacyTokenCut)))
	}
	return opts
}

func (l Legacy) get(key string) string {
	if l.Cache == nil {
		return ""
	}
	s, _ := cache.GetContext(context.Background(), l.Cache, key).(string)
	return s
}

// mirrorSlack is taken off a mirrored entry's lifetime, so that an old node
// never reads a credential in its last seconds.
const mirrorSlack = 30 * time.Second

// put writes item to silenceper's cache under key, to live until the
// credential's expiry less mirrorSlack. A failed write is not an error of
// the caller's call: the old nodes keep their own credential, and the
// compare-then-refresh of the Conf settles any disagreement.
func (l *Legacy) put(ctx context.Context, key string, item store.Item) {
	if l.Cache == nil {
		return
	}
	ttl := item.ExpiresAt.Sub(now()) - mirrorSlack
	if ttl <= 0 {
		return
	}
	_ = cache.SetContext(ctx, l.Cache, key, item.Value, ttl)
}
