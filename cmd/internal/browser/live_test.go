package browser

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
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
// reader joining mid-stream starts at a sync record, a WebM file streams
// at its playback speed and plays (with ffmpeg), a wrong key and an end
// without the end mark are worded as such, a Go reader (proto.LiveReader)
// reads the browser's channel and a page the Go publisher's
// (proto.LiveWriter), and live.js passes the live1 golden vectors.
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
	args = append(args, "--harness")
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &liveHarness{rv: rv.URL}
	h.serve(ctx, stdout, stdin, &out)
	err = cmd.Wait()
	t.Logf("live.mjs:\n%s", out.String())
	if err != nil {
		t.Fatalf("live.mjs: %v", err)
	}
	if !strings.Contains(out.String(), "live: ok") {
		t.Fatal("live.mjs did not report success")
	}
}

// liveHarness is the Go side of live.mjs: it reads a channel the browser
// publishes with proto.LiveReader (the Go implementation of the reader
// rules), and publishes one with proto.LiveWriter for a page to read, as
// `meshup live` does (POST /v1/live/ID?enc=live1, then a PUT of the
// records), so that the two implementations are checked against each
// other end to end.
type liveHarness struct {
	rv    string
	start chan struct{}   // lets "live-publish" stream its data
	read  chan liveResult // the result of the read started by "live-read"
	pub   chan error      // the end of the publish started by "live-publish"
	data  []byte          // what "live-publish" streams
}

type liveResult struct {
	sum string
	n   int64
	err error
}

// serve answers live.mjs's "harness: REQUEST" lines on its stdin and
// copies its other output to out. It closes stdin when stdout ends.
func (h *liveHarness) serve(ctx context.Context, stdout io.Reader, stdin io.WriteCloser, out *bytes.Buffer) {
	defer stdin.Close()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line) // as it comes, for a test that hangs
		out.WriteString(line + "\n")
		req, ok := strings.CutPrefix(line, "harness: ")
		if !ok {
			continue
		}
		verb, arg, _ := strings.Cut(req, " ")
		var answer string
		switch verb {
		case "live-read":
			// Answers once the channel's head came: the reader is
			// subscribed, and gets every record from the next one on.
			subscribed := make(chan error, 1)
			h.read = make(chan liveResult, 1)
			go func() { h.read <- readLiveGo(ctx, arg, subscribed) }()
			if err := <-subscribed; err != nil {
				answer = "error " + err.Error()
			} else {
				answer = "subscribed"
			}
		case "live-sum":
			r := <-h.read
			if r.err != nil {
				answer = "error " + r.err.Error()
			} else {
				answer = fmt.Sprintf("%s %d", r.sum, r.n)
			}
		case "live-publish":
			link, sum, err := h.publish(ctx)
			if err != nil {
				answer = "error " + err.Error()
			} else {
				answer = link + " " + sum
			}
		case "live-publish-start":
			h.start <- struct{}{}
			answer = "started"
		case "live-published":
			// The PUT ended well, and the Go reader got every byte.
			r := <-h.read
			if err := <-h.pub; err != nil {
				answer = "error " + err.Error()
			} else if s := sha256.Sum256(h.data); r.err != nil || r.sum != hex.EncodeToString(s[:]) {
				answer = fmt.Sprintf("error the Go reader got %d bytes, sum %s: %v", r.n, r.sum, r.err)
			} else {
				answer = "ok"
			}
		default:
			answer = "error unknown request"
		}
		fmt.Fprintln(stdin, strings.ReplaceAll(answer, "\n", " "))
	}
}

