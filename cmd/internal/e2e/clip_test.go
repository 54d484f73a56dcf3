package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClipProcesses is the acceptance test of issue 12 for clips with the
// real binaries: a rendezvous and two relays; `meshup send --clip` of a
// plaintext and of an encrypted file returns once both relays hold them
// (the sender is gone); both are read intact, with Ranges, from either
// holder; then one relay is SIGKILLed and both are read intact from the
// other; no relay wrote anything to disk.
func TestClipProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	meshup := filepath.Join(dir, "meshup")
	rdv, relays := startExitMesh(t)
	before := map[string]int64{}
	for id, r := range relays {
		before[id] = writeBytes(t, r.proc.pid())
	}
	file, sum := randomFile(t, 5<<20+77)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	send := func(flags ...string) (share, download string) {
		t.Helper()
		share, download, stderr := sendClip(t, meshup, rdv, file, flags...)
		if !strings.Contains(stderr, "clip stored on 2 relay(s); readable until") {
			t.Errorf("meshup send --clip %v: stderr %q, want it stored on 2 relays", flags, stderr)
		}
		return share, download
	}
	_, plain := send("--plain", "--volunteers")
	secret, _ := send()

	ranges := []struct {
		h        string
		from, to int
	}{
		{"", 0, len(data)},
		{"bytes=0-0", 0, 1},
		{"bytes=1048570-3145727", 1048570, 3145728},
		{"bytes=-100", len(data) - 100, len(data)},
	}
	readAll := func(url string) {
		t.Helper()
		for _, r := range ranges {
			resp := get(t, url, r.h)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(body, data[r.from:r.to]) {
				t.Fatalf("GET %s Range %q: %d bytes, %v; want bytes %d-%d intact", url, r.h, len(body), err, r.from, r.to)
			}
			if resp.Header.Get("Expires") == "" {
				t.Errorf("GET %s: no Expires header", url)
			}
		}
	}
	getSecret := func() {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out")
		if b, err := exec.Command(meshup, "get", "-o", out, secret).CombinedOutput(); err != nil {
			t.Fatalf("meshup get of the encrypted clip: %v\n%s", err, b)
		}
		checkFile(t, out, sum)
	}
	for id := range relays { // each holder in turn: the other one avoided
		for other := range relays {
			if other != id {
				readAll(plain + "?avoid=" + other)
			}
		}
	}
	getSecret()

	// One holder dies.
	var dead string
	for id, r := range relays {
		dead = id
		r.proc.kill()
		break
	}
	waitFor(t, "the rendezvous to drop the killed relay", 30*time.Second, func() bool {
		_, ok := liveRelays(rdv)[dead]
		return !ok
	})
	readAll(plain)
	getSecret()
	for id, r := range relays {
		if id == dead {
			continue
		}
		if after := writeBytes(t, r.proc.pid()); after != before[id] {
			t.Errorf("relay %s wrote %d bytes to disk, want 0", id, after-before[id])
		}
		var st struct {
			Stats struct {
				Uploads struct {
					Held int `json:"held"`
				} `json:"uploads"`
			} `json:"stats"`
		}
		if err := getJSON(r.url+"/v1/status", &st); err != nil || st.Stats.Uploads.Held != 2 {
			t.Errorf("relay %s: holds %d items (%v), want the 2 clips", id, st.Stats.Uploads.Held, err)
		}
	}
	resp, err := http.Get(fmt.Sprintf("%s?avoid=%s", plain, dead))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET avoiding the dead relay: %s, want 200", resp.Status)
	}
}

