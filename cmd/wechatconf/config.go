package main

// The configuration file of `serve --config FILE`: the apps one server
// keeps valid and the keys that may read them.
//
// The format is JSON, read by encoding/json with unknown fields refused:
// no dependency, no implicit typing (a YAML parser turns an unquoted
// `no` into false and `0123` into a number, both plausible in IDs), and
// every language and configuration tool writes it. See the README's
// operator's guide for a sample.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wechatconf/wechatconf/internal/wxapi"
	"github.com/wechatconf/wechatconf/tokenclient"
	"github.com/wechatconf/wechatconf/wecom"
)

// maxConfigFile bounds what is read of a configuration file: 10 000 apps
// take about 2 MB.
const maxConfigFile = 32 << 20

// maxAppIDLen is the longest app id (the name in /v1/apps/{id}/...).
const maxAppIDLen = 64

// fileConfig is the configuration file as written.
type fileConfig struct {
	// Store is the store URL (--store's forms); --store and
	// WECHATCONF_STORE win over it.
	Store string `json:"store"`
	// APIBase are the WeChat API hosts of the Official Accounts and Mini
	// Programs without an api_base of their own.
	APIBase []string  `json:"api_base"`
	Apps    []fileApp `json:"apps"`
	Keys    []fileKey `json:"keys"`
}

// fileApp is one app of the file.
type fileApp struct {
	ID          string   `json:"id"`
	Kind        string   `json:"kind"`
	AppID       string   `json:"appid"`
	CorpID      string   `json:"corpid"`
	AgentID     int64    `json:"agentid"`
	SecretFile  string   `json:"secret_file"`
	SecretEnv   string   `json:"secret_env"`
	StableToken bool     `json:"stable_token"`
	APIBase     []string `json:"api_base"`
}

// fileKey is one client key of the file: its SHA-256, or where to read it.
type fileKey struct {
	Name   string   `json:"name"`
	SHA256 string   `json:"sha256"`
	File   string   `json:"file"`
	Env    string   `json:"env"`
	Apps   []string `json:"apps"`
}

// appKind is what an app is.
type appKind uint8

const (
	kindOfficialAccount appKind = iota + 1
	kindMiniProgram
	kindWeCom
)

// appKindNames are the kinds as the file names them, indexed by appKind.
var appKindNames = [...]string{kindOfficialAccount: "official_account", kindMiniProgram: "mini_program", kindWeCom: "wecom"}

// appKindOf returns the kind the file calls name.
func appKindOf(name string) (appKind, bool) {
	for k, n := range appKindNames {
		if n != "" && n == name {
			return appKind(k), true
		}
	}
	return 0, false
}

func (k appKind) String() string {
	if int(k) < len(appKindNames) && appKindNames[k] != "" {
		return appKindNames[k]
	}
	return "unknown"
}

// appSpec is one app as checked: everything needed to build it.
type appSpec struct {
	id      string
	kind    appKind
	appID   string // official_account, mini_program
	corpID  string // wecom
	agentID int64  // wecom, 0 for a contacts or customer-contact secret
	secret  string
	stable  bool
	bases   []string // nil: the default hosts
	// fp is the fingerprint of all of the above: an app whose fp is
	// unchanged by a reload keeps running as it is.
	fp [sha256.Size]byte
}

// String names the app without its secret.
func (s *appSpec) String() string {
	if s.kind == kindWeCom {
		return fmt.Sprintf("%s (wecom %s agent %d)", s.id, s.corpID, s.agentID)
	}
	return fmt.Sprintf("%s (%s %s)", s.id, s.kind, s.appID)
}

// plan is a checked configuration: what a server runs.
type plan struct {
	store string // "" when the file gives none
	apps  []*appSpec
	keys  []keyEntry
}

// keyEntry is a client key as held: its SHA-256 only, and the apps it may
// read.
type keyEntry struct {
	name string
	sum  [sha256.Size]byte
	// words is sum as the set compares it (newAppSet fills it in).
	words [4]uint64
	all   bool                // "*": every app
	apps  map[string]struct{} // otherwise
}

// allows reports whether the key may read app id.
func (k *keyEntry) allows(id string) bool {
	if k.all {
		return true
	}
	_, ok := k.apps[id]
	return ok
}

// configError is a mistake in the configuration file: a usage error when
// serve starts, a refused reload after.
func configErrorf(path, format string, args ...any) error {
	return usagef("config %s: %s", path, fmt.Sprintf(format, args...))
}

