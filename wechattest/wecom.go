package wechattest

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The WeCom app registered when no WithCorpApp option is given: one
// self-built app of one corp. The values are made up, shaped like real
// ones (an 18-character CorpID, a 43-character secret).
const (
	DefaultCorpID      = "ww00000000000000c1"
	DefaultAgentID     = 1000002
	DefaultAgentSecret = "wEc0mAgentSecretAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)

// Defaults of the WeCom options. The rate limits follow WeCom's documents:
// at most 1000 calls per minute of one API per corp (基础频率), and for
// either jsapi_ticket at most 400 per hour per corp and 100 per hour per
// app (JS-SDK 签名算法).
const (
	DefaultWeComTokenTTL  = 7200 * time.Second // expires_in of a new access_token
	DefaultWeComTicketTTL = 7200 * time.Second // expires_in of both jsapi_tickets

	DefaultGetTokenLimit   = 1000        // gettoken calls per corp per DefaultGetTokenPer
	DefaultGetTokenPer     = time.Minute //
	DefaultTicketCorpLimit = 400         // tickets of one kind per corp per DefaultTicketPer
	DefaultTicketAppLimit  = 100         // tickets of one kind per app per DefaultTicketPer
	DefaultTicketPer       = time.Hour   //
)

// Paths the WeCom fake serves (host qyapi.weixin.qq.com). It also serves
// PathCallbackIP, /cgi-bin/getcallbackip, as a protected call any token may
// make.
const (
	PathWeComToken       = "/cgi-bin/gettoken"
	PathWeComJSAPITicket = "/cgi-bin/get_jsapi_ticket"
	PathWeComAgentTicket = "/cgi-bin/ticket/get"
	PathWeComAgentGet    = "/cgi-bin/agent/get"
)

// Errcodes the WeCom fake answers that the Official Account fake's
// constants do not name (or name for another meaning). WeCom's own
// meanings: CodeInvalidCredential (40001) is a wrong corpsecret there,
// CodeTokenMissing (41001), CodeTokenExpired (42001) and CodeRequireGET
// (43001) mean what they do for the Official Account, and CodeSecretMissing
// (41004) is a missing corpsecret.
const (
	CodeWeComInvalidType   = 40005  // ticket/get with a type other than agent_config
	CodeInvalidCorpID      = 40013  // unknown corpid
	CodeInvalidAccessToken = 40014  // unknown, revoked or malformed access_token
	CodeInvalidAgentID     = 40056  // agentid not a number or not an app of the corp
	CodeCorpIDMissing      = 41002  // no corpid parameter
	CodeAgentIDMissing     = 41011  // no agentid parameter
	CodeFreqLimit          = 45009  // rate limit of gettoken or a ticket reached
	CodeConcurrentLimit    = 45033  // more requests at once than WithWeComMaxConcurrent
	CodeAPIForbidden       = 48002  // agent ticket asked with a token of an app without AgentID
	CodeOtherAgent         = 301002 // the token belongs to another app than the agentid named
)

const (
	msgWeComOK            = "ok"
	msgWeComInvalidSecret = "invalid credential"
	msgWeComInvalidType   = "invalid type"
	msgInvalidCorpID      = "invalid corpid"
	msgInvalidAccessToken = "invalid access_token"
	msgInvalidAgentID     = "invalid agentid"
	msgCorpIDMissing      = "corpid missing"
	msgWeComSecretMissing = "corpsecret missing"
	msgAgentIDMissing     = "agentid missing"
	msgFreqLimit          = "api freq out of limit"
	msgConcurrentLimit    = "api concurrent out of limit"
	msgAPIForbidden       = "api forbidden"
	msgOtherAgent         = "not allow operate another agent with this accesstoken."
)

// WeComOption configures a WeCom fake or WeComServer.
type WeComOption func(*wecomConfig)

type wecomAppCred struct {
	corpID  string
	agentID int64
	secret  string
}

type wecomConfig struct {
	apps                  []wecomAppCred
	now                   func() time.Time
	tokenTTL, ticketTTL   time.Duration
	tokenLimit            int
	tokenPer              time.Duration
	ticketCorp, ticketApp int
	ticketPer             time.Duration
	maxConcurrent         int
	latency               time.Duration
}

// WithCorpApp registers an app of a corp: a self-built app with its
// AgentID, or, with agentID 0, a secret without an app (contacts sync,
// customer contact). Each app has its own secret and its own token. Repeat
// the option for several apps and corps. A repeated (corpID, secret) pair
// takes the last AgentID; a repeated non-zero (corpID, agentID) takes the
// last secret. When at least one WithCorpApp with a non-empty corpID and
// secret and a non-negative agentID is given, the default app is not
// registered; other entries are skipped.
func WithCorpApp(corpID string, agentID int64, secret string) WeComOption {
	return func(c *wecomConfig) {
		if corpID != "" && secret != "" && agentID >= 0 {
			c.apps = append(c.apps, wecomAppCred{corpID, agentID, secret})
		}
	}
}

// WithWeComClock sets the clock behind every expiry and rate-limit window
// (default time.Now); share a Clock with the code under test. nil keeps
// time.Now.
func WithWeComClock(now func() time.Time) WeComOption {
	return func(c *wecomConfig) {
		if now != nil {
			c.now = now
		}
	}
}

// WithWeComTokenTTL sets the lifetime of new access tokens. A non-positive
// d keeps the default, 7200 s.
func WithWeComTokenTTL(d time.Duration) WeComOption {
	return func(c *wecomConfig) {
		if d > 0 {
			c.tokenTTL = d
		}
	}
}

// WithWeComTicketTTL sets the lifetime of new corp and agent tickets. A
// non-positive d keeps the default, 7200 s.
func WithWeComTicketTTL(d time.Duration) WeComOption {
	return func(c *wecomConfig) {
		if d > 0 {
			c.ticketTTL = d
		}
	}
}

// WithGetTokenLimit lets each corp make n gettoken calls in any window of
// length per (a sliding window by the fake's clock); the next one gets
// 45009. Every call naming a known corpid counts, repeats and wrong
// secrets included; refused calls do not. Zero refuses every call; a
// negative n, or a non-positive per, means no limit. The default is 1000
// per minute.
func WithGetTokenLimit(n int, per time.Duration) WeComOption {
	return func(c *wecomConfig) {
		if per <= 0 {
			n = -1
		}
		c.tokenLimit, c.tokenPer = n, per
	}
}

// WithTicketLimit bounds the tickets issued in any window of length per:
// corpN per corp and appN per app (the app whose token asks), counted
// separately for corp jsapi tickets and agent tickets; past either bound
// the call gets 45009. A negative bound, or a non-positive per, means no
// limit. The default is 400 per corp and 100 per app per hour.
func WithTicketLimit(corpN, appN int, per time.Duration) WeComOption {
	return func(c *wecomConfig) {
		if per <= 0 {
			corpN, appN = -1, -1
		}
		c.ticketCorp, c.ticketApp, c.ticketPer = corpN, appN, per
	}
}

// WithWeComMaxConcurrent makes gettoken and ticket calls answer 45033 when
// more than n of them are in progress at once (with SetLatency or
// WithWeComLatency, so that they overlap). Zero or less, the default,
// means no limit.
func WithWeComMaxConcurrent(n int) WeComOption {
	return func(c *wecomConfig) { c.maxConcurrent = n }
}

// WithWeComLatency delays every gettoken and ticket call by d of real time
// (ending early when the request's context is done or the server closes).
// SetLatency changes it at run time.
func WithWeComLatency(d time.Duration) WeComOption {
	return func(c *wecomConfig) { c.latency = max(d, 0) }
}

// WeComStats counts what a WeCom fake has done since NewWeCom or the last
// ResetStats.
type WeComStats struct {
	// TokenGrants counts gettoken answers that issued a new token.
	TokenGrants int
	// TokenRepeats counts gettoken answers that returned the app's
	// current token again, as WeCom does while it is valid.
	TokenRepeats int
	// GrantRefusals counts gettoken calls refused for their parameters
	// (41002, 40013, 41004, 40001): a client that retries a wrong
	// secret shows up here.
	GrantRefusals int
	// JSAPITickets counts corp tickets issued by get_jsapi_ticket.
	JSAPITickets int
	// AgentTickets counts agent tickets issued by ticket/get.
	AgentTickets int
	// Rejections counts calls refused because of the access token:
	// missing (41001), invalid or revoked (40014), expired (42001), or
	// of another app than the agentid named (301002).
	Rejections int
	// RateLimited counts calls answered 45009 or 45033.
	RateLimited int
	// Requests counts every HTTP request received, on any path,
	// including failed, injected-fault and cancelled ones.
	Requests int
}

type wecomKind int

const (
	wecomToken wecomKind = iota
	wecomJSAPI
	wecomAgent
)

// window is a sliding-window counter of events.
type window []time.Time

// allow reports whether another event fits n per `per` at now, and records
// it if so. n < 0 always fits.
func (w *window) allow(now time.Time, n int, per time.Duration) bool {
	if n < 0 {
		return true
	}
	kept := (*w)[:0]
	for _, t := range *w {
		if now.Sub(t) < per && !t.After(now) {
			kept = append(kept, t)
		}
	}
	*w = kept
	if len(kept) >= n {
		return false
	}
	*w = append(*w, now)
	return true
}

type wecomCorp struct {
	id       string
	apps     []*wecomApp
	gettoken window
	tickets  [3]window // by wecomKind (tickets only)
}

type wecomApp struct {
	corp    *wecomCorp
	agentID int64
	secret  string
	token   string    // current token, "" if none
	tickets [3]window // by wecomKind (tickets only)
}

type wecomCred struct {
	app       *wecomApp
	kind      wecomKind
	expiresAt time.Time
	revoked   bool
}

// status is the errcode a use at now gets, 0 if valid.
func (c *wecomCred) status(now time.Time) int {
	switch {
	case c.revoked:
		return CodeInvalidAccessToken
	case !now.Before(c.expiresAt):
		return CodeTokenExpired
	}
	return 0
}

// WeCom is a fake of WeCom's (企业微信) credential API as an http.Handler,
// with WeCom's rules rather than the Official Account's: corps with apps,
// one secret and one token per app, gettoken answering the same token while
// it is valid, early revocation, rate limits, the corp and agent
// jsapi_tickets, and the agent check of protected calls. It holds all state
// and is safe for concurrent use. Serve it with NewWeComServer, or call
// ServeHTTP directly. See NewWeCom for what each path answers.
type WeCom struct {
	cfg      wecomConfig
	latency  atomic.Int64 // time.Duration
	inflight atomic.Int64
	stop     chan struct{}
	stopped  sync.Once

	mu     sync.Mutex
	corps  map[string]*wecomCorp
	creds  map[string]*wecomCred
	faults []Fault
	stats  WeComStats
	issued int
}

// NewWeCom returns a WeCom fake. Without WithCorpApp it knows one app,
// DefaultAgentID of DefaultCorpID with DefaultAgentSecret.
//
// Every answer is HTTP 200 with Content-Type application/json and a body
// {"errcode":N,"errmsg":"..."} (plus the result on success, errcode 0,
// errmsg "ok"), except an unknown path (404) and injected faults. The paths,
// each GET only (else 43001):
//
//   - PathWeComToken, gettoken?corpid=&corpsecret=: 41002 without corpid,
//     40013 for an unknown one, 45009 past WithGetTokenLimit, 41004 without
//     corpsecret, 40001 when no app of that corp has it. Else, while the
//     app's current token is valid (not expired, not revoked), the same
//     token with its remaining lifetime in whole seconds (rounded down)
//     as expires_in
//     (Stats.TokenRepeats); otherwise a new token with the full TTL
//     (Stats.TokenGrants). A token is never replaced before it expires or
//     is revoked, so an early refresh gets the old token back.
//   - PathWeComJSAPITicket, get_jsapi_ticket?access_token=: the corp
//     ticket, for wx.config. PathWeComAgentTicket,
//     ticket/get?access_token=&type=agent_config: the app's ticket, for
//     wx.agentConfig (40005 for another type, 48002 for a token of a
//     secret without AgentID). Both check the token first (41001 missing,
//     40014 unknown or revoked, 42001 expired), then WithTicketLimit
//     (45009); each call issues a new ticket, and earlier tickets stay
//     valid until their own expiry.
//   - PathWeComAgentGet, agent/get?access_token=&agentid=: the protected
//     call that names an app. The token is checked as above, then 41011
//     without agentid, 40056 when it is not an app of the token's corp,
//     301002 when it is another app than the token's (a contacts-sync
//     token names no app, so any agentid gets 301002); else
//     {"errcode":0,"errmsg":"ok","agentid":N,"name":"..."}.
//   - PathCallbackIP, getcallbackip?access_token=: the protected call any
//     valid token may make; {"errcode":0,"errmsg":"ok","ip_list":[...]}.
//
// FailNext, SetLatency and WithWeComMaxConcurrent (45033) apply to
// gettoken and both ticket paths, not to the protected calls.
func NewWeCom(opts ...WeComOption) *WeCom {
	cfg := wecomConfig{
		now:        time.Now,
		tokenTTL:   DefaultWeComTokenTTL,
		ticketTTL:  DefaultWeComTicketTTL,
		tokenLimit: DefaultGetTokenLimit,
		tokenPer:   DefaultGetTokenPer,
		ticketCorp: DefaultTicketCorpLimit,
		ticketApp:  DefaultTicketAppLimit,
		ticketPer:  DefaultTicketPer,
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if len(cfg.apps) == 0 {
		cfg.apps = []wecomAppCred{{DefaultCorpID, DefaultAgentID, DefaultAgentSecret}}
	}
	w := &WeCom{
		cfg:   cfg,
		stop:  make(chan struct{}),
		corps: make(map[string]*wecomCorp),
		creds: make(map[string]*wecomCred),
	}
	for _, a := range cfg.apps {
		corp := w.corps[a.corpID]
		if corp == nil {
			corp = &wecomCorp{id: a.corpID}
			w.corps[a.corpID] = corp
		}
		kept := corp.apps[:0]
		for _, old := range corp.apps {
			if old.secret != a.secret && (a.agentID == 0 || old.agentID != a.agentID) {
				kept = append(kept, old)
			}
		}
		corp.apps = append(kept, &wecomApp{corp: corp, agentID: a.agentID, secret: a.secret})
	}
	w.latency.Store(int64(cfg.latency))
	return w
}

// findApp returns the app of corpID known by secret, or nil.
func (w *WeCom) findApp(corpID, secret string) *wecomApp {
	corp := w.corps[corpID]
	if corp == nil {
		return nil
	}
	var found *wecomApp
	for _, a := range corp.apps { // every one compared: constant time per app
		if subtle.ConstantTimeCompare([]byte(a.secret), []byte(secret)) == 1 {
			found = a
		}
	}
	return found
}

func (w *WeCom) findAgent(corpID string, agentID int64) *wecomApp {
	if corp := w.corps[corpID]; corp != nil && agentID != 0 {
		for _, a := range corp.apps {
			if a.agentID == agentID {
				return a
			}
		}
	}
	return nil
}

// SetLatency changes the delay added to every gettoken and ticket call from
// now on. A negative d counts as zero.
func (w *WeCom) SetLatency(d time.Duration) { w.latency.Store(int64(max(d, 0))) }

// FailNext makes the next n gettoken or ticket calls fail with fault,
// without issuing anything (LostAnswer issues, then answers 502), in the
// order the calls queue up, after their latency. n <= 0 adds nothing.
// Errcode(CodeConcurrentLimit, ...) or Errcode(-1, ...) inject what WeCom
// does on a bad day.
func (w *WeCom) FailNext(n int, fault Fault) {
	if n <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for range n {
		w.faults = append(w.faults, fault)
	}
}

// Revoke kills the current token of the app of corpID with secret, as
// WeCom may do early "for operational needs": its next use gets 40014 and
// the next gettoken issues a new token. Tickets are not touched. It
// reports whether the app is known and had a live token.
func (w *WeCom) Revoke(corpID, secret string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.revokeLocked(w.findApp(corpID, secret))
}

// RevokeAgent is Revoke for the app known by its AgentID.
func (w *WeCom) RevokeAgent(corpID string, agentID int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.revokeLocked(w.findAgent(corpID, agentID))
}

func (w *WeCom) revokeLocked(a *wecomApp) bool {
	if a == nil {
		return false
	}
	c := w.creds[a.token]
	if c == nil || c.status(w.cfg.now()) != 0 {
		return false
	}
	c.revoked = true
	return true
}

// CurrentToken returns the token gettoken last issued to the app of corpID
// with secret (valid or not), or "" if none was issued or the app is
// unknown.
func (w *WeCom) CurrentToken(corpID, secret string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.findApp(corpID, secret); a != nil {
		return a.token
	}
	return ""
}

// Valid reports whether a protected call would accept token now, by the
// fake's clock: issued here, not expired, not revoked.
func (w *WeCom) Valid(token string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.creds[token]
	return c != nil && c.kind == wecomToken && c.status(w.cfg.now()) == 0
}

// ValidTicket reports whether ticket, corp or agent, is unexpired now by
// the fake's clock: whether a wx.config or wx.agentConfig signature made
// with it would pass.
func (w *WeCom) ValidTicket(ticket string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.creds[ticket]
	return c != nil && c.kind != wecomToken && c.status(w.cfg.now()) == 0
}

// TicketOf reports which kind of ticket ticket is ("jsapi" for a corp
// ticket, "agent_config" for an agent ticket) and the AgentID of the app
// whose token fetched it (0 for a secret without one); ok is false for a
// string that is no ticket issued here. Tests use it to check that
// wx.agentConfig was signed with the right app's ticket.
func (w *WeCom) TicketOf(ticket string) (kind string, agentID int64, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.creds[ticket]
	switch {
	case c == nil || c.kind == wecomToken:
		return "", 0, false
	case c.kind == wecomJSAPI:
		return "jsapi", c.app.agentID, true
	default:
		return "agent_config", c.app.agentID, true
	}
}

// Stats returns a snapshot of the counters.
func (w *WeCom) Stats() WeComStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// ResetStats zeroes the counters; tokens, tickets, rate windows and queued
// faults stay.
func (w *WeCom) ResetStats() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats = WeComStats{}
}

// ServeHTTP answers one request; see NewWeCom for the paths.
func (w *WeCom) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	w.stats.Requests++
	w.mu.Unlock()
	switch r.URL.Path {
	case PathWeComToken:
		w.serveCredential(rw, r, w.gettoken)
	case PathWeComJSAPITicket:
		w.serveCredential(rw, r, w.jsapiTicket)
	case PathWeComAgentTicket:
		w.serveCredential(rw, r, w.agentTicket)
	case PathWeComAgentGet:
		writeResult(rw, w.agentGet(r))
	case PathCallbackIP:
		writeResult(rw, w.callbackIP(r))
	default:
		http.NotFound(rw, r)
	}
}