// TestClipRendezvousRestart: clips survive a restart of the rendezvous
// with their senders gone. `meshup send --clip` of a plaintext and of an
// encrypted file returns once both relays hold them (and the holders have
// the encrypted clip's sealed metadata); the rendezvous process is killed
// and started again on the same port with the same --identity (its token
// key), knowing nothing; the relays register again and re-announce the
// clips, from which it rebuilds them: the plaintext one is read intact
// with Ranges, the encrypted one with `meshup get`, name included.
func TestClipRendezvousRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	meshup := filepath.Join(dir, "meshup")
	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	identity := filepath.Join(t.TempDir(), "rendezvous.key")
	startRdv := func() *proc {
		p := start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
			"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "127.0.0.1:0",
			"--allow-private-addrs", "--trust-all-relays", "--identity", identity)
		waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
		return p
	}
	rp := startRdv()
	var relayURLs []string
	for i := range 2 {
		start(t, "relay", nil, "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
		waitFor(t, fmt.Sprintf("relay %d to register", i), 20*time.Second, func() bool { return len(liveRelays(rdv)) == i+1 })
	}
	for _, u := range liveRelays(rdv) {
		relayURLs = append(relayURLs, u)
	}

	file, sum := randomFile(t, 3<<20+11)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	send := func(flags ...string) (share, download string) {
		t.Helper()
		share, download, _ = sendClip(t, meshup, rdv, file, flags...)
		return share, download
	}
	_, plain := send("--plain", "--volunteers")
	secret, _ := send()
	type clipStats struct {
		Stats struct {
			Clips struct {
				Held   int `json:"held"`
				Sealed int `json:"sealed"`
			} `json:"clips"`
		} `json:"stats"`
	}
	// send --clip returned: a holder keeps the sealed metadata already.
	sealed := 0
	for _, u := range relayURLs {
		var st clipStats
		if err := getJSON(u+"/v1/status", &st); err != nil {
			t.Fatal(err)
		}
		sealed += st.Stats.Clips.Sealed
	}
	if sealed < 1 {
		t.Fatalf("after send --clip returned: %d relays keep the sealed metadata, want at least 1", sealed)
	}
	for _, u := range relayURLs {
		waitFor(t, "relay "+u+" to hold both clips", 20*time.Second, func() bool {
			var st clipStats
			return getJSON(u+"/v1/status", &st) == nil && st.Stats.Clips.Held == 2
		})
	}

	etagOf := func() string {
		t.Helper()
		resp := get(t, plain, "bytes=0-0")
		resp.Body.Close()
		return resp.Header.Get("ETag")
	}
	etag := etagOf()

	// The rendezvous dies and comes back knowing nothing.
	rp.kill()
	startRdv()
	waitFor(t, "both relays to register again", 60*time.Second, func() bool { return len(liveRelays(rdv)) == 2 })
	for _, link := range []string{plain, secret} {
		id := link[strings.LastIndex(link, "/")+1:]
		if i := strings.IndexByte(id, '#'); i >= 0 {
			id = id[:i]
		}
		waitFor(t, "the clip "+id+" rebuilt with both holders", 30*time.Second, func() bool {
			var m struct {
				Holders int `json:"holders"`
			}
			return getJSON(rdv+"/v1/items/"+id+"/meta", &m) == nil && m.Holders == 2
		})
	}
	for _, r := range []struct {
		h        string
		from, to int
	}{
		{"", 0, len(data)},
		{"bytes=1048570-2097151", 1048570, 2097152},
		{"bytes=-100", len(data) - 100, len(data)},
	} {
		resp := get(t, plain, r.h)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(body, data[r.from:r.to]) {
			t.Fatalf("GET %s Range %q after the restart: %d bytes, %v; want bytes %d-%d intact", plain, r.h, len(body), err, r.from, r.to)
		}
	}
	if got := etagOf(); got != etag || etag == "" {
		t.Errorf("ETag after the restart: got %q, want %q as before (If-Range of a reader in progress still matches)", got, etag)
	}
	outDir := t.TempDir()
	cmd := exec.Command(meshup, "get", secret)
	cmd.Dir = outDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("meshup get of the encrypted clip after the restart: %v\n%s", err, b)
	}
	checkFile(t, filepath.Join(outDir, filepath.Base(file)), sum) // the sealed name opened
}

// sendClip runs `meshup send --clip` of file with flags and returns the
// share and download URLs it printed, and its stderr.
func sendClip(t *testing.T, meshup, rdv, file string, flags ...string) (share, download, stderr string) {
	t.Helper()
	cmd := exec.Command(meshup, append(append([]string{"send", "--rendezvous", rdv, "--clip"}, flags...), file)...)
	var stdout, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshup send --clip %v: %v\n%s", flags, err, errb.String())
	}
	f := strings.Fields(stdout.String())
	if len(f) != 2 {
		t.Fatalf("meshup send --clip: stdout %q, want two URLs", stdout.String())
	}
	return f[0], f[1], errb.String()
}
