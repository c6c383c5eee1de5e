package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// storePassword is the password every form below carries.
const storePassword = "hunter2"

// leakForms are the store locations a user can type, each with a
// password, well-formed or not, for every scheme. want is in the one error
// line (or "" when the form is fine and only the connection fails).
func leakForms(t *testing.T) []struct{ name, url, want string } {
	closed := closedPort(t)
	host, port, _ := net.SplitHostPort(closed)
	pw := storePassword
	return []struct{ name, url, want string }{
		{"redis password", "redis://:" + pw + "@" + closed + "/0", "unreachable"},
		{"redis user and password", "redis://u:" + pw + "@" + closed + "/0", "unreachable"},
		{"redis lone name", "redis://" + pw + "@" + closed + "/0", "unreachable"},
		{"redis escaped password", "redis://u:" + pw + "%2F1@" + closed + "/0", "unreachable"},
		{"redis password with slash", "redis://u:x/" + pw + "@" + closed + "/0", "invalid redis URL"},
		{"redis password with question mark", "redis://u:x?" + pw + "@" + closed + "/0", "invalid redis URL"},
		{"redis password with hash", "redis://u:x#" + pw + "@" + closed + "/0", "invalid redis URL"},
		{"redis bad escape", "redis://u:" + pw + "%zz@" + closed + "/0", "invalid redis URL"},
		{"redis bad db", "redis://u:" + pw + "@" + closed + "/notadb", "invalid redis URL"},
		{"redis unknown option", "redis://u:" + pw + "@" + closed + "/0?bogus=1", "invalid redis URL"},
		{"redis opaque", "redis:" + pw + "@" + closed, "redis://"},
		{"rediss skip_verify", "rediss://u:" + pw + "@" + closed + "/0?skip_verify=true", "unreachable"},
		{"rediss bad skip_verify", "rediss://u:" + pw + "@" + closed + "/0?skip_verify=maybe", "invalid rediss URL"},
		{"redis cluster", "redis+cluster://u:" + pw + "@" + closed + "?addr=" + closedPort(t), "unreachable"},
		{"redis cluster bad addr", "redis+cluster://u:" + pw + "@" + closed + "?addr=nohostport", "invalid redis+cluster URL"},
		{"rediss cluster skip_verify", "rediss+cluster://u:" + pw + "@" + closed + "?skip_verify=true", "unreachable"},
		{"redis sentinel", "redis+sentinel://u:" + pw + "@" + closed + "?master_name=mymaster&password=" + pw, "unreachable"},
		{"redis sentinel without master", "redis+sentinel://u:" + pw + "@" + closed + "?password=" + pw, "master_name"},
		{"redis sentinel routing", "redis+sentinel://u:" + pw + "@" + closed + "?master_name=m&route_randomly=true", "route_randomly"},
		{"rediss sentinel bad db", "rediss+sentinel://u:" + pw + "@" + closed + "/notadb?master_name=m", "invalid rediss+sentinel URL"},
		{"memcache user part", "memcache://u:" + pw + "@" + closed, "no user or password"},
		{"memcache query", "memcache://" + closed + "?password=" + pw, "not HOST:PORT"},
		{"memcache bad port", "memcache://" + host + ":notaport", "not HOST:PORT"},
		{"postgres URL", "postgres://u:" + pw + "@" + closed + "/db?sslmode=disable", "unreachable"},
		{"postgresql URL", "postgresql://u:" + pw + "@" + closed + "/db?sslmode=disable", "unreachable"},
		{"postgres password in query", "postgres://u@" + closed + "/db?sslmode=disable&password=" + pw, "unreachable"},
		{"postgres bad port", "postgres://u:" + pw + "@" + host + ":notaport/db", "invalid postgres URL"},
		{"postgres password with slash", "postgres://u:x/" + pw + "@" + closed + "/db", "invalid postgres URL"},
		{"postgres DSN", "postgres:host=" + host + " port=" + port + " user=u password=" + pw + " dbname=db sslmode=disable", "unreachable"},
		{"postgres DSN quoted", "postgres:host=" + host + " port=" + port + " password='" + pw + " x' sslmode=disable", "unreachable"},
		{"postgres DSN bad port", "postgres:host=" + host + " port=notaport password=" + pw, "invalid postgres key=value DSN"},
		{"postgres DSN unclosed quote", "postgres:host=" + host + " password='" + pw, "invalid postgres key=value DSN"},
		{"postgres DSN dangling key", "postgres:host=" + host + " password=" + pw + " port", "invalid postgres key=value DSN"},
		{"DSN without scheme", "host=" + host + " password=" + pw, "no scheme"},
		{"user part without scheme", "u:" + pw + "@" + closed, "unknown store scheme"},
		{"password without scheme", pw + "@" + closed, "no scheme"},
		{"bolt path", "bolt:" + filepath.Join(t.TempDir(), "missing", "w.db"), "store"},
	}
}

