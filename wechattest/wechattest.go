package wechattest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The app registered when no WithApp option is given. The secret is a
// made-up 32-hex-digit value shaped like a real AppSecret.
const (
	DefaultAppID     = "wx00000000000000a1"
	DefaultAppSecret = "5ec2e7a1f0d94b3c8a6e1d2b7f0c9a41"
)

// Defaults of the options, matching the real platform.
const (
	DefaultTokenTTL       = 7200 * time.Second // expires_in of classic tokens
	DefaultStableTokenTTL = 7200 * time.Second // expires_in of new stable tokens
	DefaultTicketTTL      = 7200 * time.Second // expires_in of jsapi and wx_card tickets
	DefaultGrace          = 5 * time.Minute    // how long a replaced credential keeps working
	DefaultDailyQuota     = 2000               // classic grants per app per day
)

// Limits of /cgi-bin/stable_token, fixed by the platform.
const (
	// StableRollover is the remaining lifetime at or below which a
	// non-forced stable_token call issues a new token instead of returning
	// the current one.
	StableRollover = 300 * time.Second
	// StableForceDailyLimit is how many force_refresh grants an app may make
	// per day; the next one gets 45009.
	StableForceDailyLimit = 20
	// StableForceInterval is the least time between two force_refresh
	// grants of one app; a sooner one gets 45011.
	StableForceInterval = 30 * time.Second
)

// Errcodes the Fake answers, named so that tests read as what they check.
const (
	CodeBusy              = -1    // system busy (only via FailNext)
	CodeInvalidCredential = 40001 // access token invalid or not latest
	CodeInvalidGrantType  = 40002 // grant_type is not client_credential
	CodeInvalidAppID      = 40013 // unknown appid
	CodeInvalidArgs       = 40097 // unknown ticket type
	CodeInvalidAppSecret  = 40125 // wrong secret
	CodeTokenMissing      = 41001 // no access_token parameter
	CodeAppIDMissing      = 41002 // no appid
	CodeSecretMissing     = 41004 // no secret
	CodeTokenExpired      = 42001 // access token past its expiry
	CodeRequireGET        = 43001 // wrong HTTP method on a GET endpoint
	CodeRequirePOST       = 43002 // wrong HTTP method on stable_token
	CodeDailyQuota        = 45009 // daily quota used up
	CodeMinuteQuota       = 45011 // force_refresh sooner than 30 s after the last
	CodeDataFormat        = 47001 // stable_token body is not the expected JSON
)

const (
	msgBusy              = "system busy"
	msgInvalidCredential = "invalid credential, access_token is invalid or not latest"
	msgInvalidGrantType  = "invalid grant_type"
	msgInvalidAppID      = "invalid appid"
	msgInvalidArgs       = "invalid args"
	msgInvalidAppSecret  = "invalid appsecret"
	msgTokenMissing      = "access_token missing"
	msgAppIDMissing      = "appid missing"
	msgSecretMissing     = "appsecret missing"
	msgTokenExpired      = "access_token expired"
	msgRequireGET        = "require GET method"
	msgRequirePOST       = "require POST method"
	msgDailyQuota        = "reach max api daily quota limit"
	msgMinuteQuota       = "api minute-quota reach limit"
	msgDataFormat        = "data format error"

	contentTypeJSON = "application/json"
)

// Paths the Fake serves.
const (
	PathToken       = "/cgi-bin/token"
	PathStableToken = "/cgi-bin/stable_token"
	PathGetTicket   = "/cgi-bin/ticket/getticket"
	PathCallbackIP  = "/cgi-bin/getcallbackip"
)

// chinaTime is the zone in which WeChat's quota days begin and end.
var chinaTime = time.FixedZone("CST", 8*60*60)

// retention is how long a dead credential is remembered, so that using it
// answers 42001 or 40001 as its history says rather than a generic 40001.
const retention = 24 * time.Hour

