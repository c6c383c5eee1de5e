package main

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wechatconf/wechatconf/wechattest"
)

// wecomBase points a command at a WeCom fake with a bbolt store.
func wecomBase(t *testing.T, fake *wechattest.WeComServer, agent bool) []string {
	t.Helper()
	args := []string{"--corpid", wechattest.DefaultCorpID, "--secret-file", writeFile(t, "secret", wechattest.DefaultAgentSecret+"\n"),
		"--store", "bolt:" + filepath.Join(t.TempDir(), "w.db"), "--api-base", fake.URL()}
	if agent {
		args = append(args, "--agentid", strconv.Itoa(wechattest.DefaultAgentID))
	}
	return args
}

func newWeComFake(t *testing.T) *wechattest.WeComServer {
	t.Helper()
	f := wechattest.NewWeComServer()
	t.Cleanup(f.Close)
	return f
}

// wechatconf token --corpid prints the app's token; a second run on the
// same store reuses it; the secret is never printed.
func TestWeComToken(t *testing.T) {
	fake := newWeComFake(t)
	args := append([]string{"token"}, wecomBase(t, fake, true)...)
	r := runIn(t, nil, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	tok := strings.TrimSuffix(r.stdout, "\n")
	if !fake.Valid(tok) || tok != fake.CurrentToken(wechattest.DefaultCorpID, wechattest.DefaultAgentSecret) {
		t.Fatalf("stdout %q is not the app's token", r.stdout)
	}
	r2 := runIn(t, nil, args...)
	if r2.stdout != r.stdout {
		t.Fatalf("second run printed %q; want the stored token", r2.stdout)
	}
	if s := fake.Stats(); s.TokenGrants != 1 || s.TokenRepeats != 0 {
		t.Fatalf("stats %+v; want one gettoken in all", s)
	}
	if strings.Contains(r.stdout+r.stderr, wechattest.DefaultAgentSecret) {
		t.Fatal("output shows the secret")
	}
}

func TestWeComTicketsAndSign(t *testing.T) {
	fake := newWeComFake(t)
	args := wecomBase(t, fake, true)
	corp := runIn(t, nil, append([]string{"ticket"}, args...)...)
	agent := runIn(t, nil, append([]string{"ticket", "--type", "agent_config"}, args...)...)
	ct, at := strings.TrimSpace(corp.stdout), strings.TrimSpace(agent.stdout)
	if corp.code != 0 || agent.code != 0 || ct == at || !fake.ValidTicket(ct) || !fake.ValidTicket(at) {
		t.Fatalf("tickets: %d %q %s / %d %q %s", corp.code, ct, corp.stderr, agent.code, at, agent.stderr)
	}
	if kind, _, _ := fake.TicketOf(at); kind != "agent_config" {
		t.Fatalf("--type agent_config printed a %q ticket", kind)
	}
	page := "https://example.com/p?x=1#f"
	for _, tc := range []struct {
		flag   []string
		ticket string
		id     string
	}{{nil, ct, "appId"}, {[]string{"--agent"}, at, "corpid"}} {
		r := runIn(t, nil, append(append([]string{"sign", "--url", page}, tc.flag...), args...)...)
		var cfg map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &cfg); r.code != 0 || err != nil {
			t.Fatalf("sign %v: %d %q %s", tc.flag, r.code, r.stdout, r.stderr)
		}
		ts := int64(cfg["timestamp"].(float64))
		sum := sha1.Sum([]byte(fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", tc.ticket, cfg["nonceStr"], ts, "https://example.com/p?x=1")))
		if cfg["signature"] != hex.EncodeToString(sum[:]) || cfg[tc.id] != wechattest.DefaultCorpID {
			t.Fatalf("sign %v: %v does not verify with its ticket", tc.flag, cfg)
		}
	}
}

func TestWeComUsageErrors(t *testing.T) {
	fake := newWeComFake(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append([]string{"token", "--appid", appID}, wecomBase(t, fake, false)...), "not both"},
		{append([]string{"ticket", "--type", "wx_card"}, wecomBase(t, fake, true)...), "agent_config"},
		{[]string{"token", "--agentid", "5", "--appid", appID, "--secret", secret}, "--corpid"},
		{[]string{"token", "--corpid", "ww 1", "--secret", "s"}, "CorpID"},
		{[]string{"token", "--corpid", wechattest.DefaultCorpID, "--agentid", "-3", "--secret", "s"}, "AgentID"},
	} {
		r := runIn(t, nil, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want a usage error naming %s", tc.args[:2], r.code, r.stderr, tc.want)
		}
	}
	// A wrong secret: one clear line that names the app and what to check.
	args := []string{"token", "--corpid", wechattest.DefaultCorpID, "--agentid", "1000002", "--secret", "wrongwrongwrong",
		"--store", "memory:", "--api-base", fake.URL()}
	r := runIn(t, nil, args...)
	if r.code == 0 || !strings.Contains(r.stderr, "Secret") || strings.Contains(r.stderr, "wrongwrongwrong") {
		t.Fatalf("wrong secret: exit %d, stderr %q", r.code, r.stderr)
	}
}

// --dev runs against an in-process WeCom fake.
func TestWeComDev(t *testing.T) {
	r := runIn(t, nil, "token", "--dev", "--corpid", wechattest.DefaultCorpID)
	if r.code != 0 || strings.TrimSpace(r.stdout) == "" || !strings.Contains(r.stderr, "fake WeCom API") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
