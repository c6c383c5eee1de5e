package main

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wechatconf/wechatconf/store"
)

// testOpens counts the stores the x-cmdtest opener made.
var testOpens atomic.Int64

// A third-party backend, as a binary would link it in: it registers its
// scheme in init, and --store takes it.
func init() {
	store.Register("x-cmdtest", func(_ context.Context, u *url.URL) (store.Store, error) {
		if u.Query().Has("fail") {
			return nil, errors.New("cannot reach " + u.String())
		}
		testOpens.Add(1)
		return store.NewMemory(), nil
	})
}

func TestRegisteredStore(t *testing.T) {
	const pw = "S3CRETPW"
	fake := newFake(t)
	before := testOpens.Load()
	r := runIn(t, nil, "token", "--appid", appID, "--secret", secret, "--store", "x-cmdtest://u:"+pw+"@h/", "--api-base", fake.URL())
	if r.code != 0 || r.stdout != fake.CurrentToken(appID)+"\n" {
		t.Fatalf("token with a registered store: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if testOpens.Load() != before+1 {
		t.Errorf("the registered opener was called %d times, want once", testOpens.Load()-before)
	}
	r = runIn(t, nil, "token", "--appid", appID, "--secret", secret, "--store", "x-cmdtest://u:"+pw+"@h/?fail=1&password="+pw, "--api-base", fake.URL())
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach") {
		t.Errorf("token with a failing registered store: exit %d, stderr %q; want 1 and the opener's error", r.code, r.stderr)
	}
	if strings.Contains(r.stderr+r.stdout, pw) {
		t.Errorf("the output shows the store password: %q", r.stderr)
	}
	r = runIn(t, nil, "token", "--appid", appID, "--secret", secret, "--store", "x-nosuch://h", "--api-base", fake.URL())
	if r.code != 2 || !strings.Contains(r.stderr, `unknown store scheme "x-nosuch"`) || !strings.Contains(r.stderr, "x-cmdtest:") {
		t.Errorf("an unknown scheme: exit %d, stderr %q; want 2, naming the scheme and listing x-cmdtest:", r.code, r.stderr)
	}
}