// maxBody bounds how much of a request body the Fake reads; a stable_token
// body is well under 200 bytes.
const maxBody = 64 << 10

// Option configures a Fake or Server.
type Option func(*config)

type appCred struct{ id, secret string }

type config struct {
	apps                        []appCred
	now                         func() time.Time
	tokenTTL, stableTTL, tktTTL time.Duration
	grace, latency              time.Duration
	quota                       int
}

// WithApp registers an app. Repeat it for several apps, each with its own
// tokens, tickets and quotas; a repeated appid takes the last secret. When
// at least one WithApp with a non-empty appid and secret is given, the
// default app is not registered; entries with an empty appid or secret are
// skipped (an unreachable app would only hide a mistake in the test).
func WithApp(appid, secret string) Option {
	return func(c *config) {
		if appid != "" && secret != "" {
			c.apps = append(c.apps, appCred{appid, secret})
		}
	}
}

// WithClock sets the clock behind every expiry, grace and quota-day
// decision (default time.Now). Share it with the code under test to move
// both through time together; Clock is a ready-made one. nil keeps time.Now.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// WithTokenTTL sets the lifetime (expires_in) of classic tokens. A
// non-positive d keeps the default, 7200 s.
func WithTokenTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.tokenTTL = d
		}
	}
}

// WithStableTokenTTL sets the lifetime of new stable tokens. A non-positive
// d keeps the default, 7200 s. At StableRollover or less, every non-forced
// call issues a new token.
func WithStableTokenTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.stableTTL = d
		}
	}
}

// WithTicketTTL sets the lifetime of jsapi and wx_card tickets. A
// non-positive d keeps the default, 7200 s.
func WithTicketTTL(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.tktTTL = d
		}
	}
}

// WithGrace sets how long a replaced credential keeps working after the
// grant that replaced it (default five minutes, as on the real platform).
// Zero makes replacement immediate; a negative d counts as zero.
func WithGrace(d time.Duration) Option {
	return func(c *config) { c.grace = max(d, 0) }
}

// WithLatency delays every credential request (token, stable_token,
// getticket) by d of real time, to test timeouts and the piling up of
// waiters. The wait ends early when the request's context is done or the
// Server is closed. SetLatency changes it at run time.
func WithLatency(d time.Duration) Option {
	return func(c *config) { c.latency = max(d, 0) }
}

// WithDailyQuota sets how many classic grants each app gets per day
// (default 2000) before /cgi-bin/token answers 45009. Zero refuses every
// grant, to test the quota path at once; a negative n means no limit.
func WithDailyQuota(n int) Option {
	return func(c *config) { c.quota = n }
}

// Stats counts what the Fake has done since New or the last ResetStats.
type Stats struct {
	// TokenGrants counts classic tokens issued through /cgi-bin/token.
	TokenGrants int
	// StableTokenGrants counts new stable tokens issued, forced or not;
	// calls answered with the current token do not count.
	StableTokenGrants int
	// StableTokenForced counts the stable tokens issued on force_refresh
	// (a subset of StableTokenGrants).
	StableTokenForced int
	// JSAPITickets and WXCardTickets count tickets issued by type.
	JSAPITickets, WXCardTickets int
	// ExternalGrants counts classic tokens issued by GrantElsewhere.
	ExternalGrants int
	// Rejections counts getticket and getcallbackip calls refused because
	// the access token was missing, invalid or expired.
	Rejections int
	// Requests counts every HTTP request the Fake received, on any path,
	// including failed, injected-fault and cancelled ones.
	Requests int
}

type kind int

const (
	kindClassic kind = iota
	kindStable
	kindJSAPI
	kindWXCard
	numKinds
)

func (k kind) isToken() bool { return k == kindClassic || k == kindStable }

// cred is one issued token or ticket.
type cred struct {
	app       *app
	kind      kind
	expiresAt time.Time
	cutoff    time.Time // when it was replaced or revoked; zero if never
}

