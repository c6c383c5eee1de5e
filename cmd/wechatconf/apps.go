package main

// The apps a server holds: each an Official Account or Mini Program (a
// conf.Conf) or a WeCom app (a wecom.App) on the one store, the keys that
// may read them, and the swap of the whole set when the configuration is
// reloaded.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	endian "encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/credential"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wecom"
)

// credKind is a credential serve hands out, whatever the app's face.
type credKind uint8

const (
	credAccessToken credKind = iota
	credJSAPITicket
	credWXCardTicket
	credAgentTicket
	numCredKinds
)

// credNames are the kinds' names in routes, invalidate bodies and the
// metrics' kind label.
var credNames = [numCredKinds]string{"access_token", "jsapi_ticket", "wx_card_ticket", "agent_config_ticket"}

// ticketTypes are the type field of a ticket's answer and the ?type= of
// /ticket; the access token has none.
var ticketTypes = [numCredKinds]string{"", "jsapi", "wx_card", "agent_config"}

func (k credKind) String() string {
	if k < numCredKinds {
		return credNames[k]
	}
	return fmt.Sprintf("credKind(%d)", int(k))
}

// credKindByName maps an invalidate body's kind to a credKind.
func credKindByName(name string) (credKind, bool) {
	for i, n := range credNames {
		if n == name {
			return credKind(i), true
		}
	}
	return 0, false
}

// ticketByType maps /ticket's ?type= to a credKind.
func ticketByType(typ string) (credKind, bool) {
	for i, t := range ticketTypes {
		if t != "" && t == typ {
			return credKind(i), true
		}
	}
	return 0, false
}

// confKinds and wecomKinds map a credKind to the face's own kind.
var (
	confKinds  = [numCredKinds]conf.Kind{conf.AccessToken, conf.JSAPITicket, conf.WXCardTicket, -1}
	wecomKinds = [numCredKinds]wecom.Kind{wecom.AccessToken, wecom.JSAPITicket, -1, wecom.AgentTicket}
)

// app is one app a server holds.
type app struct {
	id   string
	kind appKind
	// agent: a WeCom app with an AgentID (it has an agent ticket).
	agent bool
	fp    [sha256.Size]byte // its appSpec's fingerprint; zero from flags
	oa    *conf.Conf        // official_account, mini_program
	wc    *wecom.App        // wecom
	m     *appMetrics
	// plain holds, per kind, the last value found plainJSON, so that
	// the check runs once per credential rather than once per answer.
	plain [numCredKinds]atomic.Pointer[string]
}

// has reports whether the app has credentials of kind k.
func (a *app) has(k credKind) bool {
	switch a.kind {
	case kindOfficialAccount:
		return k <= credWXCardTicket
	case kindMiniProgram:
		return k == credAccessToken
	case kindWeCom:
		return k == credAccessToken || k == credJSAPITicket || (k == credAgentTicket && a.agent)
	}
	return false
}

// credential returns a valid credential of kind k (a.has(k) holds).
func (a *app) credential(ctx context.Context, k credKind) (store.Item, error) {
	if a.wc != nil {
		return a.wc.Credential(ctx, wecomKinds[k])
	}
	return a.oa.Credential(ctx, confKinds[k])
}

// invalidate reports that WeChat rejected value, compare-then-refresh.
func (a *app) invalidate(ctx context.Context, k credKind, value string) error {
	var err error
	if a.wc != nil {
		_, err = a.wc.Invalidate(ctx, wecomKinds[k], value)
	} else {
		_, err = a.oa.Invalidate(ctx, confKinds[k], value)
	}
	return err
}

// resolveSeries makes the engine series of every kind the app has.
func (a *app) resolveSeries() {
	for k := range numCredKinds {
		if a.has(k) {
			a.m.resolve(k)
		}
	}
}

// close stops the app's refresh engine.
func (a *app) close() error {
	if a.wc != nil {
		return a.wc.Close()
	}
	return a.oa.Close()
}

// appSet is what a server serves at one moment: replaced whole on a
// reload, never changed.
type appSet struct {
	apps map[string]*app
	list []*app // in the configuration's order
	// single is the app of the single-app routes (/v1/access_token...):
	// the one app, when there is exactly one.
	single *app
	keys   []keyEntry
	// fallback counts the requests that name no app they may read.
	fallback *appMetrics
}

// newAppSet makes a set of apps (non-empty) and keys.
func newAppSet(list []*app, keys []keyEntry, m *metrics) *appSet {
	keys = slices.Clone(keys)
	for i := range keys {
		keys[i].words = sumWords(&keys[i].sum)
	}
	s := &appSet{apps: make(map[string]*app, len(list)), list: list, keys: keys}
	for _, a := range list {
		s.apps[a.id] = a
	}
	if len(list) == 1 {
		s.single = list[0]
		s.fallback = list[0].m
	} else {
		s.fallback = m.forApp("")
	}
	return s
}

