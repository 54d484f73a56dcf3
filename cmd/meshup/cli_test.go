package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// These tests run the meshup commands in-process (runSend, runGet,
// runDev) against a whole dev mesh on loopback: a real rendezvous and two
// real relays. A relayFault wrapped around the relays' handlers breaks
// item responses the way a failing or lying relay does.

// syncBuffer is a buffer safe for a command writing and a test reading,
// which tells when a string appears.
type syncBuffer struct {
	mu      sync.Mutex // guards the fields below
	b       bytes.Buffer
	waiters []waiter
}

type waiter struct {
	s  string
	ch chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.Write(p)
	kept := b.waiters[:0]
	for _, w := range b.waiters {
		if strings.Contains(b.b.String(), w.s) {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	b.waiters = kept
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// appeared returns a channel closed once s was written.
func (b *syncBuffer) appeared(s string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	if strings.Contains(b.b.String(), s) {
		close(ch)
	} else {
		b.waiters = append(b.waiters, waiter{s, ch})
	}
	return ch
}

// faultMode says what a relayFault does to item responses.
type faultMode int

const (
	pass faultMode = iota
	// cut passes the first cutAt bytes of a response from byte 0, then
	// breaks it, and breaks every other response at once.
	cut
	// long appends junk to every 206 response, sent chunked, past its
	// Content-Range.
	long
)

// relayFault wraps the relays' handlers.
type relayFault struct {
	mu       sync.Mutex // guards the fields below
	mode     faultMode
	cutAt    int
	ifRanges []string // If-Range headers of item requests with a Range
	ranges   []string
}

func (f *relayFault) set(m faultMode, cutAt int) {
	f.mu.Lock()
	f.mode, f.cutAt = m, cutAt
	f.mu.Unlock()
}

func (f *relayFault) seen() (ranges, ifRanges []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ranges...), append([]string(nil), f.ifRanges...)
}

func (f *relayFault) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v1/items/") {
			h.ServeHTTP(w, r)
			return
		}
		f.mu.Lock()
		mode, cutAt := f.mode, f.cutAt
		if rg := r.Header.Get("Range"); rg != "" {
			f.ranges = append(f.ranges, rg)
			f.ifRanges = append(f.ifRanges, r.Header.Get("If-Range"))
		}
		f.mu.Unlock()
		switch mode {
		case cut:
			left := 0
			if r.Header.Get("Range") == "" {
				left = cutAt
			}
			h.ServeHTTP(&cutWriter{ResponseWriter: w, left: left}, r)
		case long:
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			if rec.Code == http.StatusPartialContent {
				w.(http.Flusher).Flush() // chunked: no Content-Length holds the body
				w.Write(bytes.Repeat([]byte("JUNK"), 1000))
			}
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// cutWriter passes left bytes, then fails every Write as a broken
// connection does: the response ends short of its Content-Length.
type cutWriter struct {
	http.ResponseWriter
	left int
}

// Unwrap lets the relay's http.ResponseController reach the connection.
func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("test: connection cut")
	}
	n, err := c.ResponseWriter.Write(p[:min(len(p), c.left)])
	c.left -= n
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	if err == nil && n < len(p) {
		err = errors.New("test: connection cut")
	}
	return n, err
}

// startMesh starts the dev mesh's defaults, with f's faults in its relays
// when f is not nil.
func startMesh(t *testing.T, f *relayFault) *devmesh.Mesh {
	t.Helper()
	var cfg devmesh.Config
	if f != nil {
		cfg.WrapRelay = f.wrap
	}
	return startMeshWith(t, cfg)
}

// startMeshWith starts a dev mesh of cfg (logging nowhere unless cfg
// says) and closes it at the test's cleanup.
func startMeshWith(t *testing.T, cfg devmesh.Config) *devmesh.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := devmesh.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// sender is a running `meshup send`.
type sender struct {
	links  []string // share link and download URL of each file
	stderr *syncBuffer
	stop   func() error
}

