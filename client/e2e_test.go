package client_test

import (
	"bytes"
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

const (
	chunk  = proto.E2EChunkSize
	schunk = proto.E2ESealedChunkSize
)

// TestEncryptedRoundTrip publishes encrypted items of sizes around the
// chunk size and downloads them: the file is the plaintext, the relay
// carried exactly the ciphertext, a plain HTTP GET gets ciphertext, and the
// name and type come out of the sealed metadata.
func TestEncryptedRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{FrameSize: 200 << 10})
	dir := t.TempDir()
	for i, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 5, 2*partSize + 77} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := meshtest.RandomBytes(size, uint64(10+i))
			it := publish(t, c, client.Source{Name: "secret report.pdf", MIME: "application/pdf", Size: int64(size), Reader: bytes.NewReader(data)})
			if !it.Encrypted || !strings.Contains(it.ShareURL, "#k="+it.Key.String()) || !strings.HasSuffix(it.DownloadURL, "#k="+it.Key.String()) {
				t.Fatalf("item: encrypted %v, links %q %q; want both links with #k=", it.Encrypted, it.ShareURL, it.DownloadURL)
			}
			cs, _ := proto.E2ECipherSize(int64(size))
			info, err := client.Inspect(ctx(t), nil, it.ShareURL)
			if err != nil {
				t.Fatal(err)
			}
			if info.Name != "secret report.pdf" || info.MIME != "application/pdf" || info.Size != int64(size) || info.CipherSize != cs || !info.Encrypted {
				t.Errorf("Inspect: got %+v", info)
			}

			before := e.relay.Server.Stats().BytesOut
			file := filepath.Join(dir, fmt.Sprint(size))
			n, err := client.DownloadFile(ctx(t), e.via(t, it), file, client.FileOptions{})
			if err != nil || n != int64(size) {
				t.Fatalf("DownloadFile: %d, %v, want %d, nil", n, err, size)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if i := meshtest.FirstDiff(got, data); i >= 0 {
				t.Fatalf("file of %d bytes differs from the item at byte %d", len(got), i)
			}
			// At least the ciphertext: a part asked again after a stall
			// on a loaded machine sends some bytes twice.
			eventually(t, "the relay to count the ciphertext it sent", func() bool {
				return e.relay.Server.Stats().BytesOut-before >= cs
			})

			// What curl sees: the ciphertext, no name.
			d, err := client.Open(ctx(t), nil, e.via(t, it), 0)
			if !strings.Contains(e.via(t, it), "#k=") {
				t.Fatal("download URL lost its key")
			}
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(d.Body)
			d.Body.Close()
			if err != nil || int64(len(raw)) != cs || d.Name != "" || d.MIME != "application/octet-stream" {
				t.Fatalf("plain GET: %d bytes, %v, name %q, type %q; want %d bytes, no name, application/octet-stream", len(raw), err, d.Name, d.MIME, cs)
			}
			if size >= 16 && bytes.Contains(raw, data[:16]) {
				t.Error("the ciphertext contains plaintext")
			}

			var out bytes.Buffer
			if n, err := client.DownloadTo(ctx(t), it.ShareURL, &out, client.FileOptions{}); err != nil || n != int64(size) || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("DownloadTo: %d, %v, equal %v", n, err, bytes.Equal(out.Bytes(), data))
			}
		})
	}
}