// key returns the key whose SHA-256 is that of the bearer key in the
// Authorization value v, or nil. Every key is compared, in constant time,
// so that the time taken says nothing of which key (or how much of one)
// matched; the presented key is hashed first, so not even its length
// leaks.
func (s *appSet) key(v string) *keyEntry {
	sum, ok := bearerSum(v)
	if !ok {
		return nil
	}
	w := sumWords(&sum)
	found := -1
	for i := range s.keys {
		k := &s.keys[i].words
		// d is 0 exactly when the sums are equal; no branch on it.
		d := (w[0] ^ k[0]) | (w[1] ^ k[1]) | (w[2] ^ k[2]) | (w[3] ^ k[3])
		equal := int((d|-d)>>63) ^ 1
		found = subtle.ConstantTimeSelect(equal, i, found)
	}
	if found < 0 {
		return nil
	}
	return &s.keys[found]
}

// sumWords is a SHA-256 as four words, compared a word at a time.
func sumWords(sum *[sha256.Size]byte) [4]uint64 {
	return [4]uint64{
		endian.LittleEndian.Uint64(sum[0:]), endian.LittleEndian.Uint64(sum[8:]),
		endian.LittleEndian.Uint64(sum[16:]), endian.LittleEndian.Uint64(sum[24:]),
	}
}

// bearerSum returns the SHA-256 of the key in the Authorization value v
// ("Bearer KEY", the scheme in any case). A key of up to 128 bytes is
// hashed from a stack copy, without an allocation.
func bearerSum(v string) (sum [sha256.Size]byte, ok bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return sum, false
	}
	key := strings.TrimSpace(v[len(scheme):])
	var buf [128]byte
	if len(key) <= len(buf) {
		return sha256.Sum256(buf[:copy(buf[:], key)]), true
	}
	return sha256.Sum256([]byte(key)), true
}

// appBuilder builds apps from their specs on one store.
type appBuilder struct {
	st  store.Store
	log *slog.Logger
	m   *metrics
	// eager makes every series of an app's kinds at once (see
	// eagerSeriesApps).
	eager bool
}

// eagerSeriesApps is the most apps whose engine series are all made when
// the app starts, so that rate() sees each first increment. A larger
// configuration makes a series on its first event instead: ten thousand
// Official Accounts would otherwise hold 210 000 series, mostly zeros, in
// memory and in every scrape.
const eagerSeriesApps = 200

// build starts the app of s.
func (b *appBuilder) build(s *appSpec) (*app, error) {
	am := b.m.forApp(s.id)
	log := b.log.With("app", s.id)
	a := &app{id: s.id, kind: s.kind, agent: s.agentID > 0, fp: s.fp, m: am}
	if b.eager {
		a.resolveSeries()
	}
	if s.kind == kindWeCom {
		opts := []wecom.Option{wecom.WithStore(b.st), wecom.WithLogger(log), wecom.WithObserver(am.observeCredential)}
		if s.agentID > 0 {
			opts = append(opts, wecom.WithAgentID(s.agentID))
		}
		if len(s.bases) > 0 {
			opts = append(opts, wecom.WithBaseURLs(s.bases...))
		}
		wc, err := wecom.New(s.corpID, s.secret, opts...)
		if err != nil {
			return nil, err
		}
		a.wc = wc
		return a, nil
	}
	opts := []conf.Option{conf.WithAppID(s.appID, s.secret), conf.WithStore(b.st), conf.WithLogger(log), conf.WithObserver(am.observe)}
	if len(s.bases) > 0 {
		opts = append(opts, conf.WithBaseURLs(s.bases...))
	}
	if s.stable {
		opts = append(opts, conf.WithStableToken())
	}
	c, err := conf.New(opts...)
	if err != nil {
		return nil, err
	}
	a.oa = c
	return a, nil
}

// registry holds the current set and retires the apps a reload dropped
// once the requests that may still hold them are done.
type registry struct {
	cur   atomic.Pointer[appSet]
	b     *appBuilder
	log   *slog.Logger
	m     *metrics
	grace time.Duration // how long a dropped app still answers

	mu      sync.Mutex // reloads, retirements and close
	closed  bool
	retired map[*app]*time.Timer
	closing sync.WaitGroup // retired apps being closed by their timer
}

