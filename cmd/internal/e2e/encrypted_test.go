package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
)

// TestProcessesEncrypted runs a rendezvous, a relay, `meshup send` (which
// encrypts by default) and `meshup get` as real processes: get decrypts
// to a file and to stdout, resumes a partial file, refuses a link without
// its key; a plain HTTP GET of the item gets ciphertext. MESHUP_E2E_SIZE
// does not apply; the item is 20 MiB and a bit.
func TestProcessesEncrypted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "127.0.0.1:0", "--allow-private-addrs")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	start(t, "relay", nil, "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
	waitFor(t, "relay to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 1 })

	size := int64(20<<20 + 12345)
	file, sum := randomFile(t, size)
	_, share, download := sender(t, rdv, file)
	if !strings.Contains(share, "#k=") || !strings.Contains(download, "#k=") {
		t.Fatalf("links without a key: %q %q", share, download)
	}
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	meshup := filepath.Join(dir, "meshup")
	out := t.TempDir()

	t.Run("get to a file", func(t *testing.T) {
		o := filepath.Join(out, "a")
		if b, err := exec.Command(meshup, "get", "-o", o, share).CombinedOutput(); err != nil {
			t.Fatalf("meshup get: %v\n%s", err, b)
		}
		checkFile(t, o, sum)
	})
	t.Run("get with the item's name", func(t *testing.T) {
		cmd := exec.Command(meshup, "get", share)
		cmd.Dir = out
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("meshup get: %v\n%s", err, b)
		}
		checkFile(t, filepath.Join(out, "item.bin"), sum)
	})
	t.Run("get to stdout", func(t *testing.T) {
		cmd := exec.Command(meshup, "get", "-o", "-", download)
		h := sha256.New()
		cmd.Stdout = h
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("meshup get -o -: %v\n%s", err, stderr.String())
		}
		if got := h.Sum(nil); !bytes.Equal(got, sum) {
			t.Fatalf("stdout SHA-256 %x, want %x", got, sum)
		}
	})
	t.Run("resume", func(t *testing.T) {
		o := filepath.Join(out, "resumed")
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		// What an interrupted `meshup get -o o` leaves: o.part with the
		// bytes so far, o.part.meshup with the item and its validator
		// (the format is documented in cmd/meshup/part.go).
		if err := os.WriteFile(o+".part", src[:7<<20+999], 0o644); err != nil {
			t.Fatal(err)
		}
		noKey, _, _ := strings.Cut(download, "#")
		head, err := http.Head(noKey)
		if err != nil {
			t.Fatal(err)
		}
		head.Body.Close()
		id := noKey[strings.LastIndex(noKey, "/")+1:]
		rec := fmt.Sprintf(`{"version": 1, "item": %q, "size": %d, "encrypted": true, "etag": %q}`, id, len(src), head.Header.Get("ETag"))
		if err := os.WriteFile(o+".part.meshup", []byte(rec), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := exec.Command(meshup, "get", "-o", o, share).CombinedOutput()
		if err != nil {
			t.Fatalf("meshup get: %v\n%s", err, b)
		}
		if !strings.Contains(string(b), "resuming") {
			t.Errorf("meshup get did not say it resumed:\n%s", b)
		}
		checkFile(t, o, sum)
	})
	t.Run("no key", func(t *testing.T) {
		o := filepath.Join(out, "nokey")
		noKey, _, _ := strings.Cut(share, "#")
		b, err := exec.Command(meshup, "get", "-o", o, noKey).CombinedOutput()
		if err == nil || !strings.Contains(string(b), "no key") {
			t.Fatalf("meshup get without key: %v\n%s", err, b)
		}
		if _, err := os.Stat(o); !os.IsNotExist(err) {
			t.Error("meshup get without key created the output file")
		}
	})
	t.Run("curl gets ciphertext", func(t *testing.T) {
		noKey, _, _ := strings.Cut(download, "#")
		resp := get(t, noKey, "")
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		cs, _ := proto.E2ECipherSize(size)
		if err != nil || n != cs || resp.Header.Get("Content-Type") != "application/octet-stream" || strings.Contains(resp.Header.Get("Content-Disposition"), "item.bin") {
			t.Fatalf("plain GET: %d bytes, %v, type %q, disposition %q; want %d bytes of ciphertext, no name",
				n, err, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"), cs)
		}
	})
}

func checkFile(t *testing.T, path string, sum []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum) {
		t.Fatalf("%s: SHA-256 %x, want %x", path, got, sum)
	}
}