// startSend runs `meshup send args...` until stop and returns once it
// printed its links.
func startSend(t *testing.T, files int, args ...string) *sender {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &sender{stderr: &syncBuffer{}}
	done := make(chan error, 1)
	go func() {
		err := runSend(ctx, args, pw, s.stderr)
		pw.CloseWithError(fmt.Errorf("send ended: %v", err))
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	for len(s.links) < 2*files && sc.Scan() {
		s.links = append(s.links, sc.Text())
	}
	go io.Copy(io.Discard, pr)
	var once sync.Once
	var err error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { s.stop() })
	if len(s.links) < 2*files {
		t.Fatalf("send printed %q, want %d links; stderr:\n%s; err %v", s.links, 2*files, s.stderr, s.stop())
	}
	return s
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func get(t *testing.T, args ...string) (stdout []byte, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	var errb syncBuffer
	err = runGet(ctx, args, &out, &errb)
	return out.Bytes(), errb.String(), err
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i := meshtest.FirstDiff(got, want); i >= 0 {
		t.Fatalf("%s: %d bytes, differs from the item's %d at byte %d", path, len(got), len(want), i)
	}
}

func checkGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v, want it gone", p, err)
		}
	}
}

// TestGetRefusesForeignFiles: get never overwrites an existing file nor
// resumes a .part it did not write for this item, unless --force.
func TestGetRefusesForeignFiles(t *testing.T) {
	m := startMesh(t, nil)
	dir := t.TempDir()
	data := meshtest.RandomBytes(300<<10, 1)
	src := writeFile(t, t.TempDir(), "a.bin", data)
	other := writeFile(t, t.TempDir(), "b.bin", data[:1000])
	s := startSend(t, 2, src, other, "--rendezvous", m.URL) // flags after the files
	share, otherShare := s.links[0], s.links[2]

	foreign := []byte("my own precious file, not the item")
	t.Run("existing file", func(t *testing.T) {
		out := writeFile(t, dir, "existing", foreign)
		_, _, err := get(t, share, "-o", out)
		if err == nil || !strings.Contains(err.Error(), "exists; not overwriting it") {
			t.Fatalf("got %v, want a refusal to overwrite", err)
		}
		checkFile(t, out, foreign)
		checkGone(t, out+partSuffix, out+recordSuffix)
		if _, _, err := get(t, share, "-o", out, "--force"); err != nil {
			t.Fatalf("--force: %v", err)
		}
		checkFile(t, out, data)
		checkGone(t, out+partSuffix, out+recordSuffix)
	})
	t.Run("part without record", func(t *testing.T) {
		out := filepath.Join(dir, "norecord")
		writeFile(t, dir, "norecord.part", foreign)
		_, _, err := get(t, share, "-o", out)
		if err == nil || !strings.Contains(err.Error(), "meshup get did not write it") {
			t.Fatalf("got %v, want a refusal to resume", err)
		}
		checkFile(t, out+partSuffix, foreign)
		checkGone(t, out)
	})
	t.Run("part of another item", func(t *testing.T) {
		out := filepath.Join(dir, "otheritem")
		// An interrupted download of the other item leaves these.
		if _, _, err := get(t, otherShare, "-o", out); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(out, out+partSuffix); err != nil {
			t.Fatal(err)
		}
		id, _ := proto.ParseItemID(itemIDOf(otherShare))
		rec := &partRecord{Item: id, Size: 1000, Encrypted: true, ETag: `"x"`}
		if err := rec.save(out + recordSuffix); err != nil {
			t.Fatal(err)
		}
		_, _, err := get(t, share, "-o", out)
		if err == nil || !strings.Contains(err.Error(), "partial download of another item") {
			t.Fatalf("got %v, want a refusal to resume", err)
		}
		checkFile(t, out+partSuffix, data[:1000])
		if _, _, err := get(t, share, "-o", out, "--force"); err != nil {
			t.Fatalf("--force: %v", err)
		}
		checkFile(t, out, data)
		checkGone(t, out+partSuffix, out+recordSuffix)
	})
}

