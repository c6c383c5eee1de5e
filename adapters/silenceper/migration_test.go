package silenceper_test

import (
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/officialaccount"

	"github.com/wechatconf/wechatconf/adapters/silenceper"
	"github.com/wechatconf/wechatconf/conf"
	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// migration is a rolling migration half done: two old nodes still on
// silenceper's own handles and their shared cache (Redis, in production),
// and a new node on a Handle.
type migration struct {
	srv    *wechattest.Server
	legacy silenceper.Legacy
	cache  *sharedCache
	old    []*officialaccount.OfficialAccount
	conf   *conf.Conf
	oa     *officialaccount.OfficialAccount
}

// startMigration warms the old nodes (one token and one ticket grant), then
// starts the new node, seeded from their cache if seed, mirroring into it
// if mirror.
func startMigration(t *testing.T, seed, mirror bool) *migration {
	t.Helper()
	// A replaced token dies a moment after the grant (5 min on WeChat), so
	// that a node left on it shows at once.
	srv := wechattest.NewServer(wechattest.WithGrace(time.Millisecond))
	t.Cleanup(srv.Close)
	m := &migration{srv: srv, cache: newSharedCache()}
	m.legacy = silenceper.Legacy{Cache: m.cache, AppID: appID}
	for range 2 {
		oa := newOA(m.cache)
		oa.GetBasic()
		m.old = append(m.old, oa)
	}
	useClient(t, newToFake(srv)) // replaced below once the Handle exists
	for _, oa := range m.old {
		if err := callAndSign(oa); err != nil {
			t.Fatalf("old node: %v", err)
		}
	}
	if s := srv.Stats(); s.TokenGrants != 1 || s.JSAPITickets != 1 {
		t.Fatalf("old nodes made %d token and %d ticket grants, want 1 and 1", s.TokenGrants, s.JSAPITickets)
	}

	var opts []conf.Option
	if seed {
		opts = m.legacy.SeedOptions()
	}
	m.conf = newConf(t, srv, store.NewMemory(), opts...)
	var hopts []silenceper.Option
	if mirror {
		hopts = append(hopts, silenceper.WithMirror(m.legacy))
	}
	h := silenceper.New(m.conf, hopts...)
	m.oa = adapted(h)
	useClient(t, silenceper.Transport(newToFake(srv), h))
	return m
}

// oldToken is the token the old nodes use now.
func (m *migration) oldToken(t *testing.T) string {
	t.Helper()
	tok, err := m.old[0].GetAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestMigrationSeedAndMirror: the new node starts on the old nodes' token
// and ticket (no grant), and when the Conf grants the next token the old
// nodes switch to it through their own cache (no grant of theirs, no
// rejection after the old token dies): one grant per cycle for the mixed
// cluster.
func TestMigrationSeedAndMirror(t *testing.T) {
	m := startMigration(t, true, true)
	if got, want := m.legacy.TokenKey(), credential.CacheKeyOfficialAccountPrefix+"_access_token_"+appID; got != want {
		t.Fatalf("TokenKey %q, want %q", got, want)
	}
	if err := callAndSign(m.oa); err != nil {
		t.Fatalf("new node: %v", err)
	}
	tok, _ := m.conf.AccessToken(bg)
	ticket, _ := m.conf.JSAPITicket(bg)
	if s := m.srv.Stats(); s.TokenGrants != 1 || s.JSAPITickets != 1 {
		t.Fatalf("switching a node made %d token and %d ticket grants, want none", s.TokenGrants-1, s.JSAPITickets-1)
	}
	if tok != m.oldToken(t) || ticket != m.cache.Get(m.legacy.TicketKey()) {
		t.Fatal("the new node does not use the old nodes' token and ticket")
	}
	// The first hand-out rewrote the old entry to live as long as the seed
	// (1500 s less slack), past the Conf's refresh 3 min before that: the
	// old nodes cannot find it empty and grant before the Conf does.
	if ttl := m.cache.ttl(m.legacy.TokenKey()); ttl < 1400*time.Second || ttl > 1500*time.Second {
		t.Fatalf("the entry lives %v after the switch, want 1500 s less slack", ttl)
	}

	// The next cycle: the Conf grants (as it does by itself at the end of
	// the token's life); the new node's next call hands the token out.
	if _, err := m.conf.GrantAccessToken(bg); err != nil {
		t.Fatal(err)
	}
	if err := callbackIP(m.oa); err != nil {
		t.Fatalf("new node after its grant: %v", err)
	}
	time.Sleep(20 * time.Millisecond) // the replaced token is dead now
	newTok, _ := m.conf.AccessToken(bg)
	if newTok == tok || !m.srv.Valid(newTok) || m.srv.Valid(tok) {
		t.Fatal("the grant did not replace the token")
	}
	for i, oa := range m.old {
		if err := callbackIP(oa); err != nil {
			t.Fatalf("old node %d after the Conf's grant: %v", i, err)
		}
	}
	if m.oldToken(t) != newTok {
		t.Fatal("the old nodes did not switch to the Conf's token")
	}
	if ttl := m.cache.ttl(m.legacy.TokenKey()); ttl < time.Hour {
		t.Fatalf("mirrored entry lives %v, want the token's life (2 h) less slack", ttl)
	}
	if s := m.srv.Stats(); s.TokenGrants != 2 {
		t.Fatalf("%d token grants over two cycles, want 2", s.TokenGrants)
	}

	// The ticket follows the same way.
	if _, err := m.conf.GrantJSAPITicket(bg); err != nil {
		t.Fatal(err)
	}
	if err := callAndSign(m.oa); err != nil {
		t.Fatal(err)
	}
	newTicket, _ := m.conf.JSAPITicket(bg)
	if newTicket == ticket || m.cache.Get(m.legacy.TicketKey()) != newTicket {
		t.Fatal("the old nodes' cache does not hold the Conf's new ticket")
	}
	if s := m.srv.Stats(); s.JSAPITickets != 2 || s.TokenGrants != 2 {
		t.Fatalf("%d ticket and %d token grants, want 2 and 2", s.JSAPITickets, s.TokenGrants)
	}
}

// TestMigrationUnbridged is the control: without the seed, switching a
// node grants a second token; without the mirror, the old nodes keep their
// own token after the Conf's grant and WeChat rejects it (silenceper keeps
// a rejected token until its cache entry expires, 95 minutes on WeChat).
func TestMigrationUnbridged(t *testing.T) {
	m := startMigration(t, false, false)
	if err := callbackIP(m.oa); err != nil {
		t.Fatalf("new node: %v", err)
	}
	if g := m.srv.Stats().TokenGrants; g != 2 {
		t.Fatalf("switching a node unseeded made %d grants, want 1", g-1)
	}
	time.Sleep(20 * time.Millisecond)
	err := callbackIP(m.old[0])
	if !silenceper.IsRejected(err) {
		t.Fatalf("old node after the new node's grant: %v, want a rejection", err)
	}
}

// TestLegacyKeys: the keys are silenceper's, for every kind of cache.
func TestLegacyKeys(t *testing.T) {
	for _, c := range []struct {
		l             silenceper.Legacy
		token, ticket string
	}{
		{silenceper.Legacy{AppID: "wx1"}, "gowechat_officialaccount__access_token_wx1", "gowechat_officialaccount__jsapi_ticket_wx1"},
		{silenceper.Legacy{AppID: "wx1", Stable: true}, "gowechat_officialaccount__stable_access_token_wx1", "gowechat_officialaccount__jsapi_ticket_wx1"},
		{silenceper.Legacy{AppID: "wx2", Prefix: credential.CacheKeyMiniProgramPrefix}, "gowechat_miniprogram__access_token_wx2", "gowechat_miniprogram__jsapi_ticket_wx2"},
	} {
		if c.l.TokenKey() != c.token || c.l.TicketKey() != c.ticket {
			t.Errorf("%+v: keys %q, %q; want %q, %q", c.l, c.l.TokenKey(), c.l.TicketKey(), c.token, c.ticket)
		}
	}
	if opts := (silenceper.Legacy{AppID: "wx1"}).SeedOptions(); len(opts) != 0 {
		t.Errorf("no cache: %d options, want none", len(opts))
	}
	if opts := (silenceper.Legacy{AppID: "wx1", Cache: newSharedCache()}).SeedOptions(); len(opts) != 0 {
		t.Errorf("empty cache: %d options, want none", len(opts))
	}
}

// TestStableMigration: old nodes on UseStableAK cache under another key;
// a Conf on stable tokens seeded from it makes no grant.
func TestStableMigration(t *testing.T) {
	srv := wechattest.NewServer()
	t.Cleanup(srv.Close)
	useClient(t, newToFake(srv))
	shared := newSharedCache()
	old := newOA(nil)
	old.SetAccessTokenHandle(credential.NewStableAccessToken(appID, secret, credential.CacheKeyOfficialAccountPrefix, shared))
	tok, err := old.GetAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	l := silenceper.Legacy{Cache: shared, AppID: appID, Stable: true}
	c := newConf(t, srv, store.NewMemory(), append(l.SeedOptions(), conf.WithStableToken())...)
	got, err := silenceper.New(c).GetAccessToken()
	if err != nil || got != tok {
		t.Fatalf("token %q, %v; want the old nodes' stable token", got, err)
	}
	if s := srv.Stats(); s.StableTokenGrants != 1 || s.TokenGrants != 0 {
		t.Fatalf("%d stable and %d classic grants, want 1 and 0", s.StableTokenGrants, s.TokenGrants)
	}
}
