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
	rdv := swarmMesh(t)
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

	pushed := func(p *proc) func() int {
		return func() int { return strings.Count(p.log.String(), "part pushed") }
	}
	killHalfWay(t, rdv, shareA, size, sum, a, pushed(a), pushed(b))
}

// killHalfWay reads item link with `meshup get -o -`; when half of its
// size bytes have arrived it holds the consumer still until both members
// report parts they pushed (pushedKilled, pushedLeft), then SIGKILLs
// killed and reads the rest. The item must arrive with SHA-256 sum, and
// the member left must have pushed after the kill.
func killHalfWay(t *testing.T, rdv, link string, size int64, sum []byte, killed *proc, pushedKilled, pushedLeft func() int) {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	get := exec.Command(filepath.Join(dir, "meshup"), "get", "-o", "-", link)
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

	h := sha256.New()
	// Half of the item, then the consumer stops reading (the mesh holds
	// still) until both senders have reported parts they pushed.
	if _, err := io.CopyN(h, out, size/2); err != nil {
		t.Fatalf("first half: %v", err)
	}
	waitFor(t, "both senders to push parts", 20*time.Second, func() bool { return pushedKilled() > 0 && pushedLeft() > 0 })
	before := pushedLeft()
	killed.kill()
	if _, err := io.Copy(h, out); err != nil {
		t.Fatalf("second half: %v", err)
	}
	if err := get.Wait(); err != nil {
		t.Fatalf("meshup get: %v", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum) {
		t.Fatalf("SHA-256 %x, want %x", got, sum)
	}
	if n := pushedLeft(); n <= before {
		t.Errorf("the sender left reported %d pushes before the other was killed and %d in all: none after", before, n)
	}
	var st struct {
		Items       int `json:"items"`
		ItemsOnline int `json:"items_online"`
	}
	if err := getJSON(rdv+"/v1/status", &st); err != nil || st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("status: %+v, %v; want the item online", st, err)
	}
	t.Logf("pushes reported: killed sender %d, sender left %d (%d before the kill)", pushedKilled(), pushedLeft(), before)
}

// swarmMesh starts a rendezvous and one relay with 1 MiB parts, so that
// each sender carries several, and returns the rendezvous URL.
func swarmMesh(t *testing.T) string {
	t.Helper()
	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "127.0.0.1:0", "--allow-private-addrs")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	start(t, "relay", nil, "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0",
		"--allow-private-addrs", "--part-size", fmt.Sprint(1<<20))
	waitFor(t, "relay to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 1 })
	return rdv
}

// TestSwarmBrowserLibrary: the browser library (client/web/meshup.js, run
// by Node) joins the item of a `meshup send --swarm --state` with the
// state file's id, owner secret and key; the Go sender is SIGKILLed
// half-way through `meshup get`, and the library's pushes complete the
// item intact. Skipped without node on PATH.
func TestSwarmBrowserLibrary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node on PATH")
	}
	rdv := swarmMesh(t)
	size := int64(12<<20 + 999)
	file, sum := randomFile(t, size)
	state := filepath.Join(t.TempDir(), "swarm.json")
	a, share, _ := sender(t, rdv, file, "--swarm", "--state", state, "--log", "info")

	lib, err := filepath.Abs("../../../client/web/meshup.js")
	if err != nil {
		t.Fatal(err)
	}
	js := &proc{name: "node", log: &lockedBuffer{}, done: make(chan struct{})}
	// --experimental-websocket: Node 20 has no WebSocket global without it.
	js.cmd = exec.Command(node, "--experimental-websocket", "testdata/swarm-join.mjs", lib, rdv, file, state)
	js.cmd.Stdout, js.cmd.Stderr = js.log, js.log
	if err := js.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		js.cmd.Wait()
		close(js.done)
	}()
	t.Cleanup(func() {
		js.kill()
		if t.Failed() {
			t.Logf("--- node swarm-join.mjs output:\n%s", js.log.String())
		}
	})
	waitFor(t, "the library to join", 20*time.Second, func() bool {
		return strings.Contains(js.log.String(), "joined "+share) || strings.Contains(js.log.String(), "refused")
	})
	if !strings.Contains(js.log.String(), "joined "+share) {
		t.Fatalf("the library did not join %s:\n%s", share, js.log.String())
	}
	killHalfWay(t, rdv, share, size, sum, a,
		func() int { return strings.Count(a.log.String(), "part pushed") },
		func() int { return strings.Count(js.log.String(), "served ") })
}
