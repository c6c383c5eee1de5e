package main

import (
	"fmt"
	"net/url"
	"strings"
)

// warn says an insecure choice once, at start: through the log for serve,
// as one line on stderr for the one-shot commands (whose log is off unless
// -v). The choice stays allowed.
func (e *cmdEnv) warn(msg string) {
	if e.cmd.name == "serve" {
		e.log.Warn("wechatconf: insecure: " + msg)
		return
	}
	fmt.Fprintln(e.stderr, "wechatconf: warning: "+msg)
}

// warnInsecureAPIBases warns about plain-HTTP API bases other than this
// machine: the AppSecret travels in their query. For serve, conf says it
// through the log at New, so only the one-shot commands need this.
func (e *cmdEnv) warnInsecureAPIBases(bases []string) {
	if e.cmd.name == "serve" {
		return
	}
	for _, b := range bases {
		u, err := url.Parse(b)
		if err == nil && strings.EqualFold(u.Scheme, "http") && !isLoopbackHost(u.Hostname()) {
			e.warn(fmt.Sprintf("API base http://%s is plain HTTP: the AppSecret and the credentials travel unencrypted (use https://)", u.Host))
		}
	}
}