// Issue #11: store passwords were printed for URL forms redactURL did not
// parse (key=value DSN, memcache with a user part, malformed Redis URLs),
// and client libraries' errors quoted raw URL parts. Every form, every
// scheme: no output shows the password.
func TestStorePasswordNeverShown(t *testing.T) {
	secretFile := writeFile(t, "secret", secret)
	for _, tc := range leakForms(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := runIn(t, nil, "token", "--appid", appID, "--secret-file", secretFile, "--store", tc.url, "--timeout", "20s")
			if r.code == 0 {
				t.Fatalf("exit 0 for %s", redactURL(tc.url))
			}
			out := r.stdout + r.stderr
			if strings.Contains(out, storePassword) || strings.Contains(out, "hunt") {
				t.Errorf("output shows the store password: %q", out)
			}
			checkClean(t, out)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q, want %q", r.stderr, tc.want)
			}
			// redactURL and the parser alone, too.
			if d := redactURL(tc.url); strings.Contains(d, storePassword) {
				t.Errorf("redactURL = %q", d)
			}
			if _, err := parseStore(tc.url); err != nil && strings.Contains(err.Error(), storePassword) {
				t.Errorf("parseStore: %v", err)
			}
		})
	}
}

// The same through serve: the log lines at every level (-v) and the
// one error line.
func TestStorePasswordNeverShownByServe(t *testing.T) {
	keyFile := writeFile(t, "key", "a-server-key-that-is-long-enough")
	secretFile := writeFile(t, "secret", secret)
	for _, tc := range leakForms(t)[:3] {
		r := runIn(t, nil, "serve", "-v", "--appid", appID, "--secret-file", secretFile, "--key-file", keyFile, "--listen", "127.0.0.1:0", "--store", tc.url)
		if strings.Contains(r.stdout+r.stderr, storePassword) {
			t.Errorf("%s: serve shows the store password: %q", tc.name, r.stderr)
		}
	}
}