// readLiveGo reads the channel of link (RDV/l/ID#k=KEY) to its end with
// proto.LiveReader: the SHA-256 and size of its bytes. It reports on
// subscribed once the head came (or the read failed before).
func readLiveGo(ctx context.Context, link string, subscribed chan<- error) (res liveResult) {
	defer func() {
		select {
		case subscribed <- res.err:
		default:
		}
	}()
	u, err := url.Parse(link)
	if err != nil {
		return liveResult{err: err}
	}
	id, err := proto.ParseItemID(path.Base(u.Path))
	if err != nil {
		return liveResult{err: err}
	}
	key, found, err := proto.ParseE2EFragment(u.Fragment)
	if err != nil || !found {
		return liveResult{err: fmt.Errorf("no key in %s: %v", link, err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/v1/live/"+id.String(), nil)
	if err != nil {
		return liveResult{err: err}
	}
	resp, err := rendezvoustest.HTTP.Do(req) // follows the rendezvous's 307 to a relay
	if err != nil {
		return liveResult{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return liveResult{err: fmt.Errorf("GET %s: %s", req.URL, resp.Status)}
	}
	if ct := resp.Header.Get("Content-Type"); ct != proto.LiveContentType {
		return liveResult{err: fmt.Errorf("Content-Type %q, want %q", ct, proto.LiveContentType)}
	}
	r := proto.NewLiveReader(resp.Body, key, id)
	if _, err := r.Head(); err != nil {
		return liveResult{err: fmt.Errorf("channel head: %w", err)}
	}
	subscribed <- nil
	hash := sha256.New()
	n, err := io.Copy(hash, r)
	if err != nil {
		return liveResult{n: n, err: fmt.Errorf("after %d bytes: %w", n, err)}
	}
	return liveResult{sum: hex.EncodeToString(hash.Sum(nil)), n: n}
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

// liveGoSize is the size of what the Go publisher streams: several
// records, the last one short.
const liveGoSize = (1 << 20) + 4321

// publish publishes a sealed channel from Go as `meshup live` does: POST
// /v1/live/ID?enc=live1 (bearer: the secret), then a PUT of the records
// (proto.LiveWriter) to the push URL. It answers the link and the SHA-256
// of the data; the head goes at once, the data when "live-publish-start"
// comes, so that a page can open the link first.
func (h *liveHarness) publish(ctx context.Context) (link, sum string, err error) {
	h.data = make([]byte, liveGoSize)
	mrand.NewChaCha8([32]byte{'l', 'i', 'v', 'e', 'g', 'o'}).Read(h.data)
	id, secret := proto.NewLiveSecret()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.rv+"/v1/live/"+id.String()+"?enc="+proto.LiveEncVersion, nil)
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := rendezvoustest.HTTP.Do(req)
	if err != nil {
		return "", "", err
	}
	var entry proto.LiveEntry
	err = json.NewDecoder(resp.Body).Decode(&entry)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("POST /v1/live: %s %v", resp.Status, err)
	}
	key := proto.NewE2EKey()
	pr, pw := io.Pipe()
	w := proto.NewLiveWriter(pw, key, id)
	h.start = make(chan struct{})
	h.pub = make(chan error, 1)
	go func() {
		err := w.Head(proto.LiveMeta{Type: "application/octet-stream", Name: "from-go.bin"}, nil)
		if err == nil {
			<-h.start
			for off := 0; off < len(h.data) && err == nil; off += 100 << 10 {
				_, err = w.Write(h.data[off:min(off+100<<10, len(h.data))])
			}
		}
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
	}()
	preq, err := http.NewRequestWithContext(ctx, http.MethodPut, entry.PushURL, pr)
	if err != nil {
		return "", "", err
	}
	preq.ContentLength = -1
	preq.Header.Set("Authorization", "Bearer "+secret)
	preq.Header.Set("Content-Type", proto.LiveContentType)
	go func() {
		resp, err := rendezvoustest.HTTP.Do(preq)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("PUT %s: %s", entry.PushURL, resp.Status)
			}
		}
		h.pub <- err
	}()
	s := sha256.Sum256(h.data)
	link = entry.Share + "#" + key.Fragment()
	// The link is usable once the relay has the channel: a Go reader
	// that got its head says so (it asks again while the relay answers
	// 404, before the PUT reached it). It reads on, as one more check.
	// Bounded by ctx, not by a count of tries: a loaded machine may take
	// a while to carry the PUT to the relay.
	h.read = make(chan liveResult, 1)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		subscribed := make(chan error, 1)
		go func() { h.read <- readLiveGo(ctx, link, subscribed) }()
		err := <-subscribed
		if err == nil {
			break
		}
		<-h.read
		if !strings.Contains(err.Error(), "404") {
			return "", "", err
		}
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("the relay never had the channel: %w (%v)", err, ctx.Err())
		case <-poll.C:
		}
	}
	return link, hex.EncodeToString(s[:]), nil
}
