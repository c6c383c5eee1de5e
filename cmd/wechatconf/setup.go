package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

// cmdEnv is what a command runs with: its options, a ready Conf and the
// resources to release at the end.
type cmdEnv struct {
	cmd            *command
	o              *options
	stdout, stderr io.Writer
	log            *slog.Logger
	conf           *conf.Conf
	wecom          *wecom.App // with --corpid, instead of conf
	metrics        *metrics
	store          store.Store // serve: the Conf's store, for /readyz
	appID          string
	storeDesc      string    // the store URL without its password
	apiBases       []string  // the WeChat hosts in use
	key            string    // serve: the bearer key
	devKey         bool      // serve: the key was made up by --dev
	reg            *registry // serve: the apps served
	readyAt        string    // serve: the key /readyz reads

	// serve --config: the file, how it is read again on SIGHUP, and
	// the store it named.
	configPath    string
	getenv        func(string) string
	files         fileCheck
	storeURL      string
	storeFromFile bool
	checked       *plan // --check-config: the plan found, nothing started

	closers []func() error // released in reverse order
}

// close releases everything setup acquired, last first, and returns the
// first error.
func (e *cmdEnv) close() error {
	var first error
	for i := len(e.closers) - 1; i >= 0; i-- {
		if err := e.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	e.closers = nil
	return first
}

// setup checks the configuration (every usage error is found before
// anything starts), then starts what the command needs: the --dev fake,
// the store (pinged), the Conf.
func setup(ctx context.Context, cmd *command, o *options, stdout, stderr io.Writer, getenv func(string) string) (_ *cmdEnv, err error) {
	if o.dev {
		// --dev must never touch production settings by accident.
		getenv = func(string) string { return "" }
	}
	e := &cmdEnv{cmd: cmd, o: o, stdout: stdout, stderr: stderr}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if cmd.name == "serve" && o.set["config"] {
		if err := checkCommandFlags(cmd, o, false); err != nil {
			return nil, err
		}
		return e, setupConfig(ctx, e, getenv)
	}
	if o.checkConfig {
		return nil, usagef("--check-config checks the file of --config: give --config FILE")
	}

	corpID := corpIDOf(o, getenv)
	if corpID != "" {
		if err := checkWeComFlags(cmd, o); err != nil {
			return nil, err
		}
		if err := wecom.ValidateCorpID(corpID); err != nil {
			return nil, usagef("--corpid: %v", err)
		}
	}
	if err := checkCommandFlags(cmd, o, corpID != ""); err != nil {
		return nil, err
	}
	// serve refuses secret files others can read unless told otherwise;
	// the one-shot commands warn.
	files := fileCheck{strict: cmd.name == "serve" && !o.loosePerms, warn: func(msg string) {
		fmt.Fprintln(stderr, "wechatconf: warning: "+msg)
	}}
	var agentID int64
	if corpID != "" {
		if agentID, err = agentIDOf(o, getenv); err != nil {
			return nil, err
		}
	}
	appID, secret, err := credentials(o, getenv, files, corpID != "")
	if err != nil {
		return nil, err
	}
	if corpID != "" && o.dev && secret == "" {
		// The fake's own secret, and its app's AgentID unless one is given.
		secret = wechattest.DefaultAgentSecret
		if agentID == 0 {
			agentID = wechattest.DefaultAgentID
		}
	}
	e.appID = appID
	if corpID != "" {
		e.appID = corpID
	}
	e.metrics = newMetrics(e.appID)
	bases, err := apiBases(o, getenv)
	if err != nil {
		return nil, err
	}
	storeURL, defaultStore, err := storeLocation(o, getenv)
	if err != nil {
		return nil, err
	}
	if cmd.name == "serve" {
		if e.key, e.devKey, err = serverKey(o, getenv, files); err != nil {
			return nil, err
		}
	}
	if o.timeout < 0 {
		return nil, usagef("--timeout must not be negative, got %v", o.timeout)
	}

	e.log = newLogger(cmd, o, stderr)

	if o.dev {
		if corpID != "" {
			bases = []string{devWeCom(e, corpID, agentID, secret)}
		} else {
			fake := wechattest.NewServer(wechattest.WithApp(appID, secret))
			e.closers = append(e.closers, func() error { fake.Close(); return nil })
			bases = []string{fake.URL()}
			fmt.Fprintf(stderr, "wechatconf: dev mode: fake WeChat API at %s (AppID %s)\n", fake.URL(), appID)
		}
		if storeURL == "" {
			dir, err := os.MkdirTemp("", "wechatconf-dev-")
			if err != nil {
				return nil, fmt.Errorf("dev mode: temporary directory: %w", err)
			}
			e.closers = append(e.closers, func() error { return os.RemoveAll(dir) })
			storeURL = "bolt:" + filepath.Join(dir, "wechatconf.db")
			fmt.Fprintf(stderr, "wechatconf: dev mode: bbolt store at %s (removed at exit)\n", strings.TrimPrefix(storeURL, "bolt:"))
		}
	}
	if storeURL == "" {
		if storeURL, err = defaultStoreURL(getenv); err != nil {
			return nil, err
		}
		defaultStore = true
	}
	if defaultStore {
		// Only the default location is created: a typo in a given
		// path should fail, not make directories.
		if err := os.MkdirAll(filepath.Dir(strings.TrimPrefix(storeURL, "bolt:")), 0o700); err != nil {
			return nil, fmt.Errorf("store directory: %w", err)
		}
	}
	e.apiBases = bases
	sp, err := parseStore(storeURL)
	if err != nil {
		return nil, err
	}
	e.storeDesc = sp.desc
	for _, w := range sp.warnings {
		e.warn(w)
	}
	e.warnInsecureAPIBases(bases)

	st, closeStore, err := sp.open(ctx, storeURL)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, closeStore)
	e.store = st

	if corpID != "" {
		if err := newWeComApp(e, corpID, agentID, secret, st, bases); err != nil {
			return nil, err
		}
		if cmd.name == "serve" {
			e.serveSingle(&app{id: corpID, kind: kindWeCom, agent: agentID > 0, wc: e.wecom}, readyKey(corpID))
		}
		return e, nil
	}
	opts := []conf.Option{
		conf.WithAppID(appID, secret),
		conf.WithStore(st),
		conf.WithLogger(e.log),
		conf.WithObserver(e.metrics.observe),
	}
	if len(bases) > 0 {
		opts = append(opts, conf.WithBaseURLs(bases...))
	}
	if o.stable {
		opts = append(opts, conf.WithStableToken())
	}
	c, err := conf.New(opts...)
	if err != nil {
		return nil, usagef("%v", err)
	}
	e.conf = c
	e.closers = append(e.closers, c.Close)
	if cmd.name == "serve" {
		e.serveSingle(&app{id: appID, kind: kindOfficialAccount, oa: c}, readyKey(appID))
	}
	return e, nil
}

