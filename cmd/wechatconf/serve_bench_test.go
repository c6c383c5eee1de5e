package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wechatconf/wechatconf/store"
	"github.com/wechatconf/wechatconf/wechattest"
)

// The load test's bounds (BenchmarkServeLoad): requests per round and
// handler, connections, rounds (each an A B pair), and a time bound on a
// round.
var (
	loadRequests = flag.Int("load.requests", 20000, "BenchmarkServeLoad: requests per round and handler")
	loadConns    = flag.Int("load.conns", 8, "BenchmarkServeLoad: keep-alive connections")
	loadPairs    = flag.Int("load.pairs", 10, "BenchmarkServeLoad: A B pairs of rounds")
	loadBound    = flag.Duration("load.bound", time.Minute, "BenchmarkServeLoad: most time a round may take")
	loadWrk      = flag.String("load.wrk", "", "BenchmarkServeLoad: run this wrk binary for each round instead of the Go client")
	loadWrkTime  = flag.Duration("load.wrktime", 3*time.Second, "BenchmarkServeLoad: the length of a wrk round")
)

const benchKey = "bench-server-key-0123456789abcdef"

// bareHandler is what serve is measured against: net/http with the same
// bearer check and a constant JSON answer of the same length.
type bareHandler struct {
	keySum [sha256.Size]byte
	body   []byte
}

func (h *bareHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if sum, ok := bearerSum(r.Header.Get("Authorization")); !ok || subtle.ConstantTimeCompare(sum[:], h.keySum[:]) != 1 {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(h.body)
}

// benchPair returns serve's handler, with a fresh access token, and the
// bare handler answering a body as long as serve's.
func benchPair(b *testing.B) (serve, bare http.Handler) {
	b.Helper()
	fake := wechattest.NewServer()
	b.Cleanup(fake.Close)
	st := store.NewMemory()
	c, m, err := newBenchConf(st, fake.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	serve = newBenchHandler(c, st, benchKey, m)
	req := httptest.NewRequest("GET", "/v1/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+benchKey)
	w := &discardWriter{h: http.Header{}}
	serve.ServeHTTP(w, req) // grants the token
	if w.code != 200 {
		b.Fatalf("serve answered %d", w.code)
	}
	body := bytes.Repeat([]byte("x"), w.n)
	copy(body, `{"access_token":"`)
	copy(body[len(body)-3:], "\"}\n")
	return serve, &bareHandler{keySum: sha256.Sum256([]byte(benchKey)), body: body}
}

// BenchmarkServeHandler is the handler alone, in process: serve's GET of a
// fresh access token against the bare handler.
func BenchmarkServeHandler(b *testing.B) {
	serve, bare := benchPair(b)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"serve", serve}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/v1/access_token", nil)
			req.Header.Set("Authorization", "Bearer "+benchKey)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(w, req)
			}
			if w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
		})
	}
}

// BenchmarkServeLoad serves both handlers on loopback with net/http's
// server as serve configures it, and sends each, in turn (A B A B ...), a
// fixed number of GETs over a fixed number of keep-alive connections from
// a small HTTP/1.1 client. It reports requests per second and the 99th
// percentile latency of each, and serve's ratios to bare. Run it alone:
//
//	go test -run='^$' -bench=BenchmarkServeLoad -benchtime=1x ./cmd/wechatconf
//
// The -load.* flags (after -args) change its bounds; -load.wrk=wrk has
// each round run by wrk (Debian's package) instead of the Go client, for
// -load.wrktime.
func BenchmarkServeLoad(b *testing.B) {
	serve, bare := benchPair(b)
	addrs := map[string]string{}
	for name, h := range map[string]http.Handler{"serve": serve, "bare": bare} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := benchServer(h)
		go srv.Serve(ln)
		b.Cleanup(func() { srv.Close() })
		addrs[name] = ln.Addr().String()
	}
	order := []string{"bare", "serve"}
	// Warm both up (connections, pools, counters) before measuring.
	for _, name := range order {
		if _, err := loadRound(addrs[name], *loadConns, *loadRequests/10, *loadBound); err != nil {
			b.Fatal(err)
		}
	}
	lat := map[string][]time.Duration{}
	took := map[string]time.Duration{}
	var rpsRatios, p99Ratios []float64
	var wrkSum [2]wrkResult // bare, serve: sums over the rounds
	for i := 0; i < b.N; i++ {
		for p := 0; p < *loadPairs; p++ {
			var rps, tail [2]float64
			for j, name := range order {
				if *loadWrk != "" {
					r, err := wrkRound(*loadWrk, addrs[name], *loadConns, *loadWrkTime)
					if err != nil {
						b.Fatal(err)
					}
					rps[j], tail[j] = r.rps, float64(r.p99)
					wrkSum[j].rps += r.rps
					wrkSum[j].p99 += r.p99
				} else {
					r, err := loadRound(addrs[name], *loadConns, *loadRequests, *loadBound)
					if err != nil {
						b.Fatal(err)
					}
					lat[name] = append(lat[name], r.lat...)
					took[name] += r.took
					rps[j], tail[j] = float64(len(r.lat))/r.took.Seconds(), float64(p99(r.lat))
				}
				b.Logf("pair %d %-5s %8.0f req/s  p99 %v", p, name, rps[j], time.Duration(tail[j]))
			}
			rpsRatios = append(rpsRatios, rps[1]/rps[0])
			p99Ratios = append(p99Ratios, tail[1]/tail[0])
		}
	}
	b.ReportMetric(median(rpsRatios), "req/s-ratio-median")
	b.ReportMetric(median(p99Ratios), "p99-ratio-median")
	if *loadWrk != "" { // wrk gives no latencies to pool: the means of the rounds
		n := float64(len(rpsRatios))
		b.ReportMetric(wrkSum[0].rps/n, "bare-req/s")
		b.ReportMetric(wrkSum[1].rps/n, "serve-req/s")
		b.ReportMetric(wrkSum[1].rps/wrkSum[0].rps, "req/s-ratio")
		b.ReportMetric(float64(wrkSum[1].p99)/float64(wrkSum[0].p99), "p99-ratio")
		return
	}
	rps := func(name string) float64 { return float64(len(lat[name])) / took[name].Seconds() }
	b.ReportMetric(rps("bare"), "bare-req/s")
	b.ReportMetric(rps("serve"), "serve-req/s")
	b.ReportMetric(float64(p99(lat["bare"]).Microseconds()), "bare-p99-µs")
	b.ReportMetric(float64(p99(lat["serve"]).Microseconds()), "serve-p99-µs")
	// Pooled over every round, and the median of the pairs' ratios (which
	// one slow round on a shared machine moves less).
	b.ReportMetric(rps("serve")/rps("bare"), "req/s-ratio")
	b.ReportMetric(float64(p99(lat["serve"]))/float64(p99(lat["bare"])), "p99-ratio")
}

