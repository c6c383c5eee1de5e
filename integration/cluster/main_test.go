// Package cluster proves the refresh engine with many nodes against every
// real backend: nodes are separate OS processes (this test binary run again
// as a node, see TestMain) sharing one Redis, Memcached or PostgreSQL server
// in a container, with one wechattest server as WeChat in the parent. The
// suites are those of issue 5:
//
//   - herd: 8 processes × 32 goroutines, a cold start and 5 forced expiry
//     cycles, exactly one grant each;
//   - crash: the lease holder is killed with SIGKILL while its grant is in
//     flight; another node grants after the lease TTL; nothing stays locked;
//   - outage: the backend's container is stopped under load through a token
//     expiry and started again; callers see no error, grants stay at most
//     one per cycle per process, and the nodes converge afterwards;
//   - invalidation: WeChat revokes the token every node holds; conf.Do on
//     every caller of every node makes one grant and one retry per caller;
//   - refresh-only: business nodes never grant and see a forced grant made
//     on a server node within their re-read interval.
//
// bbolt lets one process at a time open its file, so the multi-process
// suites do not apply to it: it runs herd, invalidation and refresh-only
// with the nodes as separate Conf values inside the test process, each with
// a store of its own over the shared file. crash (a process must die) and
// outage (there is no server to stop) are not run for it.
//
// Each backend's container is started once and shared by its suites, which
// run one after another (outage last: it restarts the server); the backends
// run in parallel. Run one suite with, for example,
// go test -run 'TestCluster/redis/herd' ./cluster/.
package cluster

import (
	"os"
	"testing"

	"github.com/wechatconf/wechatconf/integration/backends"
)

// TestMain runs the binary as a cluster node when the parent asked for one
// (nodeEnv set), and as the test suite otherwise.
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(nodeEnv); ok {
		os.Exit(nodeMain(spec))
	}
	os.Exit(m.Run())
}

// TestCluster runs every suite on every backend.
func TestCluster(t *testing.T) {
	for _, k := range backends.All() {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			b := &bed{d: backends.Start(t, k), inProcess: k == backends.Bolt}
			t.Run("herd", func(t *testing.T) { testHerd(t, b) })
			if !b.inProcess {
				t.Run("crash", func(t *testing.T) { testCrash(t, b) })
			}
			t.Run("invalidation", func(t *testing.T) { testInvalidation(t, b) })
			t.Run("refresh-only", func(t *testing.T) { testRefreshOnly(t, b) })
			t.Run("slow-grant", func(t *testing.T) { testSlowGrant(t, b) })
			t.Run("flood", func(t *testing.T) { testFlood(t, b) })
			t.Run("poison", func(t *testing.T) { testPoison(t, b) })
			t.Run("wecom", func(t *testing.T) { testWeCom(t, b) })
			if b.d.Server != nil {
				t.Run("outage", func(t *testing.T) { testOutage(t, b) })
				t.Run("outage-rejections", func(t *testing.T) { testOutageRejections(t, b) })
				t.Run("hung", func(t *testing.T) { testHung(t, b) })
			}
		})
	}
}
