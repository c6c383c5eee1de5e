package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// Environment variables read when the matching flag is not given. --dev
// ignores all of them, so that a trial run never touches production
// settings by accident.
const (
	envAppID     = "WECHAT_APPID"
	envSecret    = "WECHAT_APPSECRET"
	envStore     = "WECHATCONF_STORE"
	envAPIBase   = "WECHATCONF_API_BASE"
	envServerKey = "WECHATCONF_SERVER_KEY"
	envCorpID    = "WECOM_CORPID"
	envAgentID   = "WECOM_AGENTID"
)

// Defaults of the flags.
const (
	defaultListen  = "127.0.0.1:8080"
	defaultTimeout = time.Minute
	// minKeyLen is the shortest server key serve accepts: anything
	// shorter can be guessed.
	minKeyLen = 16
)

// errHelp is returned by Parse for -h and -help.
var errHelp = flag.ErrHelp

// options holds the parsed flags of one command.
type options struct {
	appID, secret, secretFile string
	storeURL                  string
	apiBases                  listFlag
	stable, dev, verbose      bool
	timeout                   time.Duration // token, ticket, sign
	listen, key, keyFile      string        // serve
	loosePerms                bool          // serve: accept secret files others can read
	configPath                string        // serve: the apps and keys
	checkConfig               bool          // serve: check --config and exit
	maxConns                  int           // serve: connections held at once
	ticketType                string        // ticket
	pageURL                   string        // sign
	agentConfig               bool          // sign: wx.agentConfig (WeCom)
	corpID                    string        // WeCom
	agentID                   int64         // WeCom

	set map[string]bool // flags given on the command line
}

// flagSet is a flag.FlagSet that reports errors instead of printing them,
// so that a bad flag makes exactly one line on stderr.
type flagSet struct {
	*flag.FlagSet
	cmd *command
}

func newFlagSet(cmd *command, o *options) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("wechatconf "+cmd.name, flag.ContinueOnError), cmd: cmd}
	fs.SetOutput(io.Discard)
	if cmd.bare {
		if cmd.flags != nil {
			cmd.flags(fs, o)
		}
		return fs
	}
	fs.StringVar(&o.appID, "appid", "", "the Official Account's AppID (env "+envAppID+")")
	fs.StringVar(&o.corpID, "corpid", "", "a WeCom (企业微信) corp's CorpID instead of an AppID: --secret is then the app's secret (env "+envCorpID+")")
	fs.Int64Var(&o.agentID, "agentid", 0, "with --corpid: the app's AgentID; leave out for the contacts or customer-contact secret (env "+envAgentID+")")
	fs.StringVar(&o.secret, "secret", "", "the AppSecret; prefer --secret-file, since other users can read the command line (env "+envSecret+")")
	fs.StringVar(&o.secretFile, "secret-file", "", "read the AppSecret from this file (surrounding whitespace is ignored)")
	fs.StringVar(&o.storeURL, "store", "", "where credentials are shared (env "+envStore+"; default bolt: in the user's cache directory):\n"+
		"  memory:                                   this process only\n"+
		"  bolt:PATH                                 a bbolt file, one process at a time\n"+
		"  redis[s]://[USER:PASSWORD@]HOST:PORT[/DB]  one Redis server (rediss: TLS; ?skip_verify=true is warned about)\n"+
		"  redis[s]+cluster://[USER:PASSWORD@]HOST:PORT?addr=HOST:PORT&...  Redis Cluster, seed nodes\n"+
		"  redis[s]+sentinel://[USER:PASSWORD@]HOST:PORT[/DB]?master_name=NAME&addr=HOST:PORT&password=REDIS-PASSWORD\n"+
		"                                            Redis Sentinel: the user part logs in to the sentinels\n"+
		"  memcache://HOST:PORT[,HOST:PORT...]       memcached (no user part: it has no authentication)\n"+
		"  postgres://USER:PASSWORD@HOST:PORT/DB?... PostgreSQL URL, or postgres:host=H user=U password=P dbname=D (key=value DSN)\n"+
		"Passwords are never printed")
	fs.Var(&o.apiBases, "api-base", "WeChat API base URL; repeat for failover, tried in order (env "+envAPIBase+", comma-separated; default https://api.weixin.qq.com, then https://api2.weixin.qq.com)")
	fs.BoolVar(&o.stable, "stable-token", false, "grant access tokens with /cgi-bin/stable_token instead of /cgi-bin/token")
	fs.BoolVar(&o.dev, "dev", false, "run against an in-process fake of WeChat's API and a bbolt store in a temporary directory (unless --store is given); ignores the environment")
	fs.BoolVar(&o.verbose, "v", false, "log what the refresh engine does on stderr")
	if cmd.name != "serve" {
		fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "give up after this long (0: no limit)")
	}
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	return fs
}

func ticketFlags(fs *flagSet, o *options) {
	fs.StringVar(&o.ticketType, "type", "jsapi", "ticket type: jsapi or wx_card; with --corpid: jsapi (the corp ticket) or agent_config")
}

func signFlags(fs *flagSet, o *options) {
	fs.StringVar(&o.pageURL, "url", "", "the full URL of the page that calls wx.config (required; its #fragment is dropped)")
	fs.BoolVar(&o.agentConfig, "agent", false, "with --corpid: sign for wx.agentConfig with the app's agent ticket instead of wx.config")
}

func serveFlags(fs *flagSet, o *options) {
	fs.StringVar(&o.configPath, "config", "", "serve the apps and keys of this JSON file (see the README's operator's guide) instead of one app of the flags; SIGHUP reloads it")
	fs.BoolVar(&o.checkConfig, "check-config", false, "with --config: check the file (its apps, keys, secrets and store URL), print a summary and exit, without starting anything")
	fs.StringVar(&o.listen, "listen", defaultListen, "address to listen on; the default serves this machine only")
	fs.StringVar(&o.key, "key", "", "bearer key clients must send; prefer --key-file (env "+envServerKey+")")
	fs.StringVar(&o.keyFile, "key-file", "", "read the bearer key from this file (surrounding whitespace is ignored)")
	fs.IntVar(&o.maxConns, "max-conns", defaultMaxConns, "most connections held open at once; at the limit an idle keep-alive connection is closed for a new one, else new ones wait")
	fs.BoolVar(&o.loosePerms, "allow-loose-perms", false, "accept a --secret-file or --key-file that group or others can read (warned about); without it serve refuses one: chmod 600 it")
}

// setFlags returns the names of the flags given on the command line.
func (fs *flagSet) setFlags() map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// printUsage writes the command's help, with its flags, to w.
func (fs *flagSet) printUsage(w io.Writer) {
	line := "wechatconf " + fs.cmd.name
	if fs.cmd.args != "" {
		line += " " + fs.cmd.args
	}
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s.\n\nFlags:\n", line, capitalize(fs.cmd.summary))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Set adds one API base URL, checked at once so that a typo is a usage
// error before anything starts.
func (l *listFlag) Set(s string) error {
	if err := checkAPIBase(s); err != nil {
		return fmt.Errorf("not an http(s) base URL without a user part or query, such as https://api.weixin.qq.com")
	}
	*l = append(*l, s)
	return nil
}

// checkAPIBase accepts an http(s) URL with a host and no query: the shape
// conf.WithBaseURLs wants.
func checkAPIBase(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q is not an http(s) base URL without a user part or query, such as https://api.weixin.qq.com", redactURL(s))
	}
	return nil
}

// splitList splits a comma-separated environment value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
