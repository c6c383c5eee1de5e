package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// stream builds `go test -json` lines.
func stream(events ...event) string {
	var b strings.Builder
	for _, e := range events {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

const pkg = "example.com/it"

func out(test, s string) event { return event{Action: "output", Package: pkg, Test: test, Output: s} }
func act(test, a string) event { return event{Action: a, Package: pkg, Test: test} }

func run(t *testing.T, in string, allow string, ci bool) (string, bool) {
	t.Helper()
	var re *regexp.Regexp
	if allow != "" {
		re = regexp.MustCompile(allow)
	}
	var b strings.Builder
	f := newFilter(&b, re, false)
	if err := f.run(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	ok := f.report(ci)
	return b.String(), ok
}

func TestPassingRunIsQuiet(t *testing.T) {
	in := stream(
		act("TestA", "run"), out("TestA", "=== RUN   TestA\n"), out("TestA", "    a_test.go:9: chatter\n"),
		out("TestA", "--- PASS: TestA (0.01s)\n"), act("TestA", "pass"),
		out("", "PASS\n"), out("", "ok  \texample.com/it\t0.02s\n"), act("", "pass"),
	)
	got, ok := run(t, in, "", true)
	if !ok {
		t.Fatal("a run without skips failed the CI check")
	}
	if got != "ok  \texample.com/it\t0.02s\n" {
		t.Fatalf("output = %q; want only the package line", got)
	}
}

func TestFailureShowsItsOutput(t *testing.T) {
	in := stream(
		act("TestA", "run"), out("TestA", "=== RUN   TestA\n"),
		act("TestA/sub", "run"), out("TestA/sub", "=== RUN   TestA/sub\n"),
		out("TestA/sub", "    a_test.go:12: boom\n"), out("TestA/sub", "    --- FAIL: TestA/sub (0.00s)\n"),
		act("TestA/sub", "fail"),
		act("TestA/ok", "run"), out("TestA/ok", "    a_test.go:20: fine\n"), act("TestA/ok", "pass"),
		out("TestA", "--- FAIL: TestA (0.00s)\n"), act("TestA", "fail"),
		out("", "FAIL\n"), out("", "FAIL\texample.com/it\t0.02s\n"), act("", "fail"),
	)
	got, _ := run(t, in, "", false)
	for _, want := range []string{"--- FAIL: TestA/sub", "boom", "--- FAIL: TestA (", "FAIL\texample.com/it"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "fine") || strings.Contains(got, "=== RUN") {
		t.Errorf("output shows a passing test or progress lines:\n%s", got)
	}
	if strings.Index(got, "--- FAIL: TestA/sub") > strings.Index(got, "boom") {
		t.Errorf("the FAIL line should come before the message:\n%s", got)
	}
}

func TestSkipsUnderCI(t *testing.T) {
	in := stream(
		act("TestDocker", "run"), out("TestDocker", "    servers.go:1: no Docker engine answers\n"),
		out("TestDocker", "--- SKIP: TestDocker (0.00s)\n"), act("TestDocker", "skip"),
		act("TestW", "run"), out("TestW", "    storetest.go:781: the Store does not implement store.Watcher\n"),
		out("TestW", "--- SKIP: TestW (0.00s)\n"), act("TestW", "skip"),
		out("", "ok  \texample.com/it\t0.02s\n"), act("", "pass"),
	)
	allow := `does not implement store\.`

	got, ok := run(t, in, allow, true)
	if ok {
		t.Fatalf("CI run with a skip for a missing Docker passed:\n%s", got)
	}
	if !strings.Contains(got, "NOT ALLOWED]: servers.go:1: no Docker engine answers") {
		t.Errorf("report lacks the denied skip and its reason:\n%s", got)
	}
	if !strings.Contains(got, "SKIP example.com/it TestW [allowed]") {
		t.Errorf("report lacks the allowed skip:\n%s", got)
	}

	if _, ok := run(t, in, allow, false); !ok {
		t.Error("without -ci, skips must not fail the run")
	}

	only := stream(
		act("TestW", "run"), out("TestW", "    storetest.go:781: the Store does not implement store.Watcher\n"),
		act("TestW", "skip"), act("", "pass"),
	)
	if got, ok := run(t, only, allow, true); !ok {
		t.Errorf("CI run whose only skip is allowed failed:\n%s", got)
	}
}

func TestUnfinishedTestOutputIsShown(t *testing.T) {
	in := stream(
		act("TestHang", "run"), out("TestHang", "    h_test.go:3: waiting\n"),
		out("", "panic: test timed out after 1s\n"), out("", "FAIL\texample.com/it\t1.00s\n"), act("", "fail"),
	)
	got, _ := run(t, in, "", false)
	if !strings.Contains(got, "--- unfinished: TestHang") || !strings.Contains(got, "waiting") {
		t.Fatalf("output of the test that never ended is missing:\n%s", got)
	}
}

func TestNonJSONLinesPassThrough(t *testing.T) {
	got, _ := run(t, "# example.com/it\n./a.go:1: syntax error\n", "", false)
	if got != "# example.com/it\n./a.go:1: syntax error\n" {
		t.Fatalf("output = %q", got)
	}
}