// loadConfig reads and checks the file at path. Secrets are read from
// their files (relative paths are relative to the file's directory) and
// environment variables; keys given by file or variable are hashed and
// their clear form dropped. No secret or key appears in an error.
func loadConfig(path string, getenv func(string) string, files fileCheck) (*plan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("--config: cannot read %q: %v", path, pathCause(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, usagef("--config: cannot read %q: %v", path, pathCause(err))
	}
	if len(data) > maxConfigFile {
		return nil, configErrorf(path, "over %d bytes", maxConfigFile)
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, configErrorf(path, "%s", jsonProblem(data, dec, err))
	}
	if dec.More() {
		return nil, configErrorf(path, "more than one JSON value")
	}
	return checkConfig(path, &fc, getenv, files)
}

// jsonProblem describes a decoding error with its line and column, without
// quoting the file (which may hold a key's SHA-256 or a store password).
func jsonProblem(data []byte, dec *json.Decoder, err error) string {
	off := dec.InputOffset()
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	msg := err.Error()
	switch {
	case errors.As(err, &se):
		off = se.Offset
		msg = "syntax error: " + se.Error()
	case errors.As(err, &te):
		off = te.Offset
		msg = fmt.Sprintf("%s: want a JSON %s, got %s", te.Field, jsonTypeName(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.EOF):
		return "empty file: want a JSON object with apps and keys"
	case errors.Is(err, io.ErrUnexpectedEOF):
		off, msg = int64(len(data)), "the JSON ends early (a bracket or brace left open?)"
	case strings.HasPrefix(msg, "json: unknown field "):
		msg = "unknown field " + strings.TrimPrefix(msg, "json: unknown field ") + " (see the README's operator's guide for the fields)"
	}
	off = min(max(off, 0), int64(len(data)))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Sprintf("line %d, column %d: %s", line, col, strings.TrimPrefix(msg, "json: "))
}

func jsonTypeName(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}

// checkConfig turns the file's content into a plan, or names the first
// mistake.
func checkConfig(path string, fc *fileConfig, getenv func(string) string, files fileCheck) (*plan, error) {
	bad := func(format string, args ...any) error { return configErrorf(path, format, args...) }
	p := &plan{store: strings.TrimSpace(fc.Store)}
	if p.store != "" {
		if _, err := parseStore(p.store); err != nil {
			return nil, bad("store: %v", err)
		}
	}
	for i, b := range fc.APIBase {
		if err := checkAPIBase(b); err != nil {
			return nil, bad("api_base[%d]: %v", i, err)
		}
	}
	if len(fc.Apps) == 0 {
		return nil, bad("no apps: list at least one under \"apps\"")
	}
	dir := filepath.Dir(path)
	ids := map[string]int{}
	creds := map[string]int{} // AppID or CorpID/AgentID: one app each
	for i := range fc.Apps {
		fa := &fc.Apps[i]
		where := fmt.Sprintf("apps[%d]", i)
		if fa.ID != "" {
			where = fmt.Sprintf("apps[%d] (%q)", i, oneLine(fa.ID))
		}
		s, err := checkApp(fa, fc.APIBase, dir, getenv, files)
		if err != nil {
			return nil, bad("%s: %v", where, err)
		}
		if j, dup := ids[s.id]; dup {
			return nil, bad("%s: id %q is apps[%d]'s already", where, s.id, j)
		}
		ids[s.id] = i
		cred := s.appID
		if s.kind == kindWeCom {
			// Without an AgentID the secret names the app (its
			// contacts or customer-contact secret).
			cred = fmt.Sprintf("%s/agent %d", s.corpID, s.agentID)
			if s.agentID == 0 {
				sum := sha256.Sum256([]byte(s.secret))
				cred = fmt.Sprintf("%s/secret %x", s.corpID, sum[:4])
			}
		}
		if j, dup := creds[cred]; dup {
			// Two apps on one credential would share its store keys
			// under two names: one app, listed twice.
			return nil, bad("%s: the same app as apps[%d] (%s): list it once", where, j, fc.Apps[j].ID)
		}
		creds[cred] = i
		p.apps = append(p.apps, s)
	}
	if len(fc.Keys) == 0 {
		return nil, bad("no keys: list at least one under \"keys\" (clients send it as Authorization: Bearer KEY)")
	}
	names := map[string]bool{}
	sums := map[[sha256.Size]byte]string{}
	for i := range fc.Keys {
		fk := &fc.Keys[i]
		where := fmt.Sprintf("keys[%d]", i)
		if fk.Name != "" {
			where = fmt.Sprintf("keys[%d] (%q)", i, oneLine(fk.Name))
		}
		k, err := checkKey(fk, ids, dir, getenv, files)
		if err != nil {
			return nil, bad("%s: %v", where, err)
		}
		if names[k.name] {
			return nil, bad("%s: name %q is used twice", where, k.name)
		}
		names[k.name] = true
		if other, dup := sums[k.sum]; dup {
			return nil, bad("%s: the same key as %q: each client gets a key of its own", where, other)
		}
		sums[k.sum] = k.name
		p.keys = append(p.keys, k)
	}
	return p, nil
}

// checkApp checks one app and reads its secret.
func checkApp(fa *fileApp, defaultBases []string, dir string, getenv func(string) string, files fileCheck) (*appSpec, error) {
	if err := checkName(fa.ID); err != nil {
		return nil, fmt.Errorf("id: %v", err)
	}
	s := &appSpec{id: fa.ID, stable: fa.StableToken}
	kind, ok := appKindOf(fa.Kind)
	if !ok {
		return nil, fmt.Errorf("kind must be official_account, mini_program or wecom, got %q", oneLine(fa.Kind))
	}
	s.kind = kind
	switch kind {
	case kindWeCom:
		if fa.AppID != "" || fa.StableToken {
			return nil, errors.New("appid and stable_token are an Official Account's or Mini Program's: a wecom app has corpid and agentid")
		}
		if err := wecom.ValidateCorpID(fa.CorpID); err != nil {
			return nil, fmt.Errorf("corpid: %v", err)
		}
		if fa.AgentID < 0 {
			return nil, fmt.Errorf("agentid must be positive (or left out for a contacts or customer-contact secret), got %d", fa.AgentID)
		}
		s.corpID, s.agentID = fa.CorpID, fa.AgentID
	default:
		if fa.CorpID != "" || fa.AgentID != 0 {
			return nil, fmt.Errorf("corpid and agentid are a wecom app's: this app is a %s", kind)
		}
		if fa.AppID == "" {
			return nil, errors.New("appid: missing")
		}
		if err := wxapi.CheckID("appid", fa.AppID); err != nil {
			return nil, err
		}
		s.appID = fa.AppID
	}
	for i, b := range fa.APIBase {
		if err := checkAPIBase(b); err != nil {
			return nil, fmt.Errorf("api_base[%d]: %v", i, err)
		}
	}
	s.bases = slices.Clone(fa.APIBase)
	if len(s.bases) == 0 && kind != kindWeCom {
		s.bases = slices.Clone(defaultBases)
	}
	secret, err := readSecretSource("secret", fa.SecretFile, fa.SecretEnv, dir, getenv, files)
	if err != nil {
		return nil, err
	}
	s.secret = secret
	s.fp = s.fingerprint()
	return s, nil
}

// fingerprint hashes everything the app is built from.
func (s *appSpec) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00%d\x00%t\x00%q\x00", s.kind, s.appID, s.corpID, s.agentID, s.stable, s.bases)
	secretSum := sha256.Sum256([]byte(s.secret))
	h.Write(secretSum[:])
	var fp [sha256.Size]byte
	h.Sum(fp[:0])
	return fp
}

// checkKey checks one key and hashes it.
func checkKey(fk *fileKey, ids map[string]int, dir string, getenv func(string) string, files fileCheck) (keyEntry, error) {
	k := keyEntry{name: fk.Name}
	if err := checkName(fk.Name); err != nil {
		return k, fmt.Errorf("name: %v", err)
	}
	given := 0
	for _, v := range []string{fk.SHA256, fk.File, fk.Env} {
		if v != "" {
			given++
		}
	}
	if given != 1 {
		return k, errors.New("give exactly one of sha256 (the key's SHA-256 in hex: wechatconf hash-key prints it), file or env")
	}
	if fk.SHA256 != "" {
		b, err := hex.DecodeString(fk.SHA256)
		if err != nil || len(b) != sha256.Size {
			return k, errors.New("sha256 must be 64 hex digits (wechatconf hash-key prints them)")
		}
		copy(k.sum[:], b)
	} else {
		key, err := readSecretSource("key", fk.File, fk.Env, dir, getenv, files)
		if err != nil {
			return k, err
		}
		if len(key) < minKeyLen {
			return k, fmt.Errorf("the key is too short (%d bytes): use at least %d random characters", len(key), minKeyLen)
		}
		k.sum = sha256.Sum256([]byte(key))
	}
	if len(fk.Apps) == 0 {
		return k, errors.New("apps is empty: list the app ids this key may read, or \"*\" for all")
	}
	for _, id := range fk.Apps {
		if id == "*" {
			k.all = true
			continue
		}
		if _, ok := ids[id]; !ok {
			return k, fmt.Errorf("apps: no app has id %q", oneLine(id))
		}
		if k.apps == nil {
			k.apps = map[string]struct{}{}
		}
		k.apps[id] = struct{}{}
	}
	if k.all && len(k.apps) > 0 {
		return k, errors.New("apps: \"*\" already means every app: list ids or \"*\", not both")
	}
	return k, nil
}

// readSecretSource reads what (a secret or a key) from file (relative to
// dir) or from the environment variable env; exactly one must be given.
func readSecretSource(what, file, env, dir string, getenv func(string) string, files fileCheck) (string, error) {
	switch {
	case file != "" && env != "":
		return "", fmt.Errorf("give %s_file or %s_env, not both", what, what)
	case file != "":
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, file)
		}
		return files.read(what+"_file", file)
	case env != "":
		v := strings.TrimSpace(getenv(env))
		if v == "" {
			return "", fmt.Errorf("%s_env: the environment variable %s is empty or unset", what, env)
		}
		return v, nil
	}
	return "", fmt.Errorf("give %s_file (a file holding it, chmod 600) or %s_env (an environment variable)", what, what)
}

// checkName accepts an app id or key name: [a-z0-9][a-z0-9_-]{0,63}, safe
// in a URL path, a metric label and a log line. The rule is the protocol's
// (tokenclient.ValidApp), so that the server and its Go client agree.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("missing")
	case len(s) > maxAppIDLen:
		return fmt.Errorf("over %d characters", maxAppIDLen)
	case !tokenclient.ValidApp(s):
		return fmt.Errorf("%q: use lower-case letters, digits, - and _ (not first)", oneLine(s))
	}
	return nil
}
