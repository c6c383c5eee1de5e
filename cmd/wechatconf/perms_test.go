package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

// writeFileMode writes content to a new file with mode perm (the umask
// does not apply).
func writeFileMode(t *testing.T, name, content string, perm os.FileMode) string {
	t.Helper()
	p := writeFile(t, name, content)
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue #11: secret and key files with loose permissions (0644, 0666) were
// read without a word. The one-shot commands warn, naming the file and the
// fix; serve refuses unless --allow-loose-perms.
func TestLooseSecretFiles(t *testing.T) {
	fake := newFake(t)
	for _, perm := range []os.FileMode{0o644, 0o666, 0o640, 0o604} {
		path := writeFileMode(t, "secret", secret, perm)
		r := runIn(t, nil, "token", "--appid", appID, "--secret-file", path, "--store", "memory:", "--api-base", fake.URL())
		if r.code != 0 || r.stdout == "" {
			t.Fatalf("%04o: exit %d, stderr %q", perm, r.code, r.stderr)
		}
		l := lines(r.stderr)
		if len(l) != 1 || !strings.Contains(l[0], "warning") || !strings.Contains(l[0], path) || !strings.Contains(l[0], "chmod 600") {
			t.Errorf("%04o: stderr %q, want one warning naming %s and chmod 600", perm, r.stderr, path)
		}
		checkClean(t, r.stderr)
	}
	// 0600 and 0400 say nothing.
	for _, perm := range []os.FileMode{0o600, 0o400} {
		r := runIn(t, nil, "token", "--appid", appID, "--secret-file", writeFileMode(t, "secret", secret, perm), "--store", "memory:", "--api-base", fake.URL())
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%04o: exit %d, stderr %q", perm, r.code, r.stderr)
		}
	}

	const key = "a-server-key-that-is-long-enough"
	goodSecret := writeFile(t, "secret", secret)
	for name, args := range map[string][]string{
		"key file":    {"--secret-file", goodSecret, "--key-file", writeFileMode(t, "key", key, 0o644)},
		"secret file": {"--secret-file", writeFileMode(t, "secret", secret, 0o644), "--key", key},
	} {
		args = append([]string{"serve", "--appid", appID, "--store", "memory:", "--api-base", fake.URL(), "--listen", "127.0.0.1:0"}, args...)
		r := runIn(t, nil, args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "chmod 600") || !strings.Contains(r.stderr, "--allow-loose-perms") {
			t.Errorf("serve, loose %s: exit %d, stderr %q; want a refusal", name, r.code, r.stderr)
		}
		if strings.Contains(r.stderr, key) {
			t.Errorf("serve printed its key")
		}
		checkClean(t, r.stderr)

		// --allow-loose-perms: serve starts, with the warning.
		ctx, cancel := context.WithCancel(context.Background())
		stderr := &watcher{}
		ready := stderr.await(regexp.MustCompile(`addr=(127\.0\.0\.1:[0-9]+)`))
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, append(args, "--allow-loose-perms"), &strings.Builder{}, stderr, env{}.get)
		}()
		select {
		case <-ready:
		case code := <-done:
			t.Fatalf("serve --allow-loose-perms exited %d: %s", code, stderr)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if out := stderr.String(); !strings.Contains(out, "warning") || !strings.Contains(out, "chmod 600") {
			t.Errorf("serve --allow-loose-perms: no warning in %q", out)
		}
	}
	// Not a regular secret: a huge file is refused, not read whole.
	big := writeFile(t, "big", strings.Repeat("x", maxSecretFile+1))
	if r := runIn(t, nil, "token", "--appid", appID, "--secret-file", big, "--store", "memory:"); r.code != exitUsage || !strings.Contains(r.stderr, "over") {
		t.Errorf("huge secret file: exit %d, %q", r.code, r.stderr)
	}
}