// TestEncryptedResume resumes partial files: the download continues at the
// chunk boundary before the file's end, moves only the ciphertext from
// there, and the file ends identical to the item.
func TestEncryptedResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	data := meshtest.RandomBytes(5*chunk+1234, 20)
	it := publish(t, c, client.Source{Name: "r.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	cs, _ := proto.E2ECipherSize(int64(len(data)))
	want := sha256.Sum256(data)
	dir := t.TempDir()
	for _, have := range []int{0, 1, chunk - 1, chunk, 2*chunk + 100, len(data) - 1, len(data)} {
		t.Run(fmt.Sprint(have), func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprint(have))
			if err := os.WriteFile(file, data[:have], 0o644); err != nil {
				t.Fatal(err)
			}
			before := e.relay.Server.Stats().BytesOut
			var started *client.Download
			n, err := client.DownloadFile(ctx(t), e.via(t, it), file, client.FileOptions{OnStart: func(d *client.Download) { started = d }})
			if err != nil || n != int64(len(data)-have) {
				t.Fatalf("DownloadFile: %d, %v, want %d", n, err, len(data)-have)
			}
			got, _ := os.ReadFile(file)
			if sha256.Sum256(got) != want {
				t.Fatalf("file SHA-256 differs from the item's (%d bytes, first difference at %d)", len(got), meshtest.FirstDiff(got, data))
			}
			wantOut := int64(0)
			if have < len(data) {
				wantOut = cs - int64(have/chunk)*schunk
				if started == nil || started.Start != int64(have) {
					t.Errorf("OnStart: got %+v, want start %d", started, have)
				}
			}
			eventually(t, fmt.Sprintf("the relay to count %d bytes sent (from the chunk boundary on)", wantOut), func() bool {
				return e.relay.Server.Stats().BytesOut-before == wantOut
			})
		})
	}
}

// TestEncryptedKeyErrors downloads with no key and a wrong key: clear
// errors, and no file.
func TestEncryptedKeyErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	data := meshtest.RandomBytes(3*chunk, 21)
	it := publish(t, c, client.Source{Name: "k.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	dir := t.TempDir()
	wrong := proto.NewE2EKey()
	noKey, _, _ := strings.Cut(e.via(t, it), "#")
	tests := []struct {
		name string
		link string
		want error
	}{
		{"no key", noKey, client.ErrNoKey},
		{"wrong key", noKey + "#" + wrong.Fragment(), client.ErrWrongKey},
		{"malformed key", noKey + "#k=abc", proto.ErrE2EKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, tt.name)
			before := e.relay.Server.Stats().BytesOut
			_, err := client.DownloadFile(ctx(t), tt.link, file, client.FileOptions{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("DownloadFile: got %v, want %v", err, tt.want)
			}
			if _, serr := os.Stat(file); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("output file exists after %v", err)
			}
			if out := e.relay.Server.Stats().BytesOut - before; out != 0 {
				t.Errorf("relay sent %d bytes for a download that cannot be opened", out)
			}
			var buf bytes.Buffer
			if _, err := client.DownloadTo(ctx(t), tt.link, &buf, client.FileOptions{}); !errors.Is(err, tt.want) || buf.Len() != 0 {
				t.Errorf("DownloadTo: got %v with %d bytes written, want %v and none", err, buf.Len(), tt.want)
			}
		})
	}
}

// TestEncryptedSourceChanged changes a published file: the publisher
// refuses the orders instead of sealing other bytes under the same nonces,
// and the consumer gets no byte.
func TestEncryptedSourceChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	path := filepath.Join(t.TempDir(), "src.bin")
	data := meshtest.RandomBytes(2*chunk, 22)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	it := publish(t, c, client.Source{Name: "src.bin", Size: fi.Size(), Reader: f})
	if err := os.Chtimes(path, time.Time{}, fi.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	failed := e.rv.Server.Stats().OrdersFailed
	out := filepath.Join(t.TempDir(), "out")
	if _, err := client.DownloadFile(ctx(t), e.via(t, it), out, client.FileOptions{}); err == nil {
		t.Fatal("DownloadFile of a changed source: got nil error")
	}
	if got, _ := os.ReadFile(out); len(got) != 0 {
		t.Errorf("%d bytes written from a changed source", len(got))
	}
	eventually(t, "the rendezvous to hear of the refused order", func() bool {
		return e.rv.Server.Stats().OrdersFailed > failed
	})
}

// lie is one way a hostile relay alters the ciphertext it serves. Offsets
// are in the item's ciphertext.
type lie struct {
	name  string
	chunk uint64 // the chunk the reader must name
	kind  error
	apply func(body []byte, start int64, other []byte) []byte
}