func (w *WeCom) serveCredential(rw http.ResponseWriter, r *http.Request, h func(*http.Request) result) {
	n := w.inflight.Add(1)
	defer w.inflight.Add(-1)
	switch sleep(r.Context(), time.Duration(w.latency.Load()), w.stop) {
	case waitCancelled:
		return
	case waitClosed:
		http.Error(rw, "wechattest: server closed", http.StatusServiceUnavailable)
		return
	}
	if max := w.cfg.maxConcurrent; max > 0 && n > int64(max) {
		w.mu.Lock()
		w.stats.RateLimited++
		w.mu.Unlock()
		writeResult(rw, fail(CodeConcurrentLimit, msgConcurrentLimit))
		return
	}
	w.mu.Lock()
	var fault Fault
	faulty := len(w.faults) > 0
	if faulty {
		fault = w.faults[0]
		w.faults = w.faults[1:]
	}
	w.mu.Unlock()
	if faulty {
		if fault.kind == faultLostAnswer {
			_ = h(r)
		}
		fault.write(rw)
		return
	}
	writeResult(rw, h(r))
}

type wecomTokenBody struct {
	Errcode     int    `json:"errcode"`
	Errmsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

type wecomAgentBody struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
	AgentID int64  `json:"agentid"`
	Name    string `json:"name"`
}