// TestGetResumes interrupts a download (its exits break it), then
// runs get again: it resumes the .part with If-Range on the validator
// the record holds, and the file is the item's bytes. When the record's
// validator is not the item's any more, the download starts over.
func TestGetResumes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plain   bool
		changed bool // the record's validator is another version's
		long    bool // the relays send junk past every 206 body
	}{
		{name: "plain", plain: true},
		{name: "encrypted"},
		{name: "plain changed", plain: true, changed: true},
		{name: "encrypted changed", changed: true},
		{name: "plain body longer than its Content-Range", plain: true, long: true},
		{name: "encrypted body longer than its Content-Range", long: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &relayFault{}
			m := startMesh(t, f)
			data := meshtest.RandomBytes(5*proto.E2EChunkSize+123, 2)
			args := []string{writeFile(t, t.TempDir(), "v.bin", data), "--rendezvous", m.URL}
			if tc.plain {
				args = append(args, "--plain")
			}
			s := startSend(t, 1, args...)
			out := filepath.Join(t.TempDir(), "v.bin")
			cutAt := 2*proto.E2ESealedChunkSize + 100
			f.set(cut, cutAt)
			_, stderr, err := get(t, s.links[0], "-o", out, "--retry-wait", "0")
			if err == nil {
				t.Fatalf("interrupted download: got no error; stderr:\n%s", stderr)
			}
			t.Logf("interrupted: %v; stderr:\n%s", err, stderr)
			have := int64(cutAt)
			if !tc.plain {
				have = 2 * proto.E2EChunkSize // whole authenticated chunks only
			}
			checkFile(t, out+partSuffix, data[:have])
			checkGone(t, out)
			rec, err := loadPartRecord(out + recordSuffix)
			if err != nil || rec == nil || rec.ETag == "" {
				t.Fatalf("record: got %+v, %v, want one with the validator", rec, err)
			}
			if tc.changed {
				rec.ETag = `"another-version"`
				if err := rec.save(out + recordSuffix); err != nil {
					t.Fatal(err)
				}
			}

			mode := pass
			if tc.long {
				mode = long
			}
			f.set(mode, 0)
			before, _ := f.seen()
			_, stderr, err = get(t, s.links[0], "-o", out, "--progress", "on")
			if err != nil {
				t.Fatalf("resume: %v; stderr:\n%s", err, stderr)
			}
			checkFile(t, out, data)
			checkGone(t, out+partSuffix, out+recordSuffix)
			ranges, ifRanges := f.seen()
			if len(ranges) == len(before) {
				t.Fatalf("no Range request reached a relay; stderr:\n%s", stderr)
			}
			if got := ifRanges[len(before)]; got != rec.ETag {
				t.Errorf("If-Range of the resume: got %q, want the record's %q", got, rec.ETag)
			}
			switch {
			case tc.changed:
				if !strings.Contains(stderr, "starting over") {
					t.Errorf("stderr does not say the download started over:\n%s", stderr)
				}
			case !strings.Contains(stderr, "resuming "+out+partSuffix):
				t.Errorf("stderr does not say the download resumed:\n%s", stderr)
			}
			if tc.long && !strings.Contains(stderr, "more bytes than it announced") {
				t.Errorf("stderr does not report the relay's long body:\n%s", stderr)
			}
		})
	}
}

// TestGetStdout: -o - writes the item to stdout and creates no file.
func TestGetStdout(t *testing.T) {
	m := startMesh(t, nil)
	data := meshtest.RandomBytes(200<<10, 3)
	s := startSend(t, 1, "--rendezvous", m.URL, writeFile(t, t.TempDir(), "s.bin", data))
	dir := t.TempDir()
	t.Chdir(dir)
	stdout, stderr, err := get(t, "-o", "-", s.links[0])
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr)
	}
	if !bytes.Equal(stdout, data) {
		t.Fatalf("stdout: %d bytes, want the item's %d", len(stdout), len(data))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("directory holds %v, want nothing", entries)
	}
}

