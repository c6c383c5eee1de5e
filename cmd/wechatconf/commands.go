package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/wechatconf/wechatconf/conf"
)

// withTimeout bounds a one-shot command by --timeout (0: no bound).
func (e *cmdEnv) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.o.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, e.o.timeout)
}

// runToken prints a valid access token and a newline: nothing else goes to
// stdout, so that $(wechatconf token) is the token.
func runToken(ctx context.Context, e *cmdEnv) error {
	if e.wecom != nil {
		return runWeCom(ctx, e)
	}
	return printCredential(ctx, e, conf.AccessToken)
}

// runTicket prints a valid ticket of --type.
func runTicket(ctx context.Context, e *cmdEnv) error {
	if e.wecom != nil {
		return runWeCom(ctx, e)
	}
	kind, err := ticketKind(e.o.ticketType)
	if err != nil {
		return err
	}
	return printCredential(ctx, e, kind)
}

func printCredential(ctx context.Context, e *cmdEnv, kind conf.Kind) error {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	item, err := e.conf.Credential(ctx, kind)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, item.Value)
	return err
}

// runSign prints the JSON that a page passes to wx.config.
func runSign(ctx context.Context, e *cmdEnv) error {
	if e.wecom != nil {
		return runWeCom(ctx, e)
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	cfg, err := e.conf.JSConfig(ctx, e.o.pageURL)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(cfg)
}

// checkPageURL wants the absolute http(s) URL that WeChat signs: a relative
// one would make a signature no browser ever matches.
func checkPageURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--url %q is not the absolute http(s) URL of a page", s)
	}
	return nil
}