var lies = []lie{
	{"flip one byte", 2, proto.ErrE2EIntegrity, func(b []byte, start int64, _ []byte) []byte {
		if i := 2*schunk + 100 - start; i >= 0 && i < int64(len(b)) {
			b[i] ^= 0x40
		}
		return b
	}},
	{"drop a chunk", 2, proto.ErrE2EIntegrity, func(b []byte, start int64, _ []byte) []byte {
		i := 2*schunk - start
		if i < 0 || i+schunk > int64(len(b)) {
			return b
		}
		return append(b[:i:i], b[i+schunk:]...)
	}},
	{"swap two chunks", 2, proto.ErrE2EIntegrity, func(b []byte, start int64, _ []byte) []byte {
		i, j := 2*schunk-start, 3*schunk-start
		if i < 0 || j+schunk > int64(len(b)) {
			return b
		}
		tmp := bytes.Clone(b[i : i+schunk])
		copy(b[i:], b[j:j+schunk])
		copy(b[j:], tmp)
		return b
	}},
	{"another item's bytes", 2, proto.ErrE2EIntegrity, func(b []byte, start int64, other []byte) []byte {
		i := 2*schunk - start
		if i < 0 {
			return b
		}
		copy(b[i:], other[2*schunk:])
		return b
	}},
	{"end the body early", 2, proto.ErrE2ETruncated, func(b []byte, start int64, _ []byte) []byte {
		if i := 2*schunk + 1000 - start; i >= 0 && i < int64(len(b)) {
			return b[:i]
		}
		return b
	}},
}

// hostileRelay is a real relay behind a reverse proxy that passes
// everything through (registration, pushes) but alters the bodies of item
// reads. The relay advertises the proxy as its public URL, so the
// rendezvous sends consumers to the proxy.
type hostileRelay struct {
	*relaytest.Server
	proxy *httptest.Server
	lies  atomic.Int64 // item reads altered

	mu    sync.Mutex // guards the fields below
	lie   *lie
	other []byte // another item's ciphertext, same size
}

