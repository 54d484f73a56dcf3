// Package packaging holds the files that package meshup for operators
// (systemd/) and checks them, with the Dockerfile and .goreleaser.yaml at
// the repository's root, against the code: no test needs docker,
// goreleaser or a running systemd.
package packaging

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const root = ".."

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// isMain reports whether dir (from the root) holds a main package.
func isMain(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(root, dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if b, err := os.ReadFile(f); err == nil && regexp.MustCompile(`(?m)^package main$`).Match(b) {
			return true
		}
	}
	return false
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

func parseDockerfile(t *testing.T, text string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(text, "\n") {
		trim := strings.TrimSpace(l)
		if cur.Len() == 0 && (trim == "" || strings.HasPrefix(trim, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trim, `\`) {
			cur.WriteString(strings.TrimSuffix(trim, `\`) + " ")
			continue
		}
		cur.WriteString(trim)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends in a continuation line")
	}
	return out
}

// TestDockerfile checks the Dockerfile's syntax and what it promises: a
// multi-stage build of the three binaries with CGO off on the Go of
// go.mod, a non-root final stage, the relay as the exec-form entrypoint,
// and the ports exposed.
func TestDockerfile(t *testing.T) {
	known := []string{"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
	ins := parseDockerfile(t, read(t, "Dockerfile"))
	if len(ins) == 0 || ins[0].cmd != "FROM" {
		t.Fatalf("the first instruction is not FROM: %+v", ins)
	}
	stages := map[string]bool{}
	var final []instruction // the instructions of the last stage
	var builds []string
	for _, in := range ins {
		if !slices.Contains(known, in.cmd) {
			t.Errorf("line %d: unknown instruction %q", in.line, in.cmd)
		}
		if in.args == "" {
			t.Errorf("line %d: %s without arguments", in.line, in.cmd)
		}
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			} else if len(f) != 1 {
				t.Errorf("line %d: FROM %q", in.line, in.args)
			}
			final = nil
		case "COPY":
			if m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(in.args); m != nil && !stages[m[1]] {
				t.Errorf("line %d: COPY --from=%s names no earlier stage", in.line, m[1])
			}
		case "RUN":
			if strings.Contains(in.args, "go build") {
				builds = append(builds, in.args)
			}
		}
		final = append(final, in)
	}
	if len(stages) == 0 {
		t.Error("no named build stage: not a multi-stage build")
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(read(t, "go.mod"))
	if !strings.Contains(ins[0].args, "golang:"+goVersion[1]) {
		t.Errorf("builder %q is not the Go of go.mod (%s)", ins[0].args, goVersion[1])
	}
	if len(builds) != 1 || !strings.Contains(builds[0], "CGO_ENABLED=0") {
		t.Fatalf("want one go build with CGO_ENABLED=0, got %q", builds)
	}
	for _, cmd := range []string{"relay", "rendezvous", "meshup"} {
		if !strings.Contains(builds[0], "./cmd/"+cmd) || !isMain("cmd/"+cmd) {
			t.Errorf("go build does not build ./cmd/%s, or it is not a main package", cmd)
		}
	}
	base := final[0].args
	if !strings.Contains(base, "distroless/static") && base != "scratch" {
		t.Errorf("final stage from %q, want distroless static or scratch", base)
	}
	var user, entry string
	var exposed []string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
	var argv []string
	if err := json.Unmarshal([]byte(entry), &argv); err != nil || len(argv) == 0 || filepath.Base(argv[0]) != "relay" {
		t.Errorf("ENTRYPOINT %s: want the exec form running the relay (%v)", entry, err)
	}
	for _, p := range exposed {
		if !regexp.MustCompile(`^\d{1,5}(/(tcp|udp))?$`).MatchString(p) {
			t.Errorf("EXPOSE %q is not PORT[/tcp|udp]", p)
		}
	}
	for _, want := range []string{"8081/tcp", "8080/tcp", "3478/udp", "4001/tcp", "4001/udp"} {
		if !slices.Contains(exposed, want) {
			t.Errorf("EXPOSE lacks %s", want)
		}
	}
}

// TestSystemdUnit checks the relay's unit: the hardening it promises and,
// where systemd-analyze is installed, that systemd reads every line of it
// without a complaint.
func TestSystemdUnit(t *testing.T) {
	unit := read(t, "packaging/systemd/meshup-relay.service")
	for _, want := range []string{
		"DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"NoNewPrivileges=yes", "RestrictAddressFamilies=AF_INET AF_INET6", "MemoryMax=",
		"StateDirectory=meshup-relay", "Restart=on-failure", "--key-file ${STATE_DIRECTORY}/",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^CapabilityBoundingSet=$`).MatchString(unit) {
		t.Error("unit lacks an empty CapabilityBoundingSet=")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	// verify needs ExecStart's binary to exist: point it at one that does.
	dir := t.TempDir()
	path := filepath.Join(dir, "meshup-relay.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/meshup-relay", "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestGoreleaser checks the release configuration builds the three
// binaries from their main packages for linux, darwin and windows on
// amd64 and arm64, and ARMv7 Linux.
func TestGoreleaser(t *testing.T) {
	cfg := read(t, ".goreleaser.yaml")
	if strings.Contains(cfg, "\t") {
		t.Error("tab in YAML")
	}
	if !regexp.MustCompile(`(?m)^version: 2$`).MatchString(cfg) {
		t.Error("not a goreleaser v2 configuration")
	}
	for _, cmd := range []string{"relay", "rendezvous", "meshup"} {
		if !strings.Contains(cfg, "main: ./cmd/"+cmd+"\n") || !strings.Contains(cfg, "binary: "+cmd+"\n") || !isMain("cmd/"+cmd) {
			t.Errorf("no build of ./cmd/%s (binary %s), or it is not a main package", cmd, cmd)
		}
	}
	for _, want := range []string{"goos: [linux, darwin, windows]", "goarch: [amd64, arm64, arm]", `goarm: ["7"]`, "CGO_ENABLED=0"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("release configuration lacks %q", want)
		}
	}
	// Every file an archive ships exists.
	files := regexp.MustCompile(`(?m)^      - ([\w./-]+)$`).FindAllStringSubmatch(cfg[strings.Index(cfg, "files:"):], -1)
	if len(files) < 3 {
		t.Errorf("archives ship %d files, want LICENSE, README.md and the systemd unit", len(files))
	}
	for _, m := range files {
		if _, err := os.Stat(filepath.Join(root, m[1])); err != nil {
			t.Errorf("archive file %s: %v", m[1], err)
		}
	}
}

// TestLicense checks the licence is MIT with its copyright line.
func TestLicense(t *testing.T) {
	l := read(t, "LICENSE")
	if !strings.HasPrefix(l, "MIT License\n\nCopyright (c) 2026 The meshup authors\n") || !strings.Contains(l, `THE SOFTWARE IS PROVIDED "AS IS"`) {
		t.Error("LICENSE is not the MIT licence of the meshup authors")
	}
}