// end is when the credential stops working.
func (c *cred) end() time.Time {
	if !c.cutoff.IsZero() && c.cutoff.Before(c.expiresAt) {
		return c.cutoff
	}
	return c.expiresAt
}

// status is the errcode a use of the credential at now gets (0 if valid).
func (c *cred) status(now time.Time) int {
	if !c.cutoff.IsZero() && !now.Before(c.cutoff) && c.cutoff.Before(c.expiresAt) {
		return CodeInvalidCredential
	}
	if !now.Before(c.expiresAt) {
		return CodeTokenExpired
	}
	return 0
}

// cut makes the credential stop working at t, unless it stops sooner.
func (c *cred) cut(t time.Time) {
	if c.cutoff.IsZero() || t.Before(c.cutoff) {
		c.cutoff = t
	}
}

// family holds the two credentials of one kind that may still work: the
// current one and the one it replaced.
type family struct{ prev, cur string }

// dayCount counts events within one quota day.
type dayCount struct {
	day string
	n   int
}

func (d *dayCount) at(day string) int {
	if d.day != day {
		d.day, d.n = day, 0
	}
	return d.n
}

type app struct {
	id, secret string
	fams       [numKinds]family
	grants     dayCount // classic grants, against the daily quota
	forced     dayCount // stable force_refresh grants
	lastForced time.Time
}

// Fake is WeChat's credential API as an http.Handler. It holds all state
// (apps, issued credentials, quotas, injected faults, statistics) and is safe
// for concurrent use. Serve it with NewServer, or mount it in a handler or
// call ServeHTTP directly.
type Fake struct {
	cfg     config
	latency atomic.Int64 // time.Duration
	stop    chan struct{}
	stopped sync.Once
	inside  atomic.Int64 // requests inside ServeHTTP, for tests

	mu     sync.Mutex
	apps   map[string]*app
	creds  map[string]*cred
	faults []Fault
	stats  Stats
	issued int // since the last sweep
}

// New returns a Fake with the given options. Without WithApp it knows one
// app, DefaultAppID with DefaultAppSecret.
func New(opts ...Option) *Fake {
	cfg := config{
		now:       time.Now,
		tokenTTL:  DefaultTokenTTL,
		stableTTL: DefaultStableTokenTTL,
		tktTTL:    DefaultTicketTTL,
		grace:     DefaultGrace,
		quota:     DefaultDailyQuota,
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if len(cfg.apps) == 0 {
		cfg.apps = []appCred{{DefaultAppID, DefaultAppSecret}}
	}
	f := &Fake{
		cfg:   cfg,
		stop:  make(chan struct{}),
		apps:  make(map[string]*app, len(cfg.apps)),
		creds: make(map[string]*cred),
	}
	for _, a := range cfg.apps {
		f.apps[a.id] = &app{id: a.id, secret: a.secret}
	}
	f.latency.Store(int64(cfg.latency))
	return f
}

// SetLatency changes the delay added to every credential request from now
// on (requests already waiting keep theirs). A negative d counts as zero.
func (f *Fake) SetLatency(d time.Duration) { f.latency.Store(int64(max(d, 0))) }

// FailNext makes the next n credential requests (token, stable_token,
// getticket) fail with fault, without granting anything. Calls queue up:
// FailNext(1, Busy()) then FailNext(1, Malformed()) fails one request each
// way, in that order. A request takes its fault after its latency, so one
// cancelled while waiting uses none. n <= 0 adds nothing.
func (f *Fake) FailNext(n int, fault Fault) {
	if n <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.faults = append(f.faults, fault)
	}
}

// Revoke kills every live classic token, stable token and ticket of appid at
// once, as if the platform had revoked them (a secret reset, say): their next
// use gets 40001. New grants work as usual; a non-forced stable_token call
// issues a new token. An unknown appid is ignored.
func (f *Fake) Revoke(appid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.apps[appid]
	if a == nil {
		return
	}
	now := f.cfg.now()
	for k := range a.fams {
		for _, v := range []string{a.fams[k].prev, a.fams[k].cur} {
			if c := f.creds[v]; c != nil {
				c.cut(now)
			}
		}
	}
}