func startHostileRelay(t *testing.T, rvURL string) *hostileRelay {
	t.Helper()
	h := &hostileRelay{}
	var backend atomic.Pointer[url.URL]
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend.Load())
			r.Out.Host = r.In.Host
		},
		ModifyResponse: h.modify,
	}
	h.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if backend.Load() == nil { // the rendezvous checks the URL before Start returns
			http.Error(w, "relay not started yet", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(h.proxy.Close)
	h.Server = relaytest.Start(t, rvURL, relay.Config{PublicURL: h.proxy.URL, PartSize: partSize, Window: 256 << 10})
	u, _ := url.Parse(h.Server.URL)
	backend.Store(u)
	return h
}

func (h *hostileRelay) set(l *lie, other []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lie, h.other = l, other
}

func (h *hostileRelay) modify(resp *http.Response) error {
	req := resp.Request
	if req.Method != http.MethodGet || !strings.HasPrefix(req.URL.Path, "/v1/items/") {
		return nil
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return nil
	}
	h.mu.Lock()
	l, other := h.lie, h.other
	h.mu.Unlock()
	if l == nil {
		return nil
	}
	var start int64
	if resp.StatusCode == http.StatusPartialContent {
		fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	// The Content-Length stays as the relay declared it: a shorter body
	// is cut off at the end of the response, as a relay that stops would.
	resp.Body = io.NopCloser(bytes.NewReader(l.apply(body, start, other)))
	h.lies.Add(1)
	return nil
}

// TestHostileRelay reads encrypted items through a relay that lies in
// each of the ways above. Alone, the reader reports an integrity error
// naming the chunk and writes only the authenticated chunks before it;
// with an honest relay beside it, the reader retries there and the file
// comes out identical.
func TestHostileRelay(t *testing.T) {
	t.Parallel()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rv := rendezvoustest.Start(t, rendezvous.Config{SigningKey: key, DeadAfter: time.Minute})
	hostile := startHostileRelay(t, rv.URL)
	c, err := client.New(client.Config{Rendezvous: rv.URL, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	data := meshtest.RandomBytes(6*chunk+321, 30)
	it := publish(t, c, client.Source{Name: "h.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	decoy := publish(t, c, client.Source{Name: "d.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	d, err := client.Open(ctx(t), nil, decoy.DownloadURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := io.ReadAll(d.Body)
	d.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	link := func(relayID string) string {
		u, err := client.ItemURL(it.ShareURL, relayID)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	want := sha256.Sum256(data)
	dir := t.TempDir()

	t.Run("alone", func(t *testing.T) {
		for _, l := range lies {
			t.Run(l.name, func(t *testing.T) {
				hostile.set(&l, other)
				defer hostile.set(nil, nil)
				lied := hostile.lies.Load()
				file := filepath.Join(dir, "alone "+l.name)
				// A body that ends early looks like an exit that died: it
				// is resumed through the rendezvous, which has only the
				// hostile relay; no waiting for another.
				n, err := client.DownloadFile(ctx(t), link(hostile.ID()), file, client.FileOptions{RetryWait: -1})
				var ce *proto.E2EChunkError
				if !errors.As(err, &ce) || ce.Chunk != l.chunk || !errors.Is(err, l.kind) {
					t.Fatalf("DownloadFile: got %v, want %v at chunk %d", err, l.kind, l.chunk)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("chunk %d", l.chunk)) || !strings.Contains(err.Error(), hostile.ID()) {
					t.Errorf("error %q does not name chunk %d and relay %s", err, l.chunk, hostile.ID())
				}
				got, _ := os.ReadFile(file)
				if n != int64(l.chunk)*chunk || !bytes.Equal(got, data[:n]) {
					t.Errorf("wrote %d bytes (file %d), want exactly the %d authenticated ones", n, len(got), int64(l.chunk)*chunk)
				}
				if hostile.lies.Load() == lied {
					t.Error("the hostile relay served nothing")
				}
			})
		}
	})

	honest := relaytest.Start(t, rv.URL, relay.Config{PartSize: partSize, Window: 256 << 10})
	t.Run("with an honest relay", func(t *testing.T) {
		for _, l := range lies {
			t.Run(l.name, func(t *testing.T) {
				hostile.set(&l, other)
				defer hostile.set(nil, nil)
				file := filepath.Join(dir, "retry "+l.name)
				var retries []error
				before := honest.Server.Stats().BytesServed
				n, err := client.DownloadFile(ctx(t), link(hostile.ID()), file, client.FileOptions{OnRetry: func(err error) { retries = append(retries, err) }})
				if err != nil || n != int64(len(data)) {
					t.Fatalf("DownloadFile: %d, %v, want %d, nil", n, err, len(data))
				}
				got, _ := os.ReadFile(file)
				if sha256.Sum256(got) != want {
					t.Fatalf("file SHA-256 differs from the item's")
				}
				// An integrity error names the relay tried next; a body
				// cut short, the exit that failed (the rendezvous picks
				// the next, avoiding it).
				named := honest.ID()
				if errors.Is(l.kind, proto.ErrE2ETruncated) {
					named = hostile.ID()
				}
				if len(retries) != 1 || !errors.Is(retries[0], l.kind) || !strings.Contains(retries[0].Error(), fmt.Sprintf("chunk %d", l.chunk)) || !strings.Contains(retries[0].Error(), named) {
					t.Errorf("retries: got %v, want one naming chunk %d and relay %s", retries, l.chunk, named)
				}
				cs, _ := proto.E2ECipherSize(int64(len(data)))
				eventually(t, fmt.Sprintf("the honest relay to count the bytes from chunk %d on", l.chunk), func() bool {
					return honest.Server.Stats().BytesServed-before == cs-int64(l.chunk)*schunk
				})
			})
		}
	})
}
