package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Secrets and keys of the configuration tests: none may appear in an error.
const (
	cfgSecretA = "cfgSecretAAAAAAAAAAAAAAAAAAAAAAA"
	cfgSecretB = "cfgSecretBBBBBBBBBBBBBBBBBBBBBBB"
	cfgKeyA    = "client-key-a-0123456789abcdef"
	cfgKeyB    = "client-key-b-0123456789abcdef"
	cfgKeyAll  = "client-key-all-0123456789abcdef"
)

func hexSum(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// configDir writes files (name → content, mode 0600) into a new directory
// and returns the directory.
func configDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var testEnv = env{"SECRET_B": cfgSecretB, "KEY_ALL": cfgKeyAll}

// A file with every form: an Official Account with a secret file (relative
// to the file), a Mini Program with a secret variable, a WeCom app; keys by
// SHA-256, by file and by variable.
func TestLoadConfig(t *testing.T) {
	dir := configDir(t, map[string]string{
		"a.secret":  cfgSecretA + "\n",
		"hr.secret": cfgSecretA,
		"b.key":     cfgKeyB,
		"wechatconf.json": fmt.Sprintf(`{
  "store": "memory:",
  "api_base": ["http://127.0.0.1:1"],
  "apps": [
    {"id": "shop", "kind": "official_account", "appid": "wx00000000000000a1", "secret_file": "a.secret", "stable_token": true},
    {"id": "mini", "kind": "mini_program", "appid": "wx00000000000000b2", "secret_env": "SECRET_B"},
    {"id": "hr", "kind": "wecom", "corpid": "ww00000000000000c1", "agentid": 1000002, "secret_file": "hr.secret", "api_base": ["http://127.0.0.1:2"]}
  ],
  "keys": [
    {"name": "shop-2026", "sha256": %q, "apps": ["shop"]},
    {"name": "mini", "file": "b.key", "apps": ["mini", "hr"]},
    {"name": "ops", "env": "KEY_ALL", "apps": ["*"]}
  ]
}`, hexSum(cfgKeyA)),
	})
	p, err := loadConfig(filepath.Join(dir, "wechatconf.json"), testEnv.get, fileCheck{strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.store != "memory:" || len(p.apps) != 3 || len(p.keys) != 3 {
		t.Fatalf("plan: store %q, %d apps, %d keys", p.store, len(p.apps), len(p.keys))
	}
	shop, mini, hr := p.apps[0], p.apps[1], p.apps[2]
	if shop.kind != kindOfficialAccount || shop.appID != "wx00000000000000a1" || shop.secret != cfgSecretA || !shop.stable ||
		len(shop.bases) != 1 || shop.bases[0] != "http://127.0.0.1:1" {
		t.Errorf("shop: %+v", shop)
	}
	if mini.kind != kindMiniProgram || mini.secret != cfgSecretB {
		t.Errorf("mini: %+v", mini)
	}
	if hr.kind != kindWeCom || hr.corpID != "ww00000000000000c1" || hr.agentID != 1000002 || hr.bases[0] != "http://127.0.0.1:2" {
		t.Errorf("hr: %+v", hr)
	}
	keys := map[string]keyEntry{}
	for _, k := range p.keys {
		keys[k.name] = k
	}
	if k := keys["shop-2026"]; k.sum != sha256.Sum256([]byte(cfgKeyA)) || !k.allows("shop") || k.allows("mini") || k.all {
		t.Errorf("shop key: %+v", k)
	}
	if k := keys["mini"]; k.sum != sha256.Sum256([]byte(cfgKeyB)) || !k.allows("mini") || !k.allows("hr") || k.allows("shop") {
		t.Errorf("mini key: %+v", k)
	}
	if k := keys["ops"]; k.sum != sha256.Sum256([]byte(cfgKeyAll)) || !k.all || !k.allows("anything") {
		t.Errorf("ops key: %+v", k)
	}
	// The fingerprint follows what the app is built from.
	again, err := loadConfig(filepath.Join(dir, "wechatconf.json"), testEnv.get, fileCheck{strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.apps[0].fp != shop.fp {
		t.Error("the same file, another fingerprint")
	}
	other := env{"SECRET_B": cfgSecretA, "KEY_ALL": cfgKeyAll}
	changed, err := loadConfig(filepath.Join(dir, "wechatconf.json"), other.get, fileCheck{strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if changed.apps[1].fp == mini.fp {
		t.Error("a new secret, the same fingerprint")
	}
	// The plan's String forms name no secret.
	for _, s := range p.apps {
		if strings.Contains(s.String(), s.secret) || strings.Contains(fmt.Sprintf("%v", s), s.secret) {
			t.Errorf("%v shows its secret", s)
		}
	}
}

// Every mistake is refused with an error that names the field (and the
// app or key) and never quotes a secret or a key.
func TestLoadConfigMistakes(t *testing.T) {
	oa := func(id, appid string) string {
		return fmt.Sprintf(`{"id": %q, "kind": "official_account", "appid": %q, "secret_env": "SECRET_B"}`, id, appid)
	}
	key := func(name string, apps string) string {
		return fmt.Sprintf(`{"name": %q, "sha256": %q, "apps": %s}`, name, hexSum(cfgKeyA), apps)
	}
	file := func(apps, keys string) string {
		return fmt.Sprintf(`{"store": "memory:", "apps": [%s], "keys": [%s]}`, apps, keys)
	}
	good := oa("shop", "wx00000000000000a1")
	goodKey := key("k", `["shop"]`)
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty", ``, "empty file"},
		{"syntax", "{\n  \"apps\": [\n    {\"id\": \"x\",,}\n  ]\n}", "line 3"},
		{"truncated", `{"apps": [`, "ends early"},
		{"unknown field", `{"store": "memory:", "appz": []}`, `unknown field "appz"`},
		{"wrong type", `{"store": 5}`, "want a JSON string"},
		{"two values", file(good, goodKey) + `{}`, "more than one JSON value"},
		{"no apps", file(``, goodKey), "no apps"},
		{"no keys", file(good, ``), "no keys"},
		{"bad store", `{"store": "mysql://x", "apps": [` + good + `], "keys": [` + goodKey + `]}`, "store:"},
		{"bad api_base", `{"api_base": ["ftp://x"], "apps": [` + good + `], "keys": [` + goodKey + `]}`, "api_base[0]"},
		{"bad id", file(oa("Shop!", "wx00000000000000a1"), goodKey), `apps[0] ("Shop!"): id:`},
		{"missing id", file(`{"kind": "official_account", "appid": "wx1", "secret_env": "SECRET_B"}`, goodKey), "apps[0]: id: missing"},
		{"long id", file(oa(strings.Repeat("a", 65), "wx00000000000000a1"), goodKey), "over 64"},
		{"duplicate id", file(good+","+oa("shop", "wx00000000000000a2"), goodKey), `id "shop" is apps[0]'s already`},
		{"duplicate appid", file(good+","+oa("shop2", "wx00000000000000a1"), goodKey), "the same app as apps[0]"},
		{"bad kind", file(`{"id": "x", "kind": "oa", "appid": "wx1", "secret_env": "SECRET_B"}`, key("k", `["x"]`)), "kind must be"},
		{"bad appid", file(oa("shop", "wx 1"), goodKey), "appid:"},
		{"missing appid", file(oa("shop", ""), goodKey), "appid: missing"},
		{"corpid on an OA", file(`{"id": "shop", "kind": "official_account", "appid": "wx1", "corpid": "ww1", "secret_env": "SECRET_B"}`, goodKey), "corpid and agentid are a wecom app's"},
		{"appid on WeCom", file(`{"id": "shop", "kind": "wecom", "appid": "wx1", "corpid": "ww1", "secret_env": "SECRET_B"}`, goodKey), "appid and stable_token"},
		{"bad corpid", file(`{"id": "shop", "kind": "wecom", "corpid": "ww 1", "secret_env": "SECRET_B"}`, goodKey), "corpid:"},
		{"negative agentid", file(`{"id": "shop", "kind": "wecom", "corpid": "ww1", "agentid": -1, "secret_env": "SECRET_B"}`, goodKey), "agentid must be positive"},
		{"no secret", file(`{"id": "shop", "kind": "official_account", "appid": "wx1"}`, goodKey), "give secret_file"},
		{"two secrets", file(`{"id": "shop", "kind": "official_account", "appid": "wx1", "secret_env": "SECRET_B", "secret_file": "/x"}`, goodKey), "not both"},
		{"unset variable", file(`{"id": "shop", "kind": "official_account", "appid": "wx1", "secret_env": "NOPE"}`, goodKey), "NOPE is empty or unset"},
		{"missing secret file", file(`{"id": "shop", "kind": "official_account", "appid": "wx1", "secret_file": "nope.secret"}`, goodKey), "cannot read"},
		{"key without source", file(good, `{"name": "k", "apps": ["shop"]}`), "exactly one of sha256"},
		{"key with two sources", file(good, fmt.Sprintf(`{"name": "k", "sha256": %q, "env": "KEY_ALL", "apps": ["shop"]}`, hexSum(cfgKeyA))), "exactly one of sha256"},
		{"bad sha256", file(good, `{"name": "k", "sha256": "abc", "apps": ["shop"]}`), "64 hex digits"},
		{"short key", file(good, `{"name": "k", "env": "SHORT", "apps": ["shop"]}`), "too short"},
		{"key without apps", file(good, key("k", `[]`)), "apps is empty"},
		{"key for no app", file(good, key("k", `["nope"]`)), `no app has id "nope"`},
		{"star and ids", file(good, key("k", `["*", "shop"]`)), "not both"},
		{"duplicate key name", file(good, key("k", `["shop"]`)+","+`{"name": "k", "env": "KEY_ALL", "apps": ["shop"]}`), `name "k" is used twice`},
		{"same key twice", file(good, key("k1", `["shop"]`)+","+key("k2", `["shop"]`)), `the same key as "k1"`},
		{"bad key name", file(good, key("K 1", `["shop"]`)), "name:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "wechatconf.json", tc.content)
			e := env{"SECRET_B": cfgSecretB, "KEY_ALL": cfgKeyAll, "SHORT": "short"}
			_, err := loadConfig(path, e.get, fileCheck{strict: true})
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.content)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "wechatconf.json") {
				t.Errorf("error %q, want it to name the file and say %q", msg, tc.want)
			}
			for _, s := range []string{cfgSecretB, cfgKeyAll, cfgKeyA, hexSum(cfgKeyA)} {
				if strings.Contains(msg, s) {
					t.Errorf("the error quotes a secret, a key or its SHA-256: %q", msg)
				}
			}
			var ue *usageError
			if !asUsage(err, &ue) {
				t.Errorf("%T is not a usage error (exit status 2)", err)
			}
		})
	}
}

// A secret or key file that group or others can read is refused by serve
// (as --secret-file is), and named.
func TestLoadConfigLooseSecretFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte(cfgSecretA), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "c.json")
	content := fmt.Sprintf(`{"store": "memory:", "apps": [{"id": "a", "kind": "official_account", "appid": "wx1", "secret_file": "s"}],
		"keys": [{"name": "k", "sha256": %q, "apps": ["*"]}]}`, hexSum(cfgKeyA))
	if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(cfg, env{}.get, fileCheck{strict: true})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), "secret_file") {
		t.Fatalf("loose secret file: %v", err)
	}
	if _, err := loadConfig(cfg, env{}.get, fileCheck{strict: false}); err != nil {
		t.Fatalf("--allow-loose-perms: %v", err)
	}
}

func asUsage(err error, target **usageError) bool {
	ue, ok := err.(*usageError)
	if ok {
		*target = ue
	}
	return ok
}