// TestGetWaitsForSender: the sender is offline; get waits, says so, and
// completes once the sender is back (same link, through --state).
func TestGetWaitsForSender(t *testing.T) {
	m := startMesh(t, nil)
	data := meshtest.RandomBytes(150<<10, 4)
	file := writeFile(t, t.TempDir(), "w.bin", data)
	state := filepath.Join(t.TempDir(), "state.json")
	s := startSend(t, 1, file, "--state", state, "--rendezvous", m.URL)
	share := s.links[0]
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	waitOffline(t, m, share)

	t.Run("wait 1s gives up", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "w.bin")
		_, stderr, err := get(t, share, "-o", out, "--wait", "1s")
		if err == nil || !strings.Contains(err.Error(), "did not come online within 1s") {
			t.Fatalf("got %v, want the sender offline; stderr:\n%s", err, stderr)
		}
		checkGone(t, out, out+partSuffix, out+recordSuffix)
	})
	t.Run("wait 0", func(t *testing.T) {
		_, _, err := get(t, share, "-o", filepath.Join(t.TempDir(), "w.bin"), "--wait", "0")
		if err == nil || !strings.Contains(err.Error(), "sender is offline") {
			t.Fatalf("got %v, want the sender offline", err)
		}
	})

	out := filepath.Join(t.TempDir(), "w.bin")
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() { done <- runGet(ctx, []string{share, "-o", out}, io.Discard, stderr) }()
	select {
	case <-stderr.appeared("is offline; waiting for it to come online"):
	case err := <-done:
		t.Fatalf("get ended: %v; stderr:\n%s", err, stderr)
	}
	s2 := startSend(t, 1, file, "--state", state, "--rendezvous", m.URL)
	if s2.links[0] != share {
		t.Fatalf("restarted sender's link: got %s, want %s", s2.links[0], share)
	}
	if err := <-done; err != nil {
		t.Fatalf("get: %v; stderr:\n%s", err, stderr)
	}
	checkFile(t, out, data)
	if !strings.Contains(stderr.String(), "the sender is online") {
		t.Errorf("stderr does not say the sender came:\n%s", stderr)
	}
}

// waitOffline waits until the rendezvous sees the item of share offline.
func waitOffline(t *testing.T, m *devmesh.Mesh, share string) {
	t.Helper()
	u := m.URL + "/v1/items/" + itemIDOf(share) + "/meta"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := rendezvoustest.HTTP.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Online bool }
		err = json.NewDecoder(resp.Body).Decode(&meta)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !meta.Online {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the item stayed online after its sender stopped")
		case <-tick.C:
		}
	}
}

// TestPermanentErrorsFailFast: an unknown item and a server that is not
// meshup end get and send at once, with clear words, without retrying.
func TestPermanentErrorsFailFast(t *testing.T) {
	m := startMesh(t, nil)
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><html><body><h1>Welcome to my blog</h1></body></html>")
	}))
	defer html.Close()
	id, _ := proto.NewOwnedItemID()

	t.Run("get unknown item", func(t *testing.T) {
		_, stderr, err := get(t, m.URL+"/i/"+id.String(), "-o", filepath.Join(t.TempDir(), "x"))
		if err == nil || !strings.Contains(err.Error(), "item "+id.String()+" not found") {
			t.Fatalf("got %v, want not found", err)
		}
		if strings.Contains(stderr, "trying again") {
			t.Errorf("stderr shows retries:\n%s", stderr)
		}
	})
	t.Run("get from a web site", func(t *testing.T) {
		_, stderr, err := get(t, html.URL+"/i/"+id.String(), "-o", filepath.Join(t.TempDir(), "x"))
		if err == nil || !strings.Contains(err.Error(), html.URL+" is not a meshup rendezvous") {
			t.Fatalf("got %v, want not meshup", err)
		}
		if strings.Contains(stderr, "trying again") {
			t.Errorf("stderr shows retries:\n%s", stderr)
		}
	})
	t.Run("send to a web site", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var stderr syncBuffer
		err := runSend(ctx, []string{writeFile(t, t.TempDir(), "f", []byte("x")), "--rendezvous", html.URL}, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), html.URL+" is not a meshup rendezvous") || !strings.Contains(err.Error(), "Welcome to my blog") {
			t.Fatalf("got %v, want not meshup, quoting the page", err)
		}
		if strings.Contains(stderr.String(), "trying again") {
			t.Errorf("stderr shows retries:\n%s", stderr.String())
		}
	})
}

