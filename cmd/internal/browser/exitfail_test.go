package browser

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// gatedReader is an item's bytes that the publisher may read below gate
// only, until open is called: the download cannot run past gate, so the
// exit relay is killed mid-transfer whatever the speeds (no timing).
type gatedReader struct {
	data   []byte
	gate   int64
	opened chan struct{}
	hit    chan struct{} // closed at the first read past gate
	once   sync.Once
}

func (g *gatedReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > g.gate {
		g.once.Do(func() { close(g.hit) })
		<-g.opened
	}
	if off >= int64(len(g.data)) {
		return 0, io.EOF
	}
	n := copy(p, g.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestBrowserExitRelayFails downloads an encrypted item in Chromium
// through the web app's Service Worker and kills the exit relay (its HTTP
// server and connections close, as when the process dies) once it has
// served some bytes: the worker resumes with a Range request through the
// other relay (asking the rendezvous to avoid the dead one), the page
// shows a pause ("resuming", naming the relay), never an error, and the
// file arrives intact (SHA-256). The publisher (a Go client) cannot read
// past 16 MiB of the 32 MiB item until the exit is dead, so the kill
// lands mid-transfer without any timing.
func TestBrowserExitRelayFails(t *testing.T) {
	testDir, node := needBrowser(t)

	t.Run("service worker, encrypted", func(t *testing.T) { exitFails(t, node, testDir, "worker") })
	// Without a Service Worker (blocked) the page fetches a plaintext
	// item of up to 64 MiB into memory, with the same failover.
	t.Run("in memory, plaintext", func(t *testing.T) { exitFails(t, node, testDir, "memory") })
}

// exitFails runs exitfail.mjs in mode (worker or memory) against a mesh
// of its own and kills the exit relay of its download.
func exitFails(t *testing.T, node, testDir, mode string) {
	const (
		size   = 32<<20 + 777
		gate   = 16 << 20
		killAt = 4 << 20 // bytes the exit has served before it is killed
	)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The browser reaches the rendezvous through a proxy that notes the
	// avoid parameter of item requests.
	var (
		backend  atomic.Pointer[url.URL]
		avoidMu  sync.Mutex
		avoided  []string
		itemPath = regexp.MustCompile(`^/v1/items/[a-z2-7]{26}$`)
	)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(backend.Load())
		r.Out.Host = r.In.Host
	}}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.URL.Query().Get("avoid"); a != "" && itemPath.MatchString(r.URL.Path) {
			avoidMu.Lock()
			avoided = append(avoided, a)
			avoidMu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	rv := rendezvoustest.Start(t, rendezvous.Config{SigningKey: key, DeadAfter: time.Minute, PublicURL: front.URL})
	u, _ := url.Parse(rv.URL)
	backend.Store(u)
	relays := map[string]*relaytest.Server{}
	for range 2 {
		r := relaytest.Start(t, rv.URL, relay.Config{})
		relays[r.ID()] = r
	}
	pub, err := client.New(client.Config{Rendezvous: rv.URL, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	data := make([]byte, size)
	mrand.NewChaCha8([32]byte{'e', 'x', 'i', 't'}).Read(data)
	sum := sha256.Sum256(data)
	src := &gatedReader{data: data, gate: gate, opened: make(chan struct{}), hit: make(chan struct{})}
	var openOnce sync.Once
	release := func() { openOnce.Do(func() { close(src.opened) }) }
	t.Cleanup(release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	plain := mode == "memory"
	it, err := pub.Publish(ctx, client.Source{Name: "exit-fail.bin", Size: size, Reader: src, Plain: plain, Volunteers: plain})
	if err != nil {
		t.Fatal(err)
	}

	// Kill the exit once it has served killAt bytes and the publisher is
	// held at the gate, then let the publisher go on.
	killed := make(chan string, 1)
	go func() {
		defer release()
		select {
		case <-src.hit:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			for id, r := range relays {
				if st := r.Server.Stats(); st.Requests > 0 && st.BytesOut >= killAt {
					r.Close()
					t.Logf("killed exit relay %s after %d bytes out", id, st.BytesOut)
					killed <- id
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	cmd := exec.CommandContext(ctx, node, "exitfail.mjs", mode, it.ShareURL, hex.EncodeToString(sum[:]), fmt.Sprint(size))
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exitfail.mjs asks "harness: killed" once its download is done: the
	// answer is the id of the relay killed, to find in the page's status.
	var out bytes.Buffer
	var killedID string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(&out, line)
		t.Log(line)
		if line == "harness: killed" {
			select {
			case id := <-killed:
				killedID = id
				fmt.Fprintln(stdin, id)
			case <-ctx.Done():
				fmt.Fprintln(stdin, "none")
			}
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exitfail.mjs: %v", err)
	}
	if !strings.Contains(out.String(), "exitfail: ok") {
		t.Fatalf("exitfail.mjs did not report success")
	}
	avoidMu.Lock()
	t.Logf("avoid parameters of item requests: %q", avoided)
	if len(avoided) == 0 || !strings.Contains(avoided[0], killedID) {
		t.Errorf("avoid parameters of item requests: got %q, want the killed exit %s", avoided, killedID)
	}
	avoidMu.Unlock()
	for id, r := range relays {
		if st := r.Server.Stats(); st.Requests == 0 || st.BytesOut == 0 {
			t.Errorf("relay %s: %d item requests, %d bytes out; want both relays to have served the download", id, st.Requests, st.BytesOut)
		}
	}
}
