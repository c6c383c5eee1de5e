package main

// serve --config FILE: the server of many apps, and its reload on SIGHUP.

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// configOnlyFlags may not be given with --config: the file says them per
// app (or, for the key, per client).
var configOnlyFlags = []string{"appid", "secret", "secret-file", "corpid", "agentid", "stable-token", "key", "key-file", "dev"}

// setupConfig is setup for serve --config: the file's apps on one store.
// Every mistake in the file is a usage error before anything starts.
func setupConfig(ctx context.Context, e *cmdEnv, getenv func(string) string) error {
	o := e.o
	for _, f := range configOnlyFlags {
		if o.set[f] {
			return usagef("--%s cannot be given with --config: the configuration file says it (per app, or per key)", f)
		}
	}
	for _, v := range []string{envAppID, envCorpID, envSecret, envServerKey} {
		if getenv(v) != "" {
			e.warn("--config: " + v + " is ignored: the configuration file lists the apps and keys")
		}
	}
	files := fileCheck{strict: !o.loosePerms, warn: e.warn}
	e.configPath, e.getenv, e.files = o.configPath, getenv, files
	p, err := loadConfig(o.configPath, getenv, files)
	if err != nil {
		return err
	}
	if len(o.apiBases) > 0 || getenv(envAPIBase) != "" {
		// --api-base and WECHATCONF_API_BASE are the default hosts of
		// the apps without an api_base of their own.
		return usagef("--api-base and %s cannot be given with --config: set api_base in the file", envAPIBase)
	}
	storeURL, _, err := storeLocation(o, getenv)
	if err != nil {
		return err
	}
	e.storeFromFile = storeURL == ""
	if e.storeFromFile {
		if storeURL = p.store; storeURL == "" {
			return usagef("config %s: no store: set \"store\" in the file (or give --store): many apps are served from a shared store", o.configPath)
		}
	}
	sp, err := parseStore(storeURL)
	if err != nil {
		return err
	}
	e.storeDesc, e.storeURL = sp.desc, storeURL
	for _, w := range sp.warnings {
		e.warn(w)
	}
	for _, s := range p.apps {
		e.warnInsecureAPIBases(s.bases)
	}
	if o.checkConfig {
		e.checked = p
		return nil
	}
	e.log = newLogger(e.cmd, o, e.stderr)
	st, closeStore, err := sp.open(ctx, storeURL)
	if err != nil {
		return err
	}
	e.closers = append(e.closers, closeStore)
	e.store = st
	e.metrics = newMetrics("")
	reg, err := newRegistry(p, &appBuilder{st: st, log: e.log, m: e.metrics})
	if err != nil {
		return usagef("config %s: %v", o.configPath, err)
	}
	e.reg = reg
	e.readyAt = "{wechatconf}:readyz"
	e.closers = append(e.closers, reg.close)
	return nil
}

// reloadConfig reads the configuration file again and swaps in its apps
// and keys. On any mistake the running set is kept, and the error says
// what was wrong.
func (e *cmdEnv) reloadConfig() (reloadStats, error) {
	p, err := loadConfig(e.configPath, e.getenv, e.files)
	if err == nil && e.storeFromFile && p.store != e.storeURL {
		err = usagef("config %s: store: a new store needs a restart (the running server stays on its store)", e.configPath)
	}
	var st reloadStats
	if err == nil {
		st, err = e.reg.reload(p)
	}
	e.metrics.reloaded(err)
	return st, err
}

// watchReload reloads on SIGHUP until ctx ends. A server of the flags has
// nothing to reload and says so, rather than dying of the signal's
// default action.
func (e *cmdEnv) watchReload(ctx context.Context) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				e.onHangup()
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

// onHangup handles one SIGHUP.
func (e *cmdEnv) onHangup() {
	if e.configPath == "" {
		e.log.Warn("wechatconf: SIGHUP: nothing to reload (this server runs from flags; --config FILE can be reloaded)")
		return
	}
	st, err := e.reloadConfig()
	if err != nil {
		e.log.Error("wechatconf: configuration NOT reloaded: the running apps and keys are kept", "err", oneLine(describe(err)))
		return
	}
	e.log.Info("wechatconf: configuration reloaded", "apps", st.apps, "started", st.started, "kept", st.kept, "retired", st.dropped)
}

// printCheck prints what --check-config found.
func (e *cmdEnv) printCheck() error {
	p := e.checked
	kinds := map[appKind]int{}
	for _, s := range p.apps {
		kinds[s.kind]++
	}
	var parts []string
	for _, k := range []appKind{kindOfficialAccount, kindMiniProgram, kindWeCom} {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
		}
	}
	_, err := fmt.Fprintf(e.stdout, "config %s: ok: %d apps (%s), %d keys, store %s\n",
		e.configPath, len(p.apps), strings.Join(parts, ", "), len(p.keys), e.storeDesc)
	return err
}