// GrantElsewhere plays another client of appid (a colleague's script, a
// second deployment) that grants a classic token behind the back of the code
// under test. The grace rule is the one of a normal grant: the token that was
// current keeps working for the grace window, older ones die. It counts in
// Stats.ExternalGrants and uses the app's daily quota, yet is never refused.
// It returns the new token, or "" for an unknown appid.
func (f *Fake) GrantElsewhere(appid string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.apps[appid]
	if a == nil {
		return ""
	}
	now := f.cfg.now()
	a.grants.at(quotaDay(now))
	a.grants.n++
	f.stats.ExternalGrants++
	return f.issueLocked(a, kindClassic, now, f.cfg.tokenTTL, false)
}

// CurrentToken returns the classic token of appid that the platform holds as
// the latest (granted by anyone, valid or not), or "" if none was granted or
// appid is unknown. Tests use it to check that nodes converged on it.
func (f *Fake) CurrentToken(appid string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.apps[appid]; a != nil {
		return a.fams[kindClassic].cur
	}
	return ""
}

// Valid reports whether a protected call would accept token (classic or
// stable) now, by the Fake's clock.
func (f *Fake) Valid(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.creds[token]
	return c != nil && c.kind.isToken() && c.status(f.cfg.now()) == 0
}

// ValidTicket reports whether ticket (jsapi or wx_card) is still valid now,
// by the Fake's clock: whether a JS-SDK signature made with it would pass.
func (f *Fake) ValidTicket(ticket string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.creds[ticket]
	return c != nil && !c.kind.isToken() && c.status(f.cfg.now()) == 0
}

// Stats returns a snapshot of the counters.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// ResetStats zeroes the counters, typically after a test's setup phase. It
// leaves quotas, credentials and queued faults alone.
func (f *Fake) ResetStats() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats = Stats{}
}

// ServeHTTP answers one request to the credential API.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.inside.Add(1)
	defer f.inside.Add(-1)
	f.mu.Lock()
	f.stats.Requests++
	f.mu.Unlock()

	switch r.URL.Path {
	case PathToken:
		f.serveCredential(w, r, f.token)
	case PathStableToken:
		f.serveCredential(w, r, f.stableToken)
	case PathGetTicket:
		f.serveCredential(w, r, f.ticket)
	case PathCallbackIP:
		writeResult(w, f.callbackIP(r))
	default:
		http.NotFound(w, r)
	}
}

// result is an answer computed under the lock and written after it.
type result struct {
	status int
	body   any
}

func ok(body any) result               { return result{http.StatusOK, body} }
func fail(code int, msg string) result { return result{http.StatusOK, errorBody{code, msg}} }

type errorBody struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
}

type tokenBody struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

type ticketBody struct {
	Errcode   int    `json:"errcode"`
	Errmsg    string `json:"errmsg"`
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
}

type ipBody struct {
	IPList []string `json:"ip_list"`
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil { // cannot happen with the Fake's own types
		http.Error(w, "wechattest: encoding the answer failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeResult(w http.ResponseWriter, r result) { writeJSON(w, r.status, r.body) }

// serveCredential adds the latency and injected faults shared by the
// credential endpoints, then lets h answer.
func (f *Fake) serveCredential(w http.ResponseWriter, r *http.Request, h func(*http.Request, []byte) result) {
	// Read the body first: net/http notices a client hanging up (and ends
	// the request's context) only once the body has been read to its end.
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, maxBody))
	}
	switch f.wait(r.Context()) {
	case waitCancelled:
		return // nobody is listening; nothing was granted
	case waitClosed:
		http.Error(w, "wechattest: server closed", http.StatusServiceUnavailable)
		return
	}
	f.mu.Lock()
	var fault Fault
	faulty := len(f.faults) > 0
	if faulty {
		fault = f.faults[0]
		f.faults = f.faults[1:]
	}
	f.mu.Unlock()
	if faulty {
		if fault.kind == faultLostAnswer {
			_ = h(r, body) // granted, but the answer never arrives
		}
		fault.write(w)
		return
	}
	writeResult(w, h(r, body))
}

