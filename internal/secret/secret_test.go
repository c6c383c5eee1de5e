package secret

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	if got := Redact(""); got != `""` {
		t.Errorf(`Redact("") = %s, want ""`, got)
	}
	got := Redact("SECRET-TOKEN")
	if strings.Contains(got, "SECRET") || got != "<redacted 12 bytes>" {
		t.Errorf("Redact(SECRET-TOKEN) = %s, want <redacted 12 bytes>", got)
	}
}