// serveSingle makes a the one app served, to holders of the --key.
func (e *cmdEnv) serveSingle(a *app, readyAt string) {
	e.reg, e.readyAt = singleRegistry(a, e.key, e.metrics, e.log), readyAt
}

// checkCommandFlags checks the flags that belong to one command (WeCom's
// ticket types are checked by checkWeComFlags).
func checkCommandFlags(cmd *command, o *options, weCom bool) error {
	if !weCom && (o.set["agentid"] || o.agentConfig) {
		return usagef("--agentid and --agent are for a WeCom app: give --corpid too")
	}
	switch cmd.name {
	case "ticket":
		if _, err := ticketKind(o.ticketType); err != nil && !weCom {
			return err
		}
	case "serve":
		if o.maxConns < 1 {
			return usagef("--max-conns must be at least 1, got %d", o.maxConns)
		}
	case "sign":
		if o.pageURL == "" {
			return usagef("--url is required: the full URL of the page that calls wx.config")
		}
		if err := checkPageURL(o.pageURL); err != nil {
			return err
		}
	}
	return nil
}

// credentials resolves the AppID and AppSecret from flags, the secret file
// and the environment. --dev defaults to the fake's own app.
func credentials(o *options, getenv func(string) string, files fileCheck, weCom bool) (appID, secret string, err error) {
	appID = o.appID
	if !o.set["appid"] {
		appID = getenv(envAppID)
	}
	if weCom {
		appID = "" // the CorpID names the app
	}
	switch {
	case o.set["secret"] && o.set["secret-file"]:
		return "", "", usagef("give --secret or --secret-file, not both")
	case o.set["secret-file"]:
		if secret, err = files.read("--secret-file", o.secretFile); err != nil {
			return "", "", err
		}
	case o.set["secret"]:
		secret = o.secret
	default:
		secret = getenv(envSecret)
	}
	appID = strings.TrimSpace(appID)
	if weCom {
		if secret == "" && !o.dev {
			return "", "", usagef("missing the WeCom app's secret: give --secret-file (or --secret, or set %s)", envSecret)
		}
		return "", secret, nil
	}
	if o.dev && appID == "" && secret == "" {
		appID, secret = wechattest.DefaultAppID, wechattest.DefaultAppSecret
	}
	if appID == "" {
		return "", "", usagef("missing AppID: give --appid or set %s", envAppID)
	}
	if secret == "" {
		return "", "", usagef("missing AppSecret: give --secret-file (or --secret, or set %s)", envSecret)
	}
	return appID, secret, nil
}

// fileCheck reads secret files. A file that group or others may read is
// refused when strict (serve, unless --allow-loose-perms), and otherwise
// warned about.
type fileCheck struct {
	strict bool
	warn   func(string)
}

