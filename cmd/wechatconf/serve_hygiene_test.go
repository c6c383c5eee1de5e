package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Issue #11: serve answered 404 and 405 in plain text and an oversized
// body with 400. Every answer is JSON with Cache-Control: no-store.
func TestServeEveryAnswerJSON(t *testing.T) {
	a := newAPI(t)
	auth := "Bearer " + testKey
	for _, tc := range []struct {
		method, path, auth, body string
		code                     int
		want                     string
	}{
		{"GET", "/nope", "", "", 404, "no such endpoint"},
		{"GET", "/v1/nope", auth, "", 404, "no such endpoint"},
		{"GET", "/v1/nope", "", "", 401, "bearer key"},
		{"POST", "/v1/access_token", auth, "", 405, "allowed: GET, HEAD"},
		{"DELETE", "/healthz", "", "", 405, "not allowed"},
		{"GET", "/v1/invalidate", auth, "", 405, "allowed: POST"},
		{"POST", "/v1/invalidate", auth, `{"value":"` + strings.Repeat("x", maxInvalidateBody) + `"}`, 413, "body over"},
		{"POST", "/v1/invalidate", auth, `{"value":"a"} {"value":"b"}`, 400, "want a JSON body"},
		{"POST", "/v1/invalidate", auth, `not json`, 400, "want a JSON body"},
		{"GET", "/v1/ticket?type=card", auth, "", 400, "jsapi, wx_card or agent_config"},
	} {
		req, _ := http.NewRequest(tc.method, a.srv.URL+tc.path, strings.NewReader(tc.body))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e errorResponse
		if resp.StatusCode != tc.code || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.want)
		}
		if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
			t.Errorf("%s %s: Content-Type %q, Cache-Control %q", tc.method, tc.path, ct, cc)
		}
		if tc.code == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
	// Unknown paths are counted as "other", whatever the status.
	if v := a.scrape()[sr(`wechatconf_http_requests_total`, `code="404",path="other"`)]; v != 2 {
		t.Errorf("404s counted %v, want 2", v)
	}
}

// Issue #11: serve held any number of idle keep-alive connections. At the
// limit an idle one is closed for the newcomer, and never more than the
// limit are open.
func TestLimitListenerShedsIdle(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 2
	ln := newLimitListener(tcp, limit)
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: ln.track,
	}
	go srv.Serve(ln)
	defer srv.Close()

	// request sends one keep-alive request on c and reads the answer.
	request := func(c net.Conn, br *bufio.Reader) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	var conns []net.Conn
	var readers []*bufio.Reader
	for i := range 5 * limit {
		c, err := net.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if err := request(c, br); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns, readers = append(conns, c), append(readers, br)
		if n := len(ln.sem); n > limit {
			t.Fatalf("%d connections held, limit %d", n, limit)
		}
	}
	// The oldest connections were shed: the server closed them.
	closed := 0
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := readers[i].ReadByte(); err == io.EOF {
			closed++
		}
	}
	if closed < len(conns)-limit {
		t.Errorf("%d of %d idle connections closed, want at least %d", closed, len(conns), len(conns)-limit)
	}
	// Close stops an Accept that waits for a slot.
	ln.Close()
}

func TestServeMaxConnsFlag(t *testing.T) {
	r := runIn(t, nil, "serve", "--dev", "--max-conns", "0")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--max-conns") {
		t.Errorf("--max-conns 0: exit %d, %q", r.code, r.stderr)
	}
}

// serve says insecure choices once, through its log: a plain-HTTP API base
// (conf.New warns) and a store without TLS verification.
func TestServeWarnsInsecureOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &watcher{}
	ready := stderr.await(regexp.MustCompile(`addr=127\.0\.0\.1:[0-9]+`))
	args := []string{"serve", "--listen", "127.0.0.1:0", "--key", "a-server-key-that-is-long-enough", "--appid", appID,
		"--secret-file", writeFile(t, "secret", secret), "--store", "memory:", "--api-base", "http://api.example.invalid"}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &strings.Builder{}, stderr, env{}.get) }()
	select {
	case <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, stderr)
	}
	cancel()
	<-done
	out := stderr.String()
	if n := strings.Count(out, "level=WARN"); n != 1 || !strings.Contains(out, "insecure API base") || !strings.Contains(out, "api.example.invalid") {
		t.Errorf("%d warnings in %s, want 1 about the API base", n, out)
	}
}