// TestDevRefuses: a taken port and --relays 0 are errors, not a panic
// and not a silent default.
func TestDevRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr syncBuffer
	err = runDev(ctx, []string{"--http", ln.Addr().String(), "--log", "error"}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()+" is taken") {
		t.Fatalf("port taken: got %v, want an error naming the address", err)
	}
	err = runDev(ctx, []string{"--relays", "0"}, io.Discard, &stderr)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "at least 1 relay") {
		t.Fatalf("--relays 0: got %v, want a usage error", err)
	}
}

// TestHelp: -h prints the usage on stdout and exits 0, for the binary
// and every command; a wrong command line exits 2.
func TestHelp(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{{"-h"}, {"help"}, {"dev", "-h"}, {"send", "-h"}, {"get", "-h"}, {"get", "URL", "--help"}, {"send", "FILE", "-help"}} {
		var stdout, stderr bytes.Buffer
		err := run(ctx, args, &stdout, &stderr)
		if code := exitCode(err, &stderr); code != 0 || !strings.Contains(stdout.String(), "usage: meshup") {
			t.Errorf("%q: exit %d, stdout %q, want 0 and the usage", args, code, stdout.String())
		}
	}
	for _, args := range [][]string{{}, {"nope"}, {"get"}, {"send"}, {"get", "--bogus", "URL"}, {"dev", "extra"}} {
		var stdout, stderr bytes.Buffer
		if code := exitCode(run(ctx, args, &stdout, &stderr), &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// TestParseArgs: flags anywhere, "--" ends them.
func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantPos  []string
		wantO    string
		wantPlan bool
	}{
		{[]string{"a"}, []string{"a"}, "", false},
		{[]string{"-o", "x", "a"}, []string{"a"}, "x", false},
		{[]string{"a", "-o", "x"}, []string{"a"}, "x", false},
		{[]string{"a", "--plain", "b", "-o=x"}, []string{"a", "b"}, "x", true},
		{[]string{"a", "--", "-o", "x"}, []string{"a", "-o", "x"}, "", false},
		{[]string{"-o", "-", "a"}, []string{"a"}, "-", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		o := fs.String("o", "", "")
		plain := fs.Bool("plain", false, "")
		pos, err := parseArgs(fs, tc.args, io.Discard)
		if err != nil || fmt.Sprint(pos) != fmt.Sprint(tc.wantPos) || *o != tc.wantO || *plain != tc.wantPlan {
			t.Errorf("%q: got %q, o=%q, plain=%v, %v, want %q, %q, %v", tc.args, pos, *o, *plain, err, tc.wantPos, tc.wantO, tc.wantPlan)
		}
	}
}

// TestGetRelayURL: a relay's URL with a read token (the rendezvous's
// redirect) has no description to ask for; get takes the item's size and
// name from its headers, and still writes NAME.part, then NAME. -o DIR
// puts NAME in DIR.
func TestGetRelayURL(t *testing.T) {
	m := startMesh(t, nil)
	data := meshtest.RandomBytes(100<<10, 6)
	s := startSend(t, 1, writeFile(t, t.TempDir(), "r.bin", data), "--plain", "--rendezvous", m.URL)
	resp, err := rendezvoustest.NoRedirect.Head(s.links[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, "t=") {
		t.Fatalf("rendezvous: got %s, Location %q, want a redirect with a token", resp.Status, loc)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	if _, stderr, err := get(t, loc); err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr)
	}
	checkFile(t, filepath.Join(dir, "r.bin"), data)
	checkGone(t, filepath.Join(dir, "r.bin"+partSuffix), filepath.Join(dir, "r.bin"+recordSuffix))

	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := get(t, s.links[0], "-o", sub); err != nil { // -o DIR
		t.Fatalf("%v; stderr:\n%s", err, stderr)
	}
	checkFile(t, filepath.Join(sub, "r.bin"), data)
}
