package browser

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// liveVectors is the live1 golden vectors file, relative to client/web/test.
const liveVectors = "../../../proto/testdata/live1-vectors.json"

// TestBrowserLive runs client/web/test/live.mjs in headless Chromium with
// a fake camera against a rendezvous and two relays that are both
// volunteers (open admission, no admission token), so that only sealed
// (live1) channels may use them: page A streams a file and then the
// camera to channel links, pages B and C receive, A stops, B and C end
// cleanly; the saved file is byte-exact (SHA-256), the videos play, a
// reader joining mid-stream starts at a sync record, a wrong key is
// worded as such, and live.js passes the live1 golden vectors.
//
//	go test -count=1 -run TestBrowserLive ./cmd/internal/browser
func TestBrowserLive(t *testing.T) {
	testDir, node := needBrowser(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// An admission key that signs no relay: every relay is a volunteer.
	rv := rendezvoustest.Start(t, rendezvous.Config{Admission: rendezvous.AdmissionOpen, AdmissionKey: pub, DeadAfter: time.Minute})
	// Readers may lag 8 MiB behind the live edge (default 512 KiB), more
	// than the test file: on a loaded machine a page stalls for longer
	// than 512 KiB take at the test's pace, and a cut-off reader is the
	// contract of live, not what this test looks at.
	for range 2 {
		relaytest.Start(t, rv.URL, relay.Config{Live: relay.LiveConfig{Buffer: 8 << 20, Queue: 8 << 20}})
	}
	var st struct {
		Relays []struct {
			ID    string `json:"id"`
			Class string `json:"class"`
		} `json:"relays"`
	}
	rendezvoustest.GetJSON(t, rv.URL+"/v1/status", &st)
	if len(st.Relays) != 2 {
		t.Fatalf("relays: got %d, want 2", len(st.Relays))
	}
	for _, r := range st.Relays {
		if r.Class != rendezvous.ClassVolunteer {
			t.Fatalf("relay %s is of class %q, want %q", r.ID, r.Class, rendezvous.ClassVolunteer)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"live.mjs", rv.URL}
	if _, err := os.Stat(filepath.Join(testDir, liveVectors)); err == nil {
		args = append(args, "--vectors", liveVectors)
	}
	if dir := os.Getenv("MESHUP_SCREENSHOTS"); dir != "" {
		abs, err := filepath.Abs(filepath.Join("../../..", dir))
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--screenshots", abs)
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("live.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("live.mjs: %v", err)
	}
	if !strings.Contains(string(out), "live: ok") {
		t.Fatal("live.mjs did not report success")
	}
}

// TestLiveUnit runs client/web/test/liveunit.mjs in Node: the WebM
// walker finds exactly the Clusters of a synthetic WebM whose frame data
// holds a false Cluster id, fed whole, byte by byte and in random pieces
// (and of an ffmpeg WebM when ffmpeg is here); live.js seals and reads
// records by the reader rules; and it passes the live1 golden vectors.
//
//	go test -count=1 -run TestLiveUnit ./cmd/internal/browser
func TestLiveUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("MESHUP_REQUIRE_BROWSER") == "1" {
			t.Fatal("node is not installed")
		}
		t.Skip("node is not installed")
	}
	testDir, err := filepath.Abs("../../../client/web/test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "liveunit.mjs", "--vectors", liveVectors)
	cmd.Dir = testDir
	out, err := cmd.CombinedOutput()
	t.Logf("liveunit.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("liveunit.mjs: %v", err)
	}
	if !strings.Contains(string(out), "liveunit: ok") {
		t.Fatal("liveunit.mjs did not report success")
	}
}
