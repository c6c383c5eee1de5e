package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wechatconf/wechatconf/conf"
)

// kinds are the credential kinds, in metrics order; a Kind indexes them.
var kinds = [...]conf.Kind{conf.AccessToken, conf.JSAPITicket, conf.WXCardTicket}

// latencyBuckets are the upper bounds (seconds) of the request latency
// histogram: from a hot-path answer to a grant that waited on the lease.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

type perKind [len(kinds)]float64

// metrics counts what the refresh engine and the HTTP API did, and writes
// it in the Prometheus text format (version 0.0.4) by hand, so that the
// command needs no client library.
type metrics struct {
	mu                   sync.Mutex
	grants, grantFails   perKind
	loads                perKind
	leaseWaits, waitSecs perKind
	invalidations        perKind
	storeErrors          perKind
	expiry               perKind // Unix seconds; 0 when unknown
	requests             map[requestKey]uint64
	latency              map[string]*histogram
}

type requestKey struct {
	path string
	code int
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func newMetrics() *metrics {
	return &metrics{requests: map[requestKey]uint64{}, latency: map[string]*histogram{}}
}

// observe is the Conf's observer: it only counts, under a short lock.
func (m *metrics) observe(e conf.Event) {
	k := int(e.Kind)
	if k < 0 || k >= len(kinds) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e.Type {
	case conf.EventGranted:
		m.grants[k]++
	case conf.EventGrantFailed:
		m.grantFails[k]++
	case conf.EventLoaded:
		m.loads[k]++
	case conf.EventLeaseWaited:
		m.leaseWaits[k]++
		m.waitSecs[k] += e.Wait.Seconds()
	case conf.EventInvalidated:
		m.invalidations[k]++
	case conf.EventStoreError:
		m.storeErrors[k]++
	}
	if !e.ExpiresAt.IsZero() {
		m.expiry[k] = float64(e.ExpiresAt.Unix())
	}
}

// observeRequest counts one HTTP request.
func (m *metrics) observeRequest(path string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[requestKey{path, code}]++
	h := m.latency[path]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(latencyBuckets))}
		m.latency[path] = h
	}
	s := d.Seconds()
	if i, _ := slices.BinarySearch(latencyBuckets, s); i < len(latencyBuckets) {
		h.counts[i]++
	}
	h.sum += s
	h.count++
}

// write renders every metric family. Kind counters are written for every
// kind from the start, so that rate() sees their first increment.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := bufio.NewWriter(w)
	defer b.Flush()

	counter := func(name, help string, v *perKind) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		for i, k := range kinds {
			fmt.Fprintf(b, "%s{kind=%s} %s\n", name, label(k.String()), num(v[i]))
		}
	}
	counter("wechatconf_grants_total", "Credentials this process granted at WeChat.", &m.grants)
	counter("wechatconf_grant_failures_total", "Grants at WeChat that failed (errcode, HTTP or network error).", &m.grantFails)
	counter("wechatconf_loads_total", "Credentials taken from the store instead of granted here.", &m.loads)
	counter("wechatconf_lease_waits_total", "Times this process waited for another holder of the store's lease.", &m.leaseWaits)
	counter("wechatconf_lease_wait_seconds_total", "Seconds spent waiting for another holder of the store's lease.", &m.waitSecs)
	counter("wechatconf_invalidations_total", "Credentials reported rejected by WeChat (compare-then-refresh).", &m.invalidations)
	counter("wechatconf_store_errors_total", "Store failures: outages, not misses.", &m.storeErrors)

	fmt.Fprintf(b, "# HELP wechatconf_credential_expiry_timestamp_seconds When the credential this process last obtained expires.\n")
	fmt.Fprintf(b, "# TYPE wechatconf_credential_expiry_timestamp_seconds gauge\n")
	for i, k := range kinds {
		if m.expiry[i] != 0 {
			fmt.Fprintf(b, "wechatconf_credential_expiry_timestamp_seconds{kind=%s} %s\n", label(k.String()), num(m.expiry[i]))
		}
	}

	keys := make([]requestKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b requestKey) int {
		if c := strings.Compare(a.path, b.path); c != 0 {
			return c
		}
		return a.code - b.code
	})
	fmt.Fprintf(b, "# HELP wechatconf_http_requests_total HTTP requests served, by path and status code.\n")
	fmt.Fprintf(b, "# TYPE wechatconf_http_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(b, "wechatconf_http_requests_total{path=%s,code=\"%d\"} %d\n", label(k.path), k.code, m.requests[k])
	}

	paths := make([]string, 0, len(m.latency))
	for p := range m.latency {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	const hname = "wechatconf_http_request_duration_seconds"
	fmt.Fprintf(b, "# HELP %s HTTP request latency, by path.\n# TYPE %s histogram\n", hname, hname)
	for _, p := range paths {
		h := m.latency[p]
		var cum uint64
		for i, le := range latencyBuckets {
			cum += h.counts[i]
			fmt.Fprintf(b, "%s_bucket{path=%s,le=\"%s\"} %d\n", hname, label(p), num(le), cum)
		}
		fmt.Fprintf(b, "%s_bucket{path=%s,le=\"+Inf\"} %d\n", hname, label(p), h.count)
		fmt.Fprintf(b, "%s_sum{path=%s} %s\n", hname, label(p), num(h.sum))
		fmt.Fprintf(b, "%s_count{path=%s} %d\n", hname, label(p), h.count)
	}
}

// num formats a sample value the way Prometheus reads it.
func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// label quotes a label value with the text format's escapes (backslash,
// double quote, newline).
func label(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
