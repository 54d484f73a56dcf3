package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// failoverSize is big enough that the exit is killed long before the last
// byte: the relays hold one window (256 KiB) ahead, the sockets a few MiB.
const failoverSize = 24 << 20

// killAt is how far a download goes before its exit is killed.
const killAt = 2 << 20

// mesh2 is a rendezvous with two relays, by id.
type mesh2 struct {
	rv     *rendezvoustest.Server
	relays map[string]*relaytest.Server
}

func newMesh2(t *testing.T) *mesh2 {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh2{rv: rendezvoustest.Start(t, rendezvous.Config{SigningKey: key, DeadAfter: time.Minute}), relays: map[string]*relaytest.Server{}}
	for range 2 {
		r := relaytest.Start(t, m.rv.URL, relay.Config{PartSize: partSize, Window: 256 << 10})
		m.relays[r.ID()] = r
	}
	return m
}

// urlLog is an http.RoundTripper that records the URLs it is asked for.
type urlLog struct {
	mu   sync.Mutex // guards urls
	urls []*url.URL
}

func (l *urlLog) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.urls = append(l.urls, r.URL)
	l.mu.Unlock()
	return rendezvoustest.HTTP.Transport.RoundTrip(r)
}

// avoided returns the avoid parameters of the item requests made.
func (l *urlLog) avoided() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, u := range l.urls {
		if a := u.Query().Get("avoid"); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// killer closes the exit relay of a download once killAt bytes arrived.
type killer struct {
	m    *mesh2
	exit string
	once sync.Once
	done chan struct{}
}

func (k *killer) onStart(d *client.Download) { k.exit = d.Relay }

func (k *killer) onProgress(done, _ int64) {
	if done < killAt {
		return
	}
	// The download waits while its exit dies: the kill always lands
	// mid-transfer, whatever the speeds.
	k.once.Do(func() {
		defer close(k.done)
		if r := k.m.relays[k.exit]; r != nil {
			r.Close()
		}
	})
}

// TestExitRelayFails kills the exit relay of a download mid-transfer (its
// HTTP server and its connections close, as when the process dies): the
// download resumes through the other relay, asking the rendezvous to
// avoid the dead one, and the bytes come out intact.
func TestExitRelayFails(t *testing.T) {
	t.Parallel()
	data := meshtest.RandomBytes(failoverSize, 40)
	want := sha256.Sum256(data)
	for _, tt := range []struct {
		name   string
		plain  bool
		toFile bool
	}{
		{"plain to a file", true, true},
		{"plain to a writer", true, false},
		{"encrypted to a file", false, true},
		{"encrypted to a writer", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh2(t)
			c, err := client.New(client.Config{Rendezvous: m.rv.URL, Logger: relaytest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			it := publish(t, c, client.Source{Plain: tt.plain, Volunteers: true, Name: "big.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
			link := it.ShareURL
			if tt.plain {
				link = it.DownloadURL
			}

			k := &killer{m: m, done: make(chan struct{})}
			log := &urlLog{}
			var retries []string
			opt := client.FileOptions{
				HTTPClient: &http.Client{Transport: log},
				OnStart:    k.onStart,
				OnProgress: k.onProgress,
				OnRetry:    func(err error) { retries = append(retries, err.Error()) },
			}
			var got []byte
			if tt.toFile {
				file := filepath.Join(t.TempDir(), "out")
				n, err := client.DownloadFile(ctx(t), link, file, opt)
				if err != nil || n != int64(len(data)) {
					t.Fatalf("DownloadFile: got %d, %v, want %d, nil", n, err, len(data))
				}
				got, _ = os.ReadFile(file)
			} else {
				var buf bytes.Buffer
				pw := &progressBuffer{w: &buf, fn: k.onProgress}
				opt.OnProgress = nil
				n, err := client.DownloadTo(ctx(t), link, pw, opt)
				if err != nil || n != int64(len(data)) {
					t.Fatalf("DownloadTo: got %d, %v, want %d, nil", n, err, len(data))
				}
				got = buf.Bytes()
			}
			<-k.done
			if sha256.Sum256(got) != want {
				t.Fatalf("SHA-256 differs from the item's (%d bytes, first difference at %d)", len(got), meshtest.FirstDiff(got, data))
			}
			if k.exit == "" || m.relays[k.exit] == nil {
				t.Fatalf("the first response named exit %q, not one of the relays", k.exit)
			}
			var other *relaytest.Server
			for id, r := range m.relays {
				if id != k.exit {
					other = r
				}
			}
			if out := other.Server.Stats().BytesOut; out == 0 {
				t.Errorf("the other relay sent no byte: the download did not resume through it")
			}
			if a := log.avoided(); len(a) == 0 || !strings.Contains(a[0], k.exit) {
				t.Errorf("avoid parameters: got %q, want the killed exit %s", a, k.exit)
			}
			if len(retries) == 0 || !strings.Contains(retries[0], "exit relay "+k.exit+" failed at byte") || !strings.Contains(retries[0], "resuming through another relay") {
				t.Errorf("retries: got %q, want the first saying exit relay %s failed", retries, k.exit)
			}
			t.Logf("retries: %q", retries)
		})
	}
}

// progressBuffer calls fn with the bytes written so far.
type progressBuffer struct {
	w  io.Writer
	n  int64
	fn func(done, size int64)
}

func (p *progressBuffer) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	p.fn(p.n, 0)
	return n, err
}

// TestExitRelayFailsAlone kills the only relay mid-transfer: with no other
// exit, the download ends with an error naming the dead exit, and what it
// wrote is a prefix of the item.
func TestExitRelayFailsAlone(t *testing.T) {
	t.Parallel()
	data := meshtest.RandomBytes(failoverSize, 41)
	for _, plain := range []bool{true, false} {
		t.Run(fmt.Sprint("plain=", plain), func(t *testing.T) {
			e := newEnv(t)
			c := e.newClient(t, client.Config{})
			it := publish(t, c, client.Source{Plain: plain, Volunteers: true, Name: "big.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
			link := it.ShareURL
			if plain {
				link = it.DownloadURL
			}
			m := &mesh2{relays: map[string]*relaytest.Server{e.relay.ID(): e.relay}}
			k := &killer{m: m, done: make(chan struct{})}
			file := filepath.Join(t.TempDir(), "out")
			// No waiting: the one resume goes at once and finds no exit.
			n, err := client.DownloadFile(ctx(t), link, file, client.FileOptions{OnStart: k.onStart, OnProgress: k.onProgress, RetryWait: -1})
			<-k.done
			if err == nil {
				t.Fatalf("DownloadFile: got %d, nil, want an error", n)
			}
			if errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), e.relay.ID()) && !strings.Contains(err.Error(), "no relay is live") {
				t.Errorf("error %q names neither the dead exit %s nor the lack of a live relay", err, e.relay.ID())
			}
			got, _ := os.ReadFile(file)
			if int64(len(got)) != n || len(got) < killAt || !bytes.Equal(got, data[:len(got)]) {
				t.Errorf("file: %d bytes (written %d), first difference at %d; want a prefix of the item of at least %d bytes", len(got), n, meshtest.FirstDiff(got, data), killAt)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestExitRelayFailsAloneWaits kills the only relay mid-transfer with a
// short RetryWait: the download keeps asking (through the rendezvous)
// with backoff, then gives up, saying so; the file is a prefix of the
// item.
func TestExitRelayFailsAloneWaits(t *testing.T) {
	t.Parallel()
	data := meshtest.RandomBytes(failoverSize, 42)
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "big.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	m := &mesh2{relays: map[string]*relaytest.Server{e.relay.ID(): e.relay}}
	k := &killer{m: m, done: make(chan struct{})}
	log := &urlLog{}
	file := filepath.Join(t.TempDir(), "out")
	n, err := client.DownloadFile(ctx(t), it.DownloadURL, file, client.FileOptions{
		HTTPClient: &http.Client{Transport: log}, OnStart: k.onStart, OnProgress: k.onProgress, RetryWait: 1500 * time.Millisecond,
	})
	<-k.done
	if err == nil || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("DownloadFile: got %d, %v, want an error saying it gave up", n, err)
	}
	tries := 0
	log.mu.Lock()
	for _, u := range log.urls {
		if u.Path == "/v1/items/"+it.ID.String() && u.Host == strings.TrimPrefix(e.rv.URL, "http://") {
			tries++
		}
	}
	log.mu.Unlock()
	if tries < 3 {
		t.Errorf("item requests to the rendezvous: got %d, want the first, an immediate resume and at least one after a pause", tries)
	}
	got, _ := os.ReadFile(file)
	if int64(len(got)) != n || !bytes.Equal(got, data[:len(got)]) {
		t.Errorf("file: %d bytes (written %d), first difference at %d; want a prefix of the item", len(got), n, meshtest.FirstDiff(got, data))
	}
	t.Logf("%d item requests; error: %v", tries, err)
}

// startVersionLiar starts a real relay behind a proxy that gives every
// Range response (a resume) another ETag, as a relay serving another
// version of the item would. The relay advertises the proxy as its URL.
func startVersionLiar(t *testing.T, rvURL string) *relaytest.Server {
	t.Helper()
	var backend atomic.Pointer[url.URL]
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend.Load())
			r.Out.Host = r.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusPartialContent {
				resp.Header.Set("ETag", `"another-version"`)
			}
			return nil
		},
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if backend.Load() == nil {
			http.Error(w, "relay not started yet", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	r := relaytest.Start(t, rvURL, relay.Config{PublicURL: proxy.URL, PartSize: partSize, Window: 256 << 10})
	u, _ := url.Parse(r.URL)
	backend.Store(u)
	return r
}

// TestResumeRefusesAnotherVersion kills the exit of a plaintext download
// mid-transfer; the only other relay answers the resume with another
// validator (ETag). The download asks once more, then fails with
// ErrItemChanged, and the file holds only bytes of the first version.
func TestResumeRefusesAnotherVersion(t *testing.T) {
	t.Parallel()
	data := meshtest.RandomBytes(failoverSize, 43)
	e := newEnv(t)
	liar := startVersionLiar(t, e.rv.URL)
	c := e.newClient(t, client.Config{})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "big.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	m := &mesh2{relays: map[string]*relaytest.Server{e.relay.ID(): e.relay}}
	k := &killer{m: m, done: make(chan struct{})}
	var retries []string
	file := filepath.Join(t.TempDir(), "out")
	// Start on the honest relay; the resume can go to the liar only.
	n, err := client.DownloadFile(ctx(t), e.via(t, it), file, client.FileOptions{
		OnStart: k.onStart, OnProgress: k.onProgress, RetryWait: -1,
		OnRetry: func(err error) { retries = append(retries, err.Error()) },
	})
	<-k.done
	if !errors.Is(err, client.ErrItemChanged) || !strings.Contains(err.Error(), liar.ID()) {
		t.Fatalf("DownloadFile: got %d, %v, want ErrItemChanged naming relay %s", n, err, liar.ID())
	}
	got, _ := os.ReadFile(file)
	if int64(len(got)) != n || len(got) < killAt || !bytes.Equal(got, data[:len(got)]) {
		t.Errorf("file: %d bytes (written %d), first difference at %d; want a prefix of the item of at least %d bytes", len(got), n, meshtest.FirstDiff(got, data), killAt)
	}
	t.Logf("retries: %q; error: %v", retries, err)
}

// stallBody passes n bytes, then sends nothing more until its request
// is cancelled: a relay that froze with its connection open.
type stallBody struct {
	io.ReadCloser
	n    int64
	done <-chan struct{}
}

func (s *stallBody) Read(p []byte) (int, error) {
	if s.n <= 0 {
		<-s.done
		return 0, errors.New("stalled relay: request cancelled")
	}
	if int64(len(p)) > s.n {
		p = p[:s.n]
	}
	n, err := s.ReadCloser.Read(p)
	s.n -= int64(n)
	return n, err
}

// startStaller starts a real relay behind a proxy whose item responses
// stop after 1 MiB of body and hang, the connection open. The relay
// advertises the proxy as its URL.
func startStaller(t *testing.T, rvURL string) *relaytest.Server {
	t.Helper()
	var backend atomic.Pointer[url.URL]
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend.Load())
			r.Out.Host = r.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if strings.HasPrefix(resp.Request.URL.Path, "/v1/items/") && resp.StatusCode/100 == 2 {
				resp.Body = &stallBody{ReadCloser: resp.Body, n: 1 << 20, done: resp.Request.Context().Done()}
			}
			return nil
		},
	}
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if backend.Load() == nil {
			http.Error(w, "relay not started yet", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	r := relaytest.Start(t, rvURL, relay.Config{PublicURL: proxy.URL, PartSize: partSize, Window: 256 << 10})
	u, _ := url.Parse(r.URL)
	backend.Store(u)
	return r
}

// TestExitRelayStalls reads through an exit that stops sending mid-body
// but keeps its connection open: after StallTimeout without a byte the
// download leaves it and resumes through the other relay, intact.
func TestExitRelayStalls(t *testing.T) {
	t.Parallel()
	data := meshtest.RandomBytes(8<<20+99, 44)
	want := sha256.Sum256(data)
	for _, plain := range []bool{true, false} {
		t.Run(fmt.Sprint("plain=", plain), func(t *testing.T) {
			e := newEnv(t)
			staller := startStaller(t, e.rv.URL)
			c := e.newClient(t, client.Config{})
			it := publish(t, c, client.Source{Plain: plain, Volunteers: true, Name: "s.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
			link, err := client.ItemURL(it.ShareURL, staller.ID())
			if err != nil {
				t.Fatal(err)
			}
			var retries []string
			var buf bytes.Buffer
			// A short stall timeout keeps the test short; nothing is
			// asserted about time.
			n, err := client.DownloadTo(ctx(t), link, &buf, client.FileOptions{
				StallTimeout: 300 * time.Millisecond,
				OnRetry:      func(err error) { retries = append(retries, err.Error()) },
			})
			if err != nil || n != int64(len(data)) {
				t.Fatalf("DownloadTo: got %d, %v, want %d, nil", n, err, len(data))
			}
			if sha256.Sum256(buf.Bytes()) != want {
				t.Fatalf("SHA-256 differs from the item's (first difference at %d)", meshtest.FirstDiff(buf.Bytes(), data))
			}
			if len(retries) == 0 || !strings.Contains(retries[0], "exit relay "+staller.ID()+" failed") || !strings.Contains(retries[0], "no byte arrived") {
				t.Errorf("retries: got %q, want the first saying the stalled exit %s failed", retries, staller.ID())
			}
			if out := e.relay.Server.Stats().BytesOut; out == 0 {
				t.Errorf("the other relay sent no byte")
			}
			t.Logf("retries: %q", retries)
		})
	}
}

// TestPermanentErrorsFailAtOnce: an unknown item (404) and a file longer
// than the item (416) end the download at the first answer, with no
// retry.
func TestPermanentErrorsFailAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data := meshtest.RandomBytes(3*partSize, 45)
	c := e.newClient(t, client.Config{})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "p.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	dir := t.TempDir()
	for _, tt := range []struct {
		name, url string
		have      []byte
	}{
		{"unknown item", e.rv.URL + "/v1/items/" + proto.NewItemID().String(), nil},
		{"file longer than the item", it.DownloadURL, append(bytes.Clone(data), "more"...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, tt.name)
			if tt.have != nil {
				if err := os.WriteFile(file, tt.have, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			log := &urlLog{}
			var retries []string
			_, err := client.DownloadFile(ctx(t), tt.url, file, client.FileOptions{
				HTTPClient: &http.Client{Transport: log},
				OnRetry:    func(err error) { retries = append(retries, err.Error()) },
			})
			if err == nil {
				t.Fatal("DownloadFile: got nil, want an error")
			}
			gets := 0
			log.mu.Lock()
			for _, u := range log.urls {
				if strings.HasPrefix(u.Path, "/v1/items/") && !strings.HasSuffix(u.Path, "/meta") && u.Query().Get("t") == "" {
					gets++
				}
			}
			log.mu.Unlock()
			if gets != 1 || len(retries) != 0 {
				t.Errorf("item requests to the rendezvous: got %d, retries %q; want 1 and none", gets, retries)
			}
			if got, _ := os.ReadFile(file); tt.have != nil && !bytes.Equal(got, tt.have) {
				t.Errorf("the file changed")
			}
			t.Logf("error: %v", err)
		})
	}
}