type wrkResult struct {
	rps float64
	p99 time.Duration
}

// wrkRound runs wrk (one thread, conns connections, for d) against addr
// and reads its requests per second and 99th percentile.
func wrkRound(wrk, addr string, conns int, d time.Duration) (wrkResult, error) {
	out, err := exec.Command(wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency",
		"-H", "Authorization: Bearer "+benchKey, "http://"+addr+"/v1/access_token").CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("%s: %v\n%s", wrk, err, out)
	}
	var r wrkResult
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, err = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "99%":
			r.p99, err = time.ParseDuration(f[1])
		case strings.Contains(line, "Non-2xx"):
			err = fmt.Errorf("wrk saw errors:\n%s", out)
		}
		if err != nil {
			return wrkResult{}, err
		}
	}
	if r.rps == 0 || r.p99 == 0 {
		return wrkResult{}, fmt.Errorf("no figures in wrk's output:\n%s", out)
	}
	return r, nil
}

// median is the median of v (sorted in place).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// benchServer is an http.Server with runServe's bounds.
func benchServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      requestTimeout + 5*time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

type roundResult struct {
	lat  []time.Duration
	took time.Duration
}

// loadRound sends n GETs of the access token to addr over conns
// connections and returns every latency and the round's wall time. It
// fails on any answer but 200 and past bound.
func loadRound(addr string, conns, n int, bound time.Duration) (roundResult, error) {
	req := []byte("GET /v1/access_token HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + benchKey + "\r\n\r\n")
	deadline := time.Now().Add(bound)
	lats := make([][]time.Duration, conns)
	errs := make([]error, conns)
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	for c := range conns {
		share := n / conns
		if c < n%conns {
			share++
		}
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			ready.Done()
			if err != nil {
				errs[c] = err
				return
			}
			defer conn.Close()
			conn.SetDeadline(deadline)
			br := bufio.NewReaderSize(conn, 4<<10)
			l := make([]time.Duration, 0, share)
			<-start
			for range share {
				t0 := time.Now()
				if _, err := conn.Write(req); err != nil {
					errs[c] = err
					return
				}
				if err := readOK(br); err != nil {
					errs[c] = err
					return
				}
				l = append(l, time.Since(t0))
			}
			lats[c] = l
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	var all []time.Duration
	for c := range conns {
		if errs[c] != nil {
			return roundResult{}, errs[c]
		}
		all = append(all, lats[c]...)
	}
	return roundResult{lat: all, took: took}, nil
}

// readOK reads one HTTP/1.1 response with a Content-Length and fails
// unless it is a 200.
func readOK(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("answer %q", line)
	}
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return err
			}
		}
	}
	if length < 0 {
		return errors.New("answer without Content-Length")
	}
	_, err = br.Discard(length)
	return err
}

// p99 is the 99th percentile of d (sorted in place).
func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[(len(d)*99)/100]
}
