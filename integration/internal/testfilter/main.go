// Command testfilter reads `go test -json` on stdin and prints what plain
// `go test` would: package result lines, benchmark lines, and the output of
// failed tests only. It also lists every skipped test with its reason and,
// with -ci, exits 1 when a test was skipped for a reason that -allow does not
// accept: in CI a skipped integration test is a failure, never a pass.
//
//	go test -json -race ./... | go run ./internal/testfilter -ci -allow 'does not implement'
//
// The exit status of go test itself is the caller's to check (set -o
// pipefail): testfilter judges skips only.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output, build-fail
}

// skip is a skipped test and why.
type skip struct {
	Test, Reason string
	Allowed      bool
}

// filter holds the state of one run.
type filter struct {
	out     io.Writer
	allow   *regexp.Regexp
	verbose bool

	buf   map[string][]string // package+test -> its output so far
	order []string            // keys of buf, in start order
	skips []skip
}

func newFilter(out io.Writer, allow *regexp.Regexp, verbose bool) *filter {
	return &filter{out: out, allow: allow, verbose: verbose, buf: map[string][]string{}}
}

func key(e event) string { return e.Package + "\x00" + e.Test }

// handle processes one event.
func (f *filter) handle(e event) {
	switch {
	case e.Action == "build-output":
		fmt.Fprint(f.out, e.Output)
	case e.Test == "":
		f.handlePackage(e)
	default:
		f.handleTest(e)
	}
}

func (f *filter) handlePackage(e event) {
	switch e.Action {
	case "output":
		// Plain go test prints the package's verdict, not "PASS".
		if f.verbose || e.Output != "PASS\n" {
			fmt.Fprint(f.out, e.Output)
		}
	case "fail":
		// Tests that never ended (a panic, a timeout) left their output
		// behind: it explains the failure.
		for _, k := range f.order {
			if lines, ok := f.buf[k]; ok && strings.HasPrefix(k, e.Package+"\x00") {
				name := strings.SplitN(k, "\x00", 2)[1]
				fmt.Fprintf(f.out, "--- unfinished: %s\n", name)
				f.print(lines)
				delete(f.buf, k)
			}
		}
	}
}

func (f *filter) handleTest(e event) {
	k := key(e)
	switch e.Action {
	case "run":
		f.buf[k] = nil
		f.order = append(f.order, k)
	case "output":
		if f.verbose || strings.HasPrefix(e.Test, "Benchmark") {
			fmt.Fprint(f.out, e.Output)
			return
		}
		f.buf[k] = append(f.buf[k], e.Output)
	case "fail":
		f.print(f.buf[k])
		delete(f.buf, k)
	case "skip":
		s := skip{Test: e.Package + " " + e.Test, Reason: reason(f.buf[k])}
		s.Allowed = f.allow != nil && f.allow.MatchString(s.Reason)
		f.skips = append(f.skips, s)
		delete(f.buf, k)
	case "pass", "bench":
		delete(f.buf, k)
	}
}

// print writes a failed test's output the way plain go test shows it: the
// "--- FAIL" line first, then what the test logged, without the progress
// lines (=== RUN, PAUSE, CONT, NAME) of -v.
func (f *filter) print(lines []string) {
	var head, body []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "=== "):
		case strings.HasPrefix(t, "--- "):
			head = append(head, l)
		default:
			body = append(body, l)
		}
	}
	for _, l := range append(head, body...) {
		fmt.Fprint(f.out, l)
	}
}

// reason extracts what a skipped test logged, without progress lines.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " | ")
}

// report lists the skips and says whether they fail the run.
func (f *filter) report(ci bool) (ok bool) {
	denied := 0
	for _, s := range f.skips {
		if !s.Allowed {
			denied++
		}
	}
	if len(f.skips) > 0 {
		fmt.Fprintf(f.out, "testfilter: %d test(s) skipped (%d for a reason not on the allow list):\n", len(f.skips), denied)
		for _, s := range f.skips {
			mark := "allowed"
			if !s.Allowed {
				mark = "NOT ALLOWED"
			}
			fmt.Fprintf(f.out, "  SKIP %s [%s]: %s\n", s.Test, mark, s.Reason)
		}
	}
	if ci && denied > 0 {
		fmt.Fprintf(f.out, "FAIL: %d integration test(s) skipped under CI=true; a skip is a failure here (fix the cause: Docker, images, servers)\n", denied)
		return false
	}
	return true
}

func main() {
	ci := flag.Bool("ci", os.Getenv("CI") == "true", "fail when a test was skipped for a reason -allow does not match (default: CI=true)")
	allow := flag.String("allow", "", "regular expression matching skip reasons that are acceptable (a feature the backend lacks)")
	verbose := flag.Bool("v", false, "print every output line, as go test -v")
	flag.Parse()
	var re *regexp.Regexp
	if *allow != "" {
		var err error
		if re, err = regexp.Compile(*allow); err != nil {
			fmt.Fprintf(os.Stderr, "testfilter: bad -allow: %v\n", err)
			os.Exit(2)
		}
	}
	f := newFilter(os.Stdout, re, *verbose)
	if err := f.run(os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "testfilter: %v\n", err)
		os.Exit(2)
	}
	if !f.report(*ci) {
		os.Exit(1)
	}
}

// run reads events until EOF. Lines that are not JSON (go test's own
// messages, such as a build failure) are printed as they are.
func (f *filter) run(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(f.out, "%s\n", line)
			continue
		}
		f.handle(e)
	}
	return sc.Err()
}