func TestRedactURLForms(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:x/hunter2@h:1/0":                            "redis://u:xxxxx@h:1/0",
		"redis://hunter2@h:1":                                  "redis://xxxxx@h:1",
		"postgres://u@h/db":                                    "postgres://u@h/db",
		"postgres://u@h/db?sslmode=disable&sslpassword=p":      "postgres://u@h/db?sslmode=disable&sslpassword=xxxxx",
		"memcache://u:hunter2@a:1,b:2":                         "memcache://u:xxxxx@a:1,b:2",
		"postgres:host=h password=hunter2 dbname=d":            "postgres:host=h password=xxxxx dbname=d",
		"postgres:host=h password = 'a b\\' c' user=u":         "postgres:host=h password=xxxxx user=u",
		"postgres:host=h password='hunter2":                    "postgres:host=h xxxxx",
		"host=h password=hunter2":                              "host=h password=xxxxx",
		"redis+sentinel://:p@h:26379?master_name=m&password=q": "redis+sentinel://:xxxxx@h:26379?master_name=m&password=xxxxx",
		"redis+cluster://h:7000?addr=h:7001#frag":              "redis+cluster://h:7000?addr=h:7001#xxxxx",
		"redis:hunter2@h":                                      "redis:xxxxx@h",
		"bolt:/var/lib/w@x.db":                                 "bolt:/var/lib/w@x.db",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// Redis Cluster and Sentinel URLs build the right client options.
func TestParseRedisDeployments(t *testing.T) {
	sp, err := parseStore("redis+cluster://u:pw@a:7000?addr=b:7001&addr=c:7002&dial_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	if sp.redis != redisCluster || strings.Join(sp.cluster.Addrs, ",") != "a:7000,b:7001,c:7002" || sp.cluster.Username != "u" || sp.cluster.Password != "pw" || sp.cluster.TLSConfig != nil {
		t.Fatalf("cluster options %+v", sp.cluster)
	}
	sp, err = parseStore("rediss+cluster://a:7000?skip_verify=true")
	if err != nil || sp.cluster.TLSConfig == nil || !sp.cluster.TLSConfig.InsecureSkipVerify || len(sp.warnings) != 1 {
		t.Fatalf("rediss cluster: %+v, %v", sp, err)
	}
	sp, err = parseStore("redis+sentinel://su:spw@s1:26379/2?master_name=mymaster&addr=s2:26379&password=rpw")
	if err != nil {
		t.Fatal(err)
	}
	f := sp.failover
	if sp.redis != redisSentinel || f.MasterName != "mymaster" || strings.Join(f.SentinelAddrs, ",") != "s1:26379,s2:26379" ||
		f.SentinelUsername != "su" || f.SentinelPassword != "spw" || f.Password != "rpw" || f.DB != 2 {
		t.Fatalf("sentinel options %+v", f)
	}
	sp, err = parseStore("rediss+sentinel://s1:26379?master_name=m&skip_verify=true")
	if err != nil || !sp.failover.TLSConfig.InsecureSkipVerify || len(sp.warnings) != 1 {
		t.Fatalf("rediss sentinel: %+v, %v", sp, err)
	}
	sp, err = parseStore("redis://h:6379/3")
	if err != nil || sp.redis != redisSingle || sp.redisOpt.DB != 3 || len(sp.warnings) != 0 {
		t.Fatalf("single: %+v, %v", sp, err)
	}
	for _, bad := range []string{"redis+cluster://a:7000?bogus=1", "redis+sentinel://a:26379", "redis+sentinel://a:26379?master_name=m&route_by_latency=true", "redis+nope://a:1"} {
		if _, err := parseStore(bad); err == nil {
			t.Errorf("parseStore(%q) accepted", bad)
		}
	}
}

// Issue #11: rediss://…?skip_verify=true was accepted silently. Insecure
// choices are allowed, and said once at start.
func TestInsecureStoreAndAPIBaseWarned(t *testing.T) {
	fake := newFake(t)
	secretFile := writeFile(t, "secret", secret)
	closed := closedPort(t)
	for _, tc := range []struct {
		name, store, base, want string
	}{
		{"rediss skip_verify", "rediss://" + closed + "/0?skip_verify=true", fake.URL(), "TLS certificates are not verified"},
		{"postgres sslmode require remote", "postgres://u:" + storePassword + "@192.0.2.1:1/db?sslmode=require&connect_timeout=1", fake.URL(), "sslmode=require"},
		{"plain http API base", "memory:", "http://api.example.invalid", "plain HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runIn(t, nil, "token", "--appid", appID, "--secret-file", secretFile, "--store", tc.store, "--api-base", tc.base, "--timeout", "3s")
			if n := strings.Count(r.stderr, "warning:"); n != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%d warnings with %q in stderr %q, want 1", n, tc.want, r.stderr)
			}
			if !strings.Contains(r.stderr, "wechatconf: warning: ") || strings.Contains(r.stderr, storePassword) {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
	// Loopback and verified TLS say nothing.
	r := runIn(t, nil, "token", "--appid", appID, "--secret-file", secretFile, "--store", "postgres://u@127.0.0.1:1/db?sslmode=disable&connect_timeout=1", "--api-base", fake.URL(), "--timeout", "3s")
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("loopback warned: %q", r.stderr)
	}
}

// An API base with a user part is refused, from the flag or the
// environment, without showing its password.
func TestAPIBasePasswordNeverShown(t *testing.T) {
	for _, tc := range []struct {
		env  env
		args []string
	}{
		{nil, []string{"token", "--api-base", "https://u:" + storePassword + "@proxy.example.com"}},
		{nil, []string{"token", "--api-base", "https://proxy.example.com/?key=" + storePassword}},
		{env{envAPIBase: "https://u:" + storePassword + "@proxy.example.com", envAppID: appID, envSecret: secret}, []string{"token", "--store", "memory:"}},
	} {
		r := runIn(t, tc.env, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "base URL") {
			t.Errorf("%v: exit %d, %q", tc.args, r.code, r.stderr)
		}
		if strings.Contains(r.stderr, storePassword) {
			t.Errorf("%v: stderr shows the password: %q", tc.args, r.stderr)
		}
		checkClean(t, r.stderr)
	}
}
