package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The deployment recipes (issue #14) run `wechatconf serve` with flags
// written in files the compiler does not see. These tests hold those files
// to the real flags, so that a renamed or removed flag breaks here, not in
// production. scripts/deploy-test.sh builds and runs the image and verifies
// the unit with systemd-analyze; these only read the files.

const (
	deployUnit       = "../../deploy/systemd/wechatconf.service"
	deployDockerfile = "../../deploy/container/Dockerfile"
)

func TestDeploySystemdUnit(t *testing.T) {
	unit := deployReadUnit(t, deployUnit)
	svc := unit["Service"]
	exec := svc["ExecStart"]
	if len(exec) != 1 {
		t.Fatalf("%s: %d ExecStart= lines, want 1", deployUnit, len(exec))
	}
	args := strings.Fields(strings.TrimLeft(exec[0], "-@:+!"))
	if len(args) < 2 || args[0] != "/usr/local/bin/wechatconf" || args[1] != "serve" {
		t.Fatalf("%s: ExecStart=%s, want /usr/local/bin/wechatconf serve ...", deployUnit, exec[0])
	}
	deployCheckServeArgs(t, deployUnit+" ExecStart", args[2:])

	// The hardening the issue asks for: each line must stay.
	want := map[string]string{
		"DynamicUser":             "yes",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"PrivateTmp":              "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallFilter":        "@system-service",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"Restart":                 "on-failure",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
	}
	for k, v := range want {
		if !deployContains(svc[k], v) {
			t.Errorf("%s: [Service] lacks %s=%s (has %q)", deployUnit, k, v, svc[k])
		}
	}
	if len(svc["LoadCredential"]) == 0 {
		t.Errorf("%s: no LoadCredential= line: secrets must reach the service as credentials", deployUnit)
	}
	for _, c := range svc["LoadCredential"] {
		if name, path, ok := strings.Cut(c, ":"); !ok || name == "" || !filepath.IsAbs(path) {
			t.Errorf("%s: LoadCredential=%s, want NAME:/absolute/path", deployUnit, c)
		}
	}
	if !deployContains(unit["Install"]["WantedBy"], "multi-user.target") {
		t.Errorf("%s: not WantedBy=multi-user.target", deployUnit)
	}
}

func TestDeployDockerfile(t *testing.T) {
	final := deployFinalStage(t, deployDockerfile)
	if from := final["FROM"]; len(from) != 1 || strings.Fields(from[0])[0] != "scratch" {
		t.Errorf("%s: final stage FROM %q, want scratch", deployDockerfile, from)
	}
	user := deployLast(final["USER"])
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("%s: final stage USER %q, want a numeric non-root user", deployDockerfile, user)
	}
	if !deployContains(final["COPY"], "--from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("%s: the final stage does not copy the CA certificates (the binary calls https://api.weixin.qq.com)", deployDockerfile)
	}
	var entry, cmd []string
	if err := json.Unmarshal([]byte(deployLast(final["ENTRYPOINT"])), &entry); err != nil || len(entry) != 1 || entry[0] != "/usr/local/bin/wechatconf" {
		t.Errorf("%s: ENTRYPOINT %q, want [\"/usr/local/bin/wechatconf\"] (exec form: there is no shell)", deployDockerfile, deployLast(final["ENTRYPOINT"]))
	}
	if err := json.Unmarshal([]byte(deployLast(final["CMD"])), &cmd); err != nil || len(cmd) == 0 || cmd[0] != "serve" {
		t.Fatalf("%s: CMD %q, want an exec-form [\"serve\", ...]", deployDockerfile, deployLast(final["CMD"]))
	}
	deployCheckServeArgs(t, deployDockerfile+" CMD", cmd[1:])
}

// deployCheckServeArgs checks that args parse as serve's flags.
func deployCheckServeArgs(t *testing.T, where string, args []string) {
	t.Helper()
	var serve *command
	for _, c := range commands {
		if c.name == "serve" {
			serve = c
		}
	}
	fs := newFlagSet(serve, &options{})
	var known []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			t.Errorf("%s: %q is not a flag (serve takes no arguments)", where, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		takesValue := true
		if f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				takesValue = false
			}
		}
		var group []string
		group = append(group, a)
		if takesValue && !hasValue && i+1 < len(args) {
			i++
			group = append(group, args[i])
		}
		switch {
		case f != nil:
			known = append(known, group...)
		default:
			t.Errorf("%s: --%s is not a flag of wechatconf serve", where, name)
		}
	}
	// The values too: a duration or a number must parse.
	if err := fs.Parse(known); err != nil {
		t.Errorf("%s: %v", where, err)
	}
}

// deployReadUnit reads a systemd unit file: section -> key -> values in order
// (continuation lines joined, comments dropped).
func deployReadUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	var section, pending string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line, pending = pending+" "+line, ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s: cannot read line %q", path, line)
		}
		k = strings.TrimSpace(k)
		out[section][k] = append(out[section][k], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// deployFinalStage reads a Dockerfile's last stage: instruction -> arguments in
// order (continuation lines joined, comments dropped).
func deployFinalStage(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
	var stage map[string][]string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		instr = strings.ToUpper(instr)
		if instr == "FROM" {
			stage = map[string][]string{}
		}
		if stage != nil {
			stage[instr] = append(stage[instr], strings.TrimSpace(rest))
		}
	}
	if stage == nil {
		t.Fatalf("%s: no FROM", path)
	}
	return stage
}

func deployContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func deployLast(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return list[len(list)-1]
}
