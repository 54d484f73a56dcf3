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
		cmd := exec.Command(meshup, append(append([]string{"send", "--rendezvous", rdv, "--clip"}, flags...), file)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("meshup send --clip %v: %v\n%s", flags, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "clip stored on 2 relay(s); readable until") {
			t.Errorf("meshup send --clip %v: stderr %q, want it stored on 2 relays", flags, stderr.String())
		}
		f := strings.Fields(stdout.String())
		if len(f) != 2 {
			t.Fatalf("meshup send --clip: stdout %q, want two URLs", stdout.String())
		}
		return f[0], f[1]
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
