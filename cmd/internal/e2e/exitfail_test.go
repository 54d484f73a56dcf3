package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExitRelayKilled is the acceptance test of issue 10 for an exit
// relay that dies: a rendezvous, two relays, `meshup send` and `meshup
// get` as real processes; once some bytes have arrived, the relay serving
// the download is killed with SIGKILL. `meshup get` says which exit
// failed, resumes with a Range request through the other one (the
// rendezvous is asked to avoid the dead one) and the output is the item,
// byte for byte.
//
// No timing: the download is held still while the exit is killed. To
// stdout, the test reads the pipe and stops reading (the relay's body
// backs up behind it); to a file, `meshup get` is stopped with SIGSTOP
// and continued after the kill. The item (64 MiB) is larger than what
// the buffers on the way hold, so the kill always lands mid-transfer, and
// the test checks that it did (the "failed at byte" line).
func TestExitRelayKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	const (
		size   = 64<<20 + 4321
		killAt = 4 << 20 // bytes out before the exit is killed
	)
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	meshup := filepath.Join(dir, "meshup")
	file, sum := randomFile(t, size)

	for _, tt := range []struct {
		name   string
		plain  bool
		stdout bool
	}{
		{"encrypted to stdout", false, true},
		{"encrypted to a file", false, false},
		{"plain to stdout", true, true},
		{"plain to a file", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rdv, relays := startExitMesh(t)
			var flags []string
			if tt.plain {
				flags = []string{"--plain", "--volunteers"}
			}
			_, share, _ := sender(t, rdv, file, flags...)

			args := []string{"get"}
			out := filepath.Join(t.TempDir(), "out")
			if tt.stdout {
				args = append(args, "-o", "-")
			} else {
				args = append(args, "-o", out)
			}
			cmd := exec.Command(meshup, append(args, share)...)
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			var stdout io.ReadCloser
			if tt.stdout {
				if stdout, err = cmd.StdoutPipe(); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			t.Cleanup(func() {
				cmd.Process.Kill()
				if t.Failed() {
					t.Logf("--- meshup get stderr:\n%s", stderr.String())
				}
			})

			h := sha256.New()
			if tt.stdout {
				if _, err := io.CopyN(h, stdout, killAt); err != nil {
					t.Fatalf("read the first %d bytes of meshup get: %v\n%s", killAt, err, stderr.String())
				}
			} else {
				waitFor(t, "meshup get to write some bytes", 60*time.Second, func() bool {
					fi, err := os.Stat(out + ".part") // meshup get renames it to out at the end
					return err == nil && fi.Size() >= killAt
				})
				if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
			}

			exit := exitOf(t, relays)
			relays[exit].proc.kill()
			t.Logf("killed exit relay %s", exit)
			killed := time.Now()

			if tt.stdout {
				if _, err := io.Copy(h, stdout); err != nil {
					t.Fatalf("read meshup get: %v", err)
				}
			} else if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			go func() { exited <- cmd.Wait() }()
			if err := <-exited; err != nil {
				t.Fatalf("meshup get: %v\n%s", err, stderr.String())
			}
			if tt.stdout {
				if got := h.Sum(nil); !bytes.Equal(got, sum) {
					t.Fatalf("stdout SHA-256 %x, want %x", got, sum)
				}
			} else {
				checkFile(t, out, sum)
			}
			log := stderr.String()
			if !strings.Contains(log, "exit relay "+exit+" failed at byte") || !strings.Contains(log, "resuming through another relay") {
				t.Errorf("meshup get did not say that exit relay %s failed and it resumed:\n%s", exit, log)
			}
			for id, r := range relays {
				if id == exit {
					continue
				}
				if st := relayStats(t, r.url); st.Requests == 0 || st.BytesOut == 0 {
					t.Errorf("relay %s (not killed): %d item requests, %d bytes out; want the resumed download", id, st.Requests, st.BytesOut)
				}
			}
			t.Logf("done %s after the kill (%s in all)", time.Since(killed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			t.Logf("meshup get stderr:\n%s", log)
		})
	}
}

type exitRelay struct {
	proc *proc
	url  string
}

// startExitMesh starts a rendezvous and two relays and returns the
// rendezvous URL and the relays by id.
func startExitMesh(t *testing.T) (string, map[string]*exitRelay) {
	t.Helper()
	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "127.0.0.1:0",
		"--allow-private-addrs", "--trust-all-relays")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	relays := map[string]*exitRelay{}
	for i := range 2 {
		p := start(t, "relay", nil, "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
		waitFor(t, fmt.Sprintf("relay %d to register", i), 20*time.Second, func() bool { return len(liveRelays(rdv)) == i+1 })
		for id, u := range liveRelays(rdv) {
			if relays[id] == nil {
				relays[id] = &exitRelay{proc: p, url: u}
			}
		}
	}
	return rdv, relays
}

type relayStatsJSON struct {
	Requests int64 `json:"requests"`
	BytesOut int64 `json:"bytes_out"`
}

func relayStats(t *testing.T, url string) relayStatsJSON {
	t.Helper()
	var st struct {
		Stats relayStatsJSON `json:"stats"`
	}
	if err := getJSON(url+"/v1/status", &st); err != nil {
		t.Fatalf("relay status: %v", err)
	}
	return st.Stats
}

// exitOf returns the id of the relay that serves the download: the one
// that was asked for the item.
func exitOf(t *testing.T, relays map[string]*exitRelay) string {
	t.Helper()
	var exits []string
	for id, r := range relays {
		if relayStats(t, r.url).Requests > 0 {
			exits = append(exits, id)
		}
	}
	if len(exits) != 1 {
		t.Fatalf("relays asked for the item: %q, want one", exits)
	}
	return exits[0]
}
