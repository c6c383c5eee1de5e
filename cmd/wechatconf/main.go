// Command wechatconf keeps a WeChat Official Account's access_token and
// tickets valid through a shared store, so that exactly one process grants
// each new credential, and hands them out:
//
//	wechatconf token                          print a valid access_token
//	wechatconf ticket [--type jsapi|wx_card]  print a valid ticket
//	wechatconf sign --url URL                 print the JS-SDK wx.config JSON
//	wechatconf serve                          run the central token server
//
// Every command takes the app (--appid, --secret or --secret-file), the store
// (--store URL: memory:, bolt:PATH, redis://, rediss://, redis+cluster://,
// redis+sentinel://, memcache://, postgres:// or a postgres:KEY=VALUE DSN) and the WeChat API hosts (--api-base), with environment
// fallbacks (WECHAT_APPID, WECHAT_APPSECRET, WECHATCONF_STORE,
// WECHATCONF_API_BASE). --dev runs everything against an in-process fake of
// WeChat's API and a throw-away bbolt store, for a laptop with no account and
// no network:
//
//	go run ./cmd/wechatconf serve --dev
//
// token and ticket print the credential and nothing else on stdout, so that
// scripts can use $(wechatconf token). Errors are one line on stderr; the exit
// status is 2 for a usage or configuration error and 1 for a failure at run
// time. The AppSecret and the server key are never printed (except the key
// that --dev makes up), and no credential is printed except by token and
// ticket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"
)

func main() {
	quietRedis()
	// SIGTERM and SIGINT cancel ctx: serve shuts down gracefully, the
	// other commands give up. After that first signal the default
	// behaviour is back, so a second Ctrl-C kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // run-time failure: store, WeChat, network
	exitUsage   = 2 // bad flags or configuration
)

// command is one subcommand.
type command struct {
	name, args, summary string
	// flags registers the command's own flags beyond the common ones.
	flags func(fs *flagSet, o *options)
	// run does the work. stdout gets the command's output only.
	run func(ctx context.Context, e *cmdEnv) error
	// bare: the command takes none of the common flags and needs no app
	// or store (run gets an env with only its options and writers).
	bare bool
}

// commands in the order the usage lists them.
var commands = []*command{
	{name: "token", summary: "print a valid access_token", run: runToken},
	{name: "ticket", args: "[--type jsapi|wx_card]", summary: "print a valid jsapi (or wx_card) ticket", flags: ticketFlags, run: runTicket},
	{name: "sign", args: "--url URL", summary: "print the JS-SDK wx.config JSON for a page URL", flags: signFlags, run: runSign},
	{name: "serve", args: "[--config FILE]", summary: "run the token server: an HTTP JSON API for other services", flags: serveFlags, run: runServe},
	{name: "hash-key", args: "< KEYFILE", summary: "print the SHA-256 of a client key read on stdin, for the keys of serve --config", flags: hashKeyFlags, run: runHashKey, bare: true},
}

// run is the whole command, minus process concerns (signals, os.Exit), so
// that tests can call it in-process. args excludes the program name; getenv
// is os.Getenv or a test's fake environment.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	stderr = &lockedWriter{w: stderr}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "wechatconf: no command given (want token, ticket, sign, serve or hash-key; see wechatconf help)")
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	}
	var cmd *command
	for _, c := range commands {
		if c.name == name {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "wechatconf: unknown command %q (want token, ticket, sign, serve or hash-key; see wechatconf help)\n", oneLine(name))
		return exitUsage
	}
	prefix := "wechatconf " + cmd.name + ": "

	o := &options{}
	fs := newFlagSet(cmd, o)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, errHelp) {
			fs.printUsage(stdout)
			return exitOK
		}
		fmt.Fprintln(stderr, prefix+oneLine(hideFlagValue(err.Error()))+" (see wechatconf "+cmd.name+" -h)")
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%sunexpected argument %q (see wechatconf %s -h)\n", prefix, oneLine(fs.Arg(0)), cmd.name)
		return exitUsage
	}
	o.set = fs.setFlags()

	var e *cmdEnv
	var err error
	if cmd.bare {
		e = &cmdEnv{cmd: cmd, o: o, stdout: stdout, stderr: stderr}
	} else {
		e, err = setup(ctx, cmd, o, stdout, stderr, getenv)
	}
	if err == nil {
		err = cmd.run(ctx, e)
		if cerr := e.close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, prefix+oneLine(describe(err)))
		var ue *usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailure
	}
	return exitOK
}

// usage prints the command overview.
func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("wechatconf keeps a WeChat Official Account's access_token and tickets valid\n")
	b.WriteString("through a shared store, so that one process grants each new credential.\n\nUsage:\n")
	for _, c := range commands {
		line := c.name
		if c.args != "" {
			line += " " + c.args
		}
		fmt.Fprintf(&b, "  wechatconf %-40s %s\n", line+" [flags]", c.summary)
	}
	b.WriteString("\nTry it with no WeChat account:  go run ./cmd/wechatconf serve --dev\n")
	b.WriteString("Run 'wechatconf COMMAND -h' for the flags of a command.\n")
	io.WriteString(w, b.String())
}

// usageError is a mistake in flags, environment or configuration: exit
// status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// hideFlagValue drops the value the flag package quotes in `invalid value
// "V" for flag -api-base: ...`: an API base may carry a user and password.
// Other flags' values (durations, types) are no secret and stay.
func hideFlagValue(msg string) string {
	const head = "invalid value "
	if !strings.HasPrefix(msg, head) {
		return msg
	}
	i := strings.LastIndex(msg, " for flag -api-base: ")
	if i < 0 {
		return msg
	}
	return head + "for flag" + msg[i+len(" for flag"):]
}

// oneLine keeps an error message on one line, whatever its cause wrote.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\r", " ")), " ")
}

// lockedWriter serialises writes: the logger, the HTTP server and the
// command all write to stderr from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// quietRedis stops go-redis from printing its own connection errors on
// stderr: the command reports an unreachable store in one line, and serve
// logs store errors through the refresh engine's events. It sets a process
// global, so only main (and TestMain) call it.
func quietRedis() { redis.SetLogger(discardRedisLog{}) }

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}
