package main

import hide "github.com/wechatconf/wechatconf/internal/secret"

// The command hides store secrets with internal/secret (imported as hide),
// which store.Open and the backends' URL openers use too, so that every form
// --store takes is masked by one piece of code.

// mask replaces every secret the command hides.
const mask = hide.Mask

// redactURL returns a store location fit for logs and errors, for every
// form a user can type, well-formed or not (see hide.URL).
func redactURL(raw string) string { return hide.URL(raw) }

// splitScheme splits "scheme:rest" when raw starts with a URL scheme;
// scheme is lower case.
func splitScheme(raw string) (scheme, rest string, ok bool) { return hide.SplitScheme(raw) }

// maskQuery masks the values of secret-looking query parameters and any
// fragment.
func maskQuery(s string) string { return hide.MaskQuery(s) }

// parseDSN splits a libpq key=value string; ok is false when the text does
// not follow that shape from off onwards.
func parseDSN(s string) (pairs []hide.DSNPair, off int, ok bool) { return hide.ParseDSN(s) }

// scrub removes every secret of the store location raw from msg.
func scrub(msg, raw string) string { return hide.Scrub(msg, raw) }
