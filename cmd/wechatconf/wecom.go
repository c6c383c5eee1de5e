package main

// WeCom (企业微信) in the one-shot commands: --corpid (and --agentid) make
// token, ticket and sign work on a WeCom app instead of an Official
// Account, on the same store and engine.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
	"github.com/wechatconf/wechatconf/wecom"
)

// corpIDOf returns the CorpID from the flag or the environment: non-empty
// means WeCom mode.
func corpIDOf(o *options, getenv func(string) string) string {
	if o.set["corpid"] {
		return strings.TrimSpace(o.corpID)
	}
	return strings.TrimSpace(getenv(envCorpID))
}

// agentIDOf returns the AgentID from the flag or the environment.
func agentIDOf(o *options, getenv func(string) string) (int64, error) {
	if o.set["agentid"] {
		if o.agentID <= 0 {
			return 0, usagef("--agentid must be a positive AgentID, got %d", o.agentID)
		}
		return o.agentID, nil
	}
	v := strings.TrimSpace(getenv(envAgentID))
	if v == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("%s must be a positive AgentID", envAgentID)
	}
	return id, nil
}

// checkWeComFlags refuses what WeCom mode cannot do.
func checkWeComFlags(cmd *command, o *options) error {
	switch {
	case o.set["appid"]:
		return usagef("give --appid (an Official Account) or --corpid (a WeCom app), not both")
	case o.set["stable-token"]:
		return usagef("--stable-token is an Official Account's; WeCom has none")
	case cmd.name == "ticket" && o.ticketType != "jsapi" && o.ticketType != "agent_config":
		return usagef("with --corpid, --type must be jsapi or agent_config, got %q", o.ticketType)
	}
	return nil
}

// devWeCom starts the in-process WeCom fake for --dev, with the given app
// or the fake's default one.
func devWeCom(e *cmdEnv, corpID string, agentID int64, secret string) (base string) {
	fake := wechattest.NewWeComServer(wechattest.WithCorpApp(corpID, agentID, secret))
	e.closers = append(e.closers, func() error { fake.Close(); return nil })
	fmt.Fprintf(e.stderr, "wechatconf: dev mode: fake WeCom API at %s (CorpID %s, AgentID %d)\n", fake.URL(), corpID, agentID)
	return fake.URL()
}

// newWeComApp builds the App the commands run on.
func newWeComApp(e *cmdEnv, corpID string, agentID int64, secret string, st store.Store, bases []string) error {
	opts := []wecom.Option{wecom.WithStore(st), wecom.WithLogger(e.log)}
	if agentID > 0 {
		opts = append(opts, wecom.WithAgentID(agentID))
	}
	if len(bases) > 0 {
		opts = append(opts, wecom.WithBaseURLs(bases...))
	}
	a, err := wecom.New(corpID, secret, opts...)
	if err != nil {
		return usagef("%v", err)
	}
	e.wecom = a
	e.closers = append(e.closers, a.Close)
	return nil
}

// runWeCom runs token, ticket or sign on the WeCom app.
func runWeCom(ctx context.Context, e *cmdEnv) error {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	a := e.wecom
	switch e.cmd.name {
	case "token", "ticket":
		kind := wecom.AccessToken
		if e.cmd.name == "ticket" {
			kind = wecom.JSAPITicket
			if e.o.ticketType == "agent_config" {
				kind = wecom.AgentTicket
			}
		}
		item, err := a.Credential(ctx, kind)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout, item.Value)
		return err
	case "sign":
		var cfg any
		var err error
		if e.o.agentConfig {
			cfg, err = a.AgentConfig(ctx, e.o.pageURL)
		} else {
			cfg, err = a.JSConfig(ctx, e.o.pageURL)
		}
		if err != nil {
			return err
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(cfg)
	}
	return usagef("%s does not take --corpid", e.cmd.name)
}