type waitResult int

const (
	waitDone waitResult = iota
	waitCancelled
	waitClosed
)

// wait sleeps for the current latency, or less if ctx ends or the Server
// closes first.
func (f *Fake) wait(ctx context.Context) waitResult {
	d := time.Duration(f.latency.Load())
	if d <= 0 {
		return waitDone
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return waitDone
	case <-ctx.Done():
		return waitCancelled
	case <-f.stop:
		return waitClosed
	}
}

// shutdown ends every latency wait at once, and every later one at its start.
func (f *Fake) shutdown() { f.stopped.Do(func() { close(f.stop) }) }

// authLocked checks appid and secret the way the platform does.
func (f *Fake) authLocked(appid, secret string) (*app, *result) {
	if appid == "" {
		r := fail(CodeAppIDMissing, msgAppIDMissing)
		return nil, &r
	}
	a := f.apps[appid]
	if a == nil {
		r := fail(CodeInvalidAppID, msgInvalidAppID)
		return nil, &r
	}
	if secret == "" {
		r := fail(CodeSecretMissing, msgSecretMissing)
		return nil, &r
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(a.secret)) != 1 {
		r := fail(CodeInvalidAppSecret, msgInvalidAppSecret)
		return nil, &r
	}
	return a, nil
}

// token serves GET /cgi-bin/token.
func (f *Fake) token(r *http.Request, _ []byte) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	q := r.URL.Query()
	if q.Get("grant_type") != "client_credential" {
		return fail(CodeInvalidGrantType, msgInvalidGrantType)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, bad := f.authLocked(q.Get("appid"), q.Get("secret"))
	if bad != nil {
		return *bad
	}
	now := f.cfg.now()
	used := a.grants.at(quotaDay(now))
	if f.cfg.quota >= 0 && used >= f.cfg.quota {
		return fail(CodeDailyQuota, msgDailyQuota)
	}
	a.grants.n++
	f.stats.TokenGrants++
	v := f.issueLocked(a, kindClassic, now, f.cfg.tokenTTL, false)
	return ok(tokenBody{AccessToken: v, ExpiresIn: seconds(f.cfg.tokenTTL)})
}

