package secret

import (
	"net/url"
	"slices"
	"strings"
)

// This file hides the secrets of a store location (--store in the command,
// store.Open in the library) in every form a user can type: URLs with a user
// part or secret-looking query parameters, PostgreSQL key=value DSNs, and
// text of no known shape.

// Mask replaces every secret that URL and Scrub hide.
const Mask = "xxxxx"

// URL returns a store location fit for logs and errors, for every
// form a user can type, well-formed or not: the password of a user part
// (everything between the first ':' after "//" and the last '@'), any query
// parameter or key=value setting whose name looks like a secret, and any
// fragment are masked. It never parses with a library, so that a URL the
// libraries refuse is hidden as well as one they accept; when the shape is
// ambiguous it hides too much rather than too little.
func URL(raw string) string {
	scheme, rest, ok := SplitScheme(raw)
	if !ok {
		return redactLoose(raw)
	}
	switch scheme {
	case "memory", "bolt":
		return raw // a file path is no secret
	}
	if after, ok := strings.CutPrefix(rest, "//"); ok {
		return raw[:len(scheme)] + "://" + redactAuthority(after, isPostgres(scheme))
	}
	if scheme == "postgres" || scheme == "postgresql" {
		return raw[:len(scheme)] + ":" + redactDSN(rest)
	}
	return raw[:len(scheme)] + ":" + redactLoose(rest)
}

// SplitScheme splits "scheme:rest" when raw starts with a URL scheme
// (a letter, then letters, digits, '+', '-' or '.'). scheme is lower case.
func SplitScheme(raw string) (scheme, rest string, ok bool) {
	i := strings.IndexByte(raw, ':')
	if i <= 0 {
		return "", "", false
	}
	for j := 0; j < i; j++ {
		c := raw[j]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case j > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", "", false
		}
	}
	return strings.ToLower(raw[:i]), raw[i+1:], true
}

// isPostgres reports whether scheme is PostgreSQL's, where a user part
// without ':' is a user name. Elsewhere it is taken for a password (some
// Redis clients read redis://PASSWORD@host so) and masked.
func isPostgres(scheme string) bool { return scheme == "postgres" || scheme == "postgresql" }

// redactAuthority masks the part after "//": the user part up to the last
// '@' keeps only the user name (a lone name only if loneUser), and the
// query is masked by MaskQuery.
func redactAuthority(s string, loneUser bool) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return MaskQuery(s)
	}
	user := s[:at]
	masked := Mask
	if i := strings.IndexByte(user, ':'); i >= 0 {
		masked = MaskQuery(user[:i]) + ":" + Mask
	} else if loneUser {
		masked = MaskQuery(user)
	}
	return masked + "@" + MaskQuery(s[at+1:])
}

// MaskQuery masks the values of secret-looking query parameters, in place
// and in order, and any fragment.
func MaskQuery(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i] + "#" + Mask
	}
	q := strings.IndexByte(s, '?')
	if q < 0 {
		return s
	}
	parts := strings.Split(s[q+1:], "&")
	for i, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		if hasValue && secretName(k) {
			parts[i] = k + "=" + Mask
		}
	}
	return s[:q+1] + strings.Join(parts, "&")
}

// secretName reports whether a parameter name (raw or percent-encoded)
// looks like it holds a secret.
func secretName(k string) bool {
	if u, err := url.QueryUnescape(k); err == nil {
		k = u
	}
	k = strings.ToLower(k)
	for _, w := range []string{"pass", "pwd", "secret", "token", "key", "auth", "cred"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// DSNPair is one key=value setting of a PostgreSQL key=value DSN. raw is
// the value as written (quotes and escapes included), value as read.
type DSNPair struct{ Key, Raw, Value string }

// ParseDSN splits a libpq key=value string (spaces between settings, values
// bare with backslash escapes or in single quotes). ok is false when the
// text does not follow that shape from off onwards.
func ParseDSN(s string) (pairs []DSNPair, off int, ok bool) {
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return pairs, i, true
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if key == "" || i == len(s) || s[i] != '=' {
			return pairs, start, false
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		vstart := i
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					v.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return pairs, start, false
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				v.WriteByte(s[i])
				i++
			}
		}
		pairs = append(pairs, DSNPair{Key: key, Raw: s[vstart:i], Value: v.String()})
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// redactDSN masks the secret-looking settings of a key=value DSN. From the
// first spot that does not follow the key=value shape on, everything is
// masked: there is no telling where a password would end.
func redactDSN(s string) string {
	pairs, off, ok := ParseDSN(s)
	out := make([]string, 0, len(pairs)+1)
	for _, p := range pairs {
		v := p.Raw
		if secretName(p.Key) {
			v = Mask
		}
		out = append(out, p.Key+"="+v)
	}
	if !ok && off < len(s) {
		out = append(out, Mask)
	}
	return strings.Join(out, " ")
}

// redactLoose hides what may be secret in text of no known shape: a
// key=value DSN is masked as such, and anything up to the last '@' goes.
func redactLoose(s string) string {
	if strings.Contains(s, "=") {
		return redactDSN(s)
	}
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		return Mask + "@" + MaskQuery(s[at+1:])
	}
	return MaskQuery(s)
}

// storeSecrets lists the secret strings inside a store location, as typed
// and decoded, longest first: the password of the user part (and the pieces
// a parser may cut it into at '/', '?', '#', '@', ':', '&' or '='), the
// values of secret-looking query parameters and DSN settings. A lone user
// name counts as a password, except for PostgreSQL.
func storeSecrets(raw string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if u, err := url.PathUnescape(s); err == nil && u != s {
			out = append(out, u)
		}
		for _, piece := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune("/?#@:&=", r) }) {
			if len(piece) >= 3 && piece != s {
				out = append(out, piece)
			}
		}
	}
	scheme, rest, ok := SplitScheme(raw)
	if !ok {
		rest = raw
	}
	if after, ok := strings.CutPrefix(rest, "//"); ok {
		if at := strings.LastIndexByte(after, '@'); at >= 0 {
			user := after[:at]
			if i := strings.IndexByte(user, ':'); i >= 0 {
				add(user[i+1:])
			} else if !isPostgres(scheme) {
				add(user)
			}
			after = after[at+1:]
		}
		if q := strings.IndexByte(after, '?'); q >= 0 {
			for _, p := range strings.Split(after[q+1:], "&") {
				if k, v, ok := strings.Cut(p, "="); ok && secretName(k) {
					add(v)
					if u, err := url.QueryUnescape(v); err == nil {
						add(u)
					}
				}
			}
		}
		if h := strings.IndexByte(after, '#'); h >= 0 {
			add(after[h+1:])
		}
	} else if strings.Contains(rest, "=") {
		pairs, off, ok := ParseDSN(rest)
		for _, p := range pairs {
			if secretName(p.Key) {
				add(p.Raw)
				add(p.Value)
			}
		}
		if !ok {
			tail := strings.TrimSpace(rest[off:])
			add(tail)
			// An unclosed quote: the value alone, as a parser may quote it.
			if _, v, found := strings.Cut(tail, "="); found {
				add(strings.Trim(strings.TrimSpace(v), "'"))
			}
		}
	} else if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		add(rest[:at])
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// Scrub removes every secret of the store location raw from msg: the text
// of a client library's error, which may quote any part of the URL.
func Scrub(msg, raw string) string {
	for _, s := range storeSecrets(raw) {
		msg = strings.ReplaceAll(msg, s, Mask)
	}
	return msg
}
