package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSwarmSenderLeaves is the swarm acceptance test of issue 10 with real
// processes: two `meshup send --swarm --state FILE` of the same file share
// the state file (the first writes it, the second joins the item it
// records); `meshup get` reads the item; when half of it has arrived, one
// sender is killed with SIGKILL. The item must arrive intact, both senders
// must have pushed parts (their "part pushed" log lines), and the one left
// must have pushed parts after the other died.
func TestSwarmSenderLeaves(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "127.0.0.1:0", "--allow-private-addrs")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	// Small parts, so that each sender carries several.
	start(t, "relay", nil, "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0",
		"--allow-private-addrs", "--part-size", fmt.Sprint(1<<20))
	waitFor(t, "relay to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 1 })

	size := int64(24<<20 + 4321)
	file, sum := randomFile(t, size)
	state := filepath.Join(t.TempDir(), "swarm.json")
	flags := []string{"--swarm", "--state", state, "--log", "info"}
	a, shareA, _ := sender(t, rdv, file, flags...)
	b, shareB, _ := sender(t, rdv, file, flags...)
	if shareA != shareB || !strings.Contains(shareA, "#k=") {
		t.Fatalf("senders' links: %q and %q, want one encrypted link", shareA, shareB)
	}
	// stderr is copied from a pipe: it may trail stdout.
	waitFor(t, "the first sender to start the item and the second to join it", 20*time.Second, func() bool {
		return strings.Contains(a.log.String(), "started swarm item") && strings.Contains(b.log.String(), "joined swarm item")
	})

	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	get := exec.Command(filepath.Join(dir, "meshup"), "get", "-o", "-", shareA)
	out, err := get.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var getLog lockedBuffer
	get.Stderr = &getLog
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		get.Process.Kill()
		get.Wait()
		if t.Failed() {
			t.Logf("--- meshup get stderr:\n%s", getLog.String())
		}
	})

	pushed := func(p *proc) int { return strings.Count(p.log.String(), "part pushed") }
	h := sha256.New()
	// Half of the item, then the consumer stops reading (the mesh holds
	// still) until both senders have logged parts they pushed.
	if _, err := io.CopyN(h, out, size/2); err != nil {
		t.Fatalf("first half: %v", err)
	}
	waitFor(t, "both senders to push parts", 20*time.Second, func() bool { return pushed(a) > 0 && pushed(b) > 0 })
	bBefore := pushed(b)
	t.Logf("killing the first sender")
	a.kill()
	if _, err := io.Copy(h, out); err != nil {
		t.Fatalf("second half: %v", err)
	}
	if err := get.Wait(); err != nil {
		t.Fatalf("meshup get: %v", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum) {
		t.Fatalf("SHA-256 %x, want %x", got, sum)
	}
	if n := pushed(b); n <= bBefore {
		t.Errorf("the sender left pushed %d parts before the other was killed and %d in all: none after", bBefore, n)
	}
	var st struct {
		Items       int `json:"items"`
		ItemsOnline int `json:"items_online"`
	}
	if err := getJSON(rdv+"/v1/status", &st); err != nil || st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("status: %+v, %v; want the item online", st, err)
	}
	t.Logf("parts pushed: killed sender %d, sender left %d (%d before the kill)", pushed(a), pushed(b), bBefore)
}