// read returns the secret in path, trimmed. Its content never appears in
// an error. The mode is checked on the file that is read (not on a name
// that could change in between).
func (fc fileCheck) read(flagName, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", usagef("%s: cannot read %q: %v", flagName, path, pathCause(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && runtime.GOOS != "windows" {
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			msg := fmt.Sprintf("%s: %q can be read by group or others (mode %04o): run chmod 600 %s", flagName, path, perm, path)
			if fc.strict {
				return "", usagef("%s; serve refuses it unless --allow-loose-perms is given", msg)
			}
			if fc.warn != nil {
				fc.warn(msg)
			}
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", usagef("%s: cannot read %q: %v", flagName, path, pathCause(err))
	}
	if len(b) > maxSecretFile {
		return "", usagef("%s: %q is over %d bytes: not a secret file", flagName, path, maxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", usagef("%s: %q is empty", flagName, path)
	}
	return s, nil
}

// maxSecretFile bounds what is read from a secret file: AppSecrets and
// server keys are a few dozen bytes.
const maxSecretFile = 64 << 10

// pathCause drops the *os.PathError wrapper, whose message repeats the
// path already quoted.
func pathCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// apiBases resolves the WeChat API hosts; nil means the library's default.
func apiBases(o *options, getenv func(string) string) ([]string, error) {
	if o.dev {
		if len(o.apiBases) > 0 {
			return nil, usagef("--dev runs its own fake WeChat API: drop --api-base, or drop --dev")
		}
		return nil, nil
	}
	if len(o.apiBases) > 0 {
		return o.apiBases, nil
	}
	bases := splitList(getenv(envAPIBase))
	for _, b := range bases {
		if err := checkAPIBase(b); err != nil {
			return nil, usagef("%s: %v", envAPIBase, err)
		}
	}
	return bases, nil
}

// storeLocation resolves the store URL from the flag or the environment;
// "" means the default (the dev store with --dev).
func storeLocation(o *options, getenv func(string) string) (u string, isDefault bool, err error) {
	u = o.storeURL
	if !o.set["store"] {
		u = getenv(envStore)
	}
	u = strings.TrimSpace(u)
	if u == "" {
		return "", !o.dev, nil
	}
	// Find mistakes now, before anything starts.
	if _, err := parseStore(u); err != nil {
		return "", false, err
	}
	return u, false, nil
}

// defaultStoreURL is a bbolt file in the user's cache directory, so that
// repeated `wechatconf token` runs reuse one grant.
func defaultStoreURL(getenv func(string) string) (string, error) {
	dir := getenv("XDG_CACHE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home := getenv("HOME")
		if home == "" {
			return "", usagef("no --store given and no home directory for the default one: give --store (or set %s)", envStore)
		}
		dir = filepath.Join(home, ".cache")
	}
	return "bolt:" + filepath.Join(dir, "wechatconf", "wechatconf.db"), nil
}

// serverKey resolves the bearer key of serve. --dev makes one up when none
// is given.
func serverKey(o *options, getenv func(string) string, files fileCheck) (key string, generated bool, err error) {
	switch {
	case o.set["key"] && o.set["key-file"]:
		return "", false, usagef("give --key or --key-file, not both")
	case o.set["key-file"]:
		if key, err = files.read("--key-file", o.keyFile); err != nil {
			return "", false, err
		}
	case o.set["key"]:
		key = o.key
	default:
		key = getenv(envServerKey)
	}
	if key == "" {
		if !o.dev {
			return "", false, usagef("serve needs a key that clients send as \"Authorization: Bearer KEY\": give --key-file (or --key, or set %s), or run with --dev", envServerKey)
		}
		return rand.Text(), true, nil
	}
	if len(key) < minKeyLen {
		return "", false, usagef("the server key is too short (%d bytes): use at least %d random characters", len(key), minKeyLen)
	}
	return key, false, nil
}

// newLogger logs to stderr. serve logs at info level; the one-shot commands
// keep stderr quiet unless -v, so that their only line there is an error.
func newLogger(cmd *command, o *options, stderr io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch {
	case o.verbose:
		level = slog.LevelDebug
	case cmd.name != "serve":
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// ticketKind maps --type to a conf.Kind.
func ticketKind(typ string) (conf.Kind, error) {
	switch typ {
	case "jsapi":
		return conf.JSAPITicket, nil
	case "wx_card":
		return conf.WXCardTicket, nil
	}
	return 0, usagef("--type must be jsapi or wx_card, got %q", typ)
}

// describe turns an error into the line printed on stderr, with a hint for
// the WeChat errcodes an operator can fix.
func describe(err error) string {
	var ae *conf.APIError
	if errors.As(err, &ae) {
		if hint := errcodeHints[ae.Code]; hint != "" {
			return err.Error() + " (" + hint + ")"
		}
	}
	return err.Error()
}

var errcodeHints = map[int]string{
	40013: "check the AppID",
	40125: "check the AppSecret",
	40164: "add this machine's public IP to the IP whitelist in the WeChat console",
	40243: "the AppSecret is frozen: unfreeze or reset it in the WeChat console",
	45009: "the daily quota is used up; it resets at midnight China time",
}