type wecomIPBody struct {
	Errcode int      `json:"errcode"`
	Errmsg  string   `json:"errmsg"`
	IPList  []string `json:"ip_list"`
}

// gettoken serves GET /cgi-bin/gettoken.
func (w *WeCom) gettoken(r *http.Request) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	q := r.URL.Query()
	corpID, secret := q.Get("corpid"), q.Get("corpsecret")
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.now()
	if corpID == "" {
		w.stats.GrantRefusals++
		return fail(CodeCorpIDMissing, msgCorpIDMissing)
	}
	corp := w.corps[corpID]
	if corp == nil {
		w.stats.GrantRefusals++
		return fail(CodeInvalidCorpID, msgInvalidCorpID)
	}
	if !corp.gettoken.allow(now, w.cfg.tokenLimit, w.cfg.tokenPer) {
		w.stats.RateLimited++
		return fail(CodeFreqLimit, msgFreqLimit)
	}
	if secret == "" {
		w.stats.GrantRefusals++
		return fail(CodeSecretMissing, msgWeComSecretMissing)
	}
	a := w.findApp(corpID, secret)
	if a == nil {
		w.stats.GrantRefusals++
		return fail(CodeInvalidCredential, msgWeComInvalidSecret)
	}
	if c := w.creds[a.token]; c != nil && c.status(now) == 0 {
		w.stats.TokenRepeats++
		return ok(wecomTokenBody{Errmsg: msgWeComOK, AccessToken: a.token, ExpiresIn: seconds(c.expiresAt.Sub(now))})
	}
	w.stats.TokenGrants++
	a.token = w.issueLocked(a, wecomToken, now, w.cfg.tokenTTL)
	return ok(wecomTokenBody{Errmsg: msgWeComOK, AccessToken: a.token, ExpiresIn: seconds(w.cfg.tokenTTL)})
}

