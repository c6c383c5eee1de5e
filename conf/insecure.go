package conf

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// warnInsecure logs, once at New, each choice that exposes the AppSecret or
// the credentials on the wire: a plain-HTTP API base other than this
// machine (the AppSecret travels in its query), and an HTTP client that
// does not verify TLS certificates. Both are allowed (a proxy on a private
// network, a test fake), never silent.
func warnInsecure(cfg *config) {
	ctx := context.Background()
	for _, base := range cfg.bases {
		if host, ok := plainRemote(base); ok {
			cfg.logger.LogAttrs(ctx, slog.LevelWarn, "wechatconf: insecure API base: plain HTTP to a host other than this machine; the AppSecret and the credentials travel unencrypted (use https://)",
				slog.String("host", host))
		}
	}
	if t, ok := cfg.client.Transport.(*http.Transport); ok && t.TLSClientConfig != nil && t.TLSClientConfig.InsecureSkipVerify {
		cfg.logger.LogAttrs(ctx, slog.LevelWarn, "wechatconf: insecure HTTP client: TLS certificates of the WeChat API are not verified (InsecureSkipVerify)")
	}
}

// plainRemote reports whether base is an http:// URL whose host is not a
// loopback address, and returns that host (without any user part).
func plainRemote(base string) (string, bool) {
	u, err := url.Parse(base)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return "", false
	}
	return u.Host, !isLoopback(u.Hostname())
}

// isLoopback reports whether host names this machine: localhost (and its
// subdomains, which resolve to loopback by RFC 6761) or a loopback IP.
func isLoopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
