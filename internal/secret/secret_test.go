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

func TestURLAndScrub(t *testing.T) {
	const pw = "S3CRETPW"
	for _, raw := range []string{
		"redis://u:" + pw + "@h:6379/0",
		"redis://" + pw + "@h:6379",
		"redis+sentinel://h:26379?master_name=m&password=" + pw,
		"postgres:host=h password='" + pw + "' dbname=d",
		"postgres:host=h password='" + pw,
		"postgres://u:" + pw + "@h/d?sslmode=disable",
		"x://u:" + pw + "/?@h",
		"u:" + pw + "@h",
	} {
		if got := URL(raw); strings.Contains(got, pw) {
			t.Errorf("URL(%q) = %q shows the password", raw, got)
		}
		if got := Scrub("dial "+raw+" failed: "+pw, raw); strings.Contains(got, pw) {
			t.Errorf("Scrub for %q = %q shows the password", raw, got)
		}
	}
	if got := URL("bolt:/var/lib/w.db"); got != "bolt:/var/lib/w.db" {
		t.Errorf("URL of a bolt path = %q, want it as is", got)
	}
}