// checkTokenLocked finds the token behind an access_token parameter, or
// the refusal its use gets (counted in Stats.Rejections).
func (w *WeCom) checkTokenLocked(token string, now time.Time) (*wecomCred, *result) {
	var r result
	c := w.creds[token]
	switch {
	case token == "":
		r = fail(CodeTokenMissing, msgTokenMissing)
	case c == nil || c.kind != wecomToken:
		r = fail(CodeInvalidAccessToken, msgInvalidAccessToken)
	default:
		switch c.status(now) {
		case 0:
			return c, nil
		case CodeTokenExpired:
			r = fail(CodeTokenExpired, msgTokenExpired)
		default:
			r = fail(CodeInvalidAccessToken, msgInvalidAccessToken)
		}
	}
	w.stats.Rejections++
	return nil, &r
}

// jsapiTicket serves GET /cgi-bin/get_jsapi_ticket.
func (w *WeCom) jsapiTicket(r *http.Request) result {
	return w.ticket(r, wecomJSAPI)
}

// agentTicket serves GET /cgi-bin/ticket/get?type=agent_config.
func (w *WeCom) agentTicket(r *http.Request) result {
	return w.ticket(r, wecomAgent)
}

func (w *WeCom) ticket(r *http.Request, k wecomKind) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	q := r.URL.Query()
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.cfg.now()
	tok, bad := w.checkTokenLocked(q.Get("access_token"), now)
	if bad != nil {
		return *bad
	}
	a := tok.app
	if k == wecomAgent {
		if q.Get("type") != "agent_config" {
			return fail(CodeWeComInvalidType, msgWeComInvalidType)
		}
		if a.agentID == 0 {
			return fail(CodeAPIForbidden, msgAPIForbidden)
		}
	}
	// Both windows must have room; record in each only then.
	cw, aw := &a.corp.tickets[k], &a.tickets[k]
	probeC, probeA := append(window(nil), *cw...), append(window(nil), *aw...)
	if !probeC.allow(now, w.cfg.ticketCorp, w.cfg.ticketPer) || !probeA.allow(now, w.cfg.ticketApp, w.cfg.ticketPer) {
		w.stats.RateLimited++
		return fail(CodeFreqLimit, msgFreqLimit)
	}
	*cw, *aw = probeC, probeA
	if k == wecomJSAPI {
		w.stats.JSAPITickets++
	} else {
		w.stats.AgentTickets++
	}
	v := w.issueLocked(a, k, now, w.cfg.ticketTTL)
	return ok(ticketBody{Errmsg: msgWeComOK, Ticket: v, ExpiresIn: seconds(w.cfg.ticketTTL)})
}