// newRegistry starts the apps of p on b's store. On an error the apps
// started are closed again.
func newRegistry(p *plan, b *appBuilder) (*registry, error) {
	r := &registry{b: b, log: b.log, m: b.m, grace: requestTimeout + 5*time.Second, retired: map[*app]*time.Timer{}}
	b.eager = len(p.apps) <= eagerSeriesApps
	set, _, err := r.build(p, nil)
	if err != nil {
		return nil, err
	}
	r.cur.Store(set)
	b.m.setApps(len(set.list))
	return r, nil
}

// singleRegistry holds the one app a of a server of the flags, read by
// holders of key; a's series are m's own (m.def), all made at once.
func singleRegistry(a *app, key string, m *metrics, log *slog.Logger) *registry {
	a.m = m.def
	a.resolveSeries()
	set := newAppSet([]*app{a}, []keyEntry{{name: "--key", sum: sha256.Sum256([]byte(key)), all: true}}, m)
	r := &registry{m: m, log: log, grace: requestTimeout + 5*time.Second, retired: map[*app]*time.Timer{}}
	r.cur.Store(set)
	m.setApps(1)
	return r
}

// build makes the set of p, reusing old's apps whose configuration is
// unchanged. It returns the apps it started; on an error it closes them
// and old is untouched.
func (r *registry) build(p *plan, old *appSet) (_ *appSet, started []*app, err error) {
	list := make([]*app, 0, len(p.apps))
	defer func() {
		if err != nil {
			for _, a := range started {
				a.close()
			}
			started = nil
		}
	}()
	for _, s := range p.apps {
		if old != nil {
			if a := old.apps[s.id]; a != nil && a.fp == s.fp {
				list = append(list, a)
				continue
			}
		}
		a, err := r.b.build(s)
		if err != nil {
			return nil, started, fmt.Errorf("app %s: %w", s.id, err)
		}
		started = append(started, a)
		list = append(list, a)
	}
	return newAppSet(list, p.keys, r.m), started, nil
}

// reloadStats says what a reload changed.
type reloadStats struct{ apps, started, kept, dropped int }

// reload swaps in the set of p. The apps of the running set that p keeps
// unchanged go on as they are (their local copies, their leases); the
// others are retired after the grace; on an error nothing changes.
func (r *registry) reload(p *plan) (reloadStats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return reloadStats{}, errors.New("the server is shutting down")
	}
	old := r.cur.Load()
	set, started, err := r.build(p, old)
	if err != nil {
		return reloadStats{}, err
	}
	r.cur.Store(set)
	st := reloadStats{apps: len(set.list), started: len(started)}
	st.kept = st.apps - st.started
	for _, a := range old.list {
		if set.apps[a.id] == a {
			continue
		}
		st.dropped++
		r.retire(a, set.apps[a.id] == nil)
	}
	r.m.setApps(len(set.list))
	return st, nil
}

// retire closes a after the grace; dropMetrics also removes its series
// (its id is gone from the configuration, not only changed). r.mu is held.
func (r *registry) retire(a *app, dropMetrics bool) {
	r.retired[a] = time.AfterFunc(r.grace, func() {
		r.mu.Lock()
		_, still := r.retired[a]
		delete(r.retired, a)
		if still {
			r.closing.Add(1)
		}
		r.mu.Unlock()
		if !still {
			return // close got there first
		}
		defer r.closing.Done()
		r.closeApp(a, dropMetrics)
	})
}

func (r *registry) closeApp(a *app, dropMetrics bool) {
	if err := a.close(); err != nil {
		r.log.Warn("wechatconf: closing a retired app", "app", a.id, "err", err.Error())
	}
	if dropMetrics {
		if cur := r.cur.Load(); cur.apps[a.id] == nil {
			r.m.dropApp(a.id)
		}
	}
}

// close stops every app, the retired ones at once.
func (r *registry) close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	retired := r.retired
	r.retired = map[*app]*time.Timer{}
	r.mu.Unlock()
	var errs []error
	for a, t := range retired {
		t.Stop()
		if err := a.close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range r.cur.Load().list {
		if err := a.close(); err != nil {
			errs = append(errs, fmt.Errorf("app %s: %w", a.id, err))
		}
	}
	r.closing.Wait()
	return errors.Join(errs...)
}

// observeCredential is the observer of a WeCom app: the engine's event,
// whose Name is the wecom kind's.
func (am *appMetrics) observeCredential(e credential.Event) {
	k := credKind(numCredKinds)
	switch e.Name {
	case wecom.AccessToken.String():
		k = credAccessToken
	case wecom.JSAPITicket.String():
		k = credJSAPITicket
	case wecom.AgentTicket.String():
		k = credAgentTicket
	}
	am.count(k, e.Type, e.Wait, e.ExpiresAt)
}
