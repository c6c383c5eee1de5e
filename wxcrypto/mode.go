package wxcrypto

import (
	"fmt"
	"strings"
)

// Mode is the encrypt mode chosen in the WeChat console (消息加解密方式). It
// must match the console, or messages are refused with ErrModeMismatch.
type Mode string

// The three encrypt modes WeChat defines.
const (
	// Normal (明文模式): messages travel in plaintext.
	Normal Mode = "normal"
	// Compatible (兼容模式): each message carries its plaintext and an
	// encrypted copy; the encrypted copy is the one trusted.
	Compatible Mode = "compatible"
	// Safe (安全模式): every message is encrypted. The recommended mode.
	Safe Mode = "safe"
)

// ParseMode turns a configuration value into a Mode. It ignores case and
// surrounding spaces, so "Safe" from a config file works; anything else is
// an error that names the bad value and wraps ErrUnknownMode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case Normal, Compatible, Safe:
		return m, nil
	}
	return "", fmt.Errorf("wxcrypto: parse mode: %w %q (want normal, compatible or safe)", ErrUnknownMode, s)
}

func (m Mode) valid() bool { return m == Normal || m == Compatible || m == Safe }