// agentGet serves GET /cgi-bin/agent/get, the protected call naming an app.
func (w *WeCom) agentGet(r *http.Request) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	q := r.URL.Query()
	w.mu.Lock()
	defer w.mu.Unlock()
	tok, bad := w.checkTokenLocked(q.Get("access_token"), w.cfg.now())
	if bad != nil {
		return *bad
	}
	raw := q.Get("agentid")
	if raw == "" {
		return fail(CodeAgentIDMissing, msgAgentIDMissing)
	}
	id, err := strconv.ParseInt(raw, 10, 64)
	named := w.findAgent(tok.app.corp.id, id)
	if err != nil || named == nil {
		return fail(CodeInvalidAgentID, msgInvalidAgentID)
	}
	if named != tok.app {
		w.stats.Rejections++
		return fail(CodeOtherAgent, msgOtherAgent)
	}
	return ok(wecomAgentBody{Errmsg: msgWeComOK, AgentID: id, Name: "wechattest app " + raw})
}

// callbackIP serves GET /cgi-bin/getcallbackip for any valid token.
func (w *WeCom) callbackIP(r *http.Request) result {
	if r.Method != http.MethodGet {
		return fail(CodeRequireGET, msgRequireGET)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, bad := w.checkTokenLocked(r.URL.Query().Get("access_token"), w.cfg.now()); bad != nil {
		return *bad
	}
	return ok(wecomIPBody{Errmsg: msgWeComOK, IPList: []string{"127.0.0.1"}})
}

// issueLocked makes a new token or ticket for a.
func (w *WeCom) issueLocked(a *wecomApp, k wecomKind, now time.Time, ttl time.Duration) string {
	size := 96 // 128 characters
	if k != wecomToken {
		size = 64 // 86 characters
	}
	v := randomString(size)
	for w.creds[v] != nil {
		v = randomString(size)
	}
	w.creds[v] = &wecomCred{app: a, kind: k, expiresAt: now.Add(ttl)}
	w.issued++
	if w.issued >= 1024 {
		w.issued = 0
		for s, c := range w.creds {
			if now.Sub(c.expiresAt) > retention && s != a.token {
				delete(w.creds, s)
			}
		}
	}
	return v
}

// shutdown ends every latency wait at once, and every later one at its start.
func (w *WeCom) shutdown() { w.stopped.Do(func() { close(w.stop) }) }

// sleep waits for d, or less if ctx ends or stop closes first.
func sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) waitResult {
	if d <= 0 {
		select {
		case <-stop:
			return waitClosed
		default:
			return waitDone
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return waitDone
	case <-ctx.Done():
		return waitCancelled
	case <-stop:
		return waitClosed
	}
}