// stableToken serves POST /cgi-bin/stable_token.
func (f *Fake) stableToken(r *http.Request, body []byte) result {
	if r.Method != http.MethodPost {
		return fail(CodeRequirePOST, msgRequirePOST)
	}
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if json.Unmarshal(body, &req) != nil {
		return fail(CodeDataFormat, msgDataFormat)
	}
	if req.GrantType != "client_credential" {
		return fail(CodeInvalidGrantType, msgInvalidGrantType)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, bad := f.authLocked(req.AppID, req.Secret)
	if bad != nil {
		return *bad
	}
	now := f.cfg.now()
	cur := f.creds[a.fams[kindStable].cur]
	keepPrev := false
	if req.ForceRefresh {
		if a.forced.at(quotaDay(now)) >= StableForceDailyLimit {
			return fail(CodeDailyQuota, msgDailyQuota)
		}
		if since := now.Sub(a.lastForced); !a.lastForced.IsZero() && since >= 0 && since < StableForceInterval {
			return fail(CodeMinuteQuota, msgMinuteQuota)
		}
		a.forced.n++
		a.lastForced = now
		f.stats.StableTokenForced++
	} else if cur != nil && cur.status(now) == 0 {
		left := cur.end().Sub(now)
		if left > StableRollover {
			return ok(tokenBody{AccessToken: a.fams[kindStable].cur, ExpiresIn: seconds(left)})
		}
		keepPrev = true // rolled over early: the old one lives out its life
	}
	f.stats.StableTokenGrants++
	v := f.issueLocked(a, kindStable, now, f.cfg.stableTTL, keepPrev)
	return ok(tokenBody{AccessToken: v, ExpiresIn: seconds(f.cfg.stableTTL)})
}

// checkTokenLocked finds the credential behind an access_token parameter, or
// the refusal its use gets (counted in Stats.Rejections).
func (f *Fake) checkTokenLocked(token string, now time.Time) (*cred, *result) {
	var r result
	c := f.creds[token]
	switch {
	case token == "":
		r = fail(CodeTokenMissing, msgTokenMissing)
	case c == nil || !c.kind.isToken():
		r = fail(CodeInvalidCredential, msgInvalidCredential)
	default:
		switch c.status(now) {
		case 0:
			return c, nil
		case CodeTokenExpired:
			r = fail(CodeTokenExpired, msgTokenExpired)
		default:
			r = fail(CodeInvalidCredential, msgInvalidCredential)
		}
	}
	f.stats.Rejections++
	return nil, &r
}

// ticket serves GET /cgi-bin/ticket/getticket.
func (f *Fake) ticket(r *http.Request, _ []byte) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	q := r.URL.Query()
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.now()
	tok, bad := f.checkTokenLocked(q.Get("access_token"), now)
	if bad != nil {
		return *bad
	}
	var k kind
	switch q.Get("type") {
	case "jsapi":
		k = kindJSAPI
		f.stats.JSAPITickets++
	case "wx_card":
		k = kindWXCard
		f.stats.WXCardTickets++
	default:
		return fail(CodeInvalidArgs, msgInvalidArgs)
	}
	v := f.issueLocked(tok.app, k, now, f.cfg.tktTTL, false)
	return ok(ticketBody{Errmsg: "ok", Ticket: v, ExpiresIn: seconds(f.cfg.tktTTL)})
}

// callbackIP serves GET /cgi-bin/getcallbackip, the protected call.
func (f *Fake) callbackIP(r *http.Request) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, bad := f.checkTokenLocked(r.URL.Query().Get("access_token"), f.cfg.now()); bad != nil {
		return *bad
	}
	return ok(ipBody{IPList: []string{"127.0.0.1"}})
}

// issueLocked makes a new credential of kind k for a, current in its family.
// The one it replaces keeps the grace window (or, with keepPrev, its whole
// life); the one before that dies now.
func (f *Fake) issueLocked(a *app, k kind, now time.Time, ttl time.Duration, keepPrev bool) string {
	fam := &a.fams[k]
	if c := f.creds[fam.prev]; c != nil {
		c.cut(now)
	}
	if c := f.creds[fam.cur]; c != nil && !keepPrev {
		c.cut(now.Add(f.cfg.grace))
	}
	size := 96 // 128 characters, as long as WeChat's access tokens
	if !k.isToken() {
		size = 64 // 86 characters, as long as WeChat's tickets
	}
	v := randomString(size)
	for f.creds[v] != nil { // 2^-512 odds, but uniqueness is promised
		v = randomString(size)
	}
	f.creds[v] = &cred{app: a, kind: k, expiresAt: now.Add(ttl)}
	fam.prev, fam.cur = fam.cur, v
	f.issued++
	if f.issued >= 1024 {
		f.sweepLocked(now)
	}
	return v
}

// sweepLocked forgets credentials that died more than a day ago, so that a
// long-running Fake does not grow without bound.
func (f *Fake) sweepLocked(now time.Time) {
	f.issued = 0
	for v, c := range f.creds {
		if now.Sub(c.end()) > retention {
			delete(f.creds, v)
		}
	}
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// seconds is d in whole seconds, as expires_in carries it.
func seconds(d time.Duration) int64 { return int64(d / time.Second) }

// quotaDay names the WeChat quota day that contains t.
func quotaDay(t time.Time) string { return t.In(chinaTime).Format(time.DateOnly) }
