// Package secret hides secrets in what this module prints. It is internal
// because no user needs it: package store's Item and package conf call it
// so that a token or a key never reaches a log by accident, and the module's
// tests (integration included) use it to describe a value they compare.
//
// It is named secret, not redact, so that package conf can keep its own
// small redact helper without an import alias.
package secret

import "fmt"

// Redact returns a placeholder that tells whether s is empty and how long it
// is, but nothing of its content.
func Redact(s string) string {
	if s == "" {
		return `""`
	}
	return fmt.Sprintf("<redacted %d bytes>", len(s))
}
