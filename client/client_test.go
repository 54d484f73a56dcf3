package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// wait bounds every wait in the tests; no test asserts a duration.
const wait = 20 * time.Second

const partSize = 1 << 20

// env is a rendezvous and one relay on loopback.
type env struct {
	rv    *rendezvoustest.Server
	relay *relaytest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rv := rendezvoustest.Start(t, rendezvous.Config{SigningKey: key, DeadAfter: time.Minute})
	return &env{rv: rv, relay: relaytest.Start(t, rv.URL, relay.Config{PartSize: partSize, Window: 256 << 10})}
}

// newClient starts a client of the env's rendezvous, closed at cleanup.
func (e *env) newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cfg.Rendezvous = e.rv.URL
	if cfg.Logger == nil {
		cfg.Logger = relaytest.Logger(t)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func publish(t *testing.T, c *client.Client, src client.Source) *client.Item {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	it, err := c.Publish(ctx, src)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return it
}

// via returns the download URL of it pinned to the env's relay, built
// from the share link.
func (e *env) via(t *testing.T, it *client.Item) string {
	t.Helper()
	u, err := client.ItemURL(it.ShareURL, e.relay.ID())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// eventually polls cond until it holds or the wait is over.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	meshtest.Eventually(t, wait, what, cond)
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func TestItemURL(t *testing.T) {
	t.Parallel()
	id := proto.NewItemID().String()
	tests := []struct {
		name, raw, via string
		want           string // "" means an error
	}{
		{"share link", "http://h:8080/i/" + id, "", "http://h:8080/v1/items/" + id},
		{"share link https", "https://example.com/i/" + id, "", "https://example.com/v1/items/" + id},
		{"share link under a prefix", "https://example.com/meshup/i/" + id, "", "https://example.com/meshup/v1/items/" + id},
		{"download URL kept", "http://h:8080/v1/items/" + id, "", "http://h:8080/v1/items/" + id},
		{"download URL with query kept", "http://h/v1/items/" + id + "?x=1", "", "http://h/v1/items/" + id + "?x=1"},
		{"share link with via", "http://h/i/" + id, "12D3KooWPeer", "http://h/v1/items/" + id + "?via=12D3KooWPeer"},
		{"via replaces via", "http://h/v1/items/" + id + "?via=old", "new", "http://h/v1/items/" + id + "?via=new"},
		{"via escaped", "http://h/v1/items/" + id, "a b&c", "http://h/v1/items/" + id + "?via=a+b%26c"},
		{"not http", "ftp://h/i/" + id, "", ""},
		{"no scheme", "h/i/" + id, "", ""},
		{"relative", "/i/" + id, "", ""},
		{"no host", "http:///i/" + id, "", ""},
		{"no id", "http://h/i/", "", ""},
		{"bad id", "http://h/i/" + id[:25] + "!", "", ""},
		{"short id", "http://h/i/" + id[:25], "", ""},
		{"id not last", "http://h/i/" + id + "/x", "", ""},
		{"not a URL", "http://h/%zz/" + id, "", ""},
		{"empty", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := client.ItemURL(tt.raw, tt.via)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ItemURL(%q, %q): got %q, want an error", tt.raw, tt.via, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ItemURL(%q, %q): got %q, %v, want %q", tt.raw, tt.via, got, err, tt.want)
			}
		})
	}
}

// TestDownloadFile downloads through a real mesh into files that hold
// nothing, a prefix, or everything already.
func TestDownloadFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data := meshtest.RandomBytes(5*partSize+3, 1)
	size := int64(len(data))
	c := e.newClient(t, client.Config{})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "five.bin", Size: size, Reader: bytes.NewReader(data)})
	url := e.via(t, it)
	dir := t.TempDir()

	tests := []struct {
		name        string
		have        []byte // file content before the download
		wantWritten int64
	}{
		{"no file", nil, size},
		{"empty file", []byte{}, size},
		{"prefix", data[:5*partSize/2], size - 5*partSize/2},
		{"all but the last byte", data[:size-1], 1},
		{"complete", data, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprint(i))
			if tt.have != nil {
				if err := os.WriteFile(file, tt.have, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := e.relay.Server.Stats()
			var started *client.Download
			var lastDone, lastSize int64
			written, err := client.DownloadFile(ctx(t), url, file, client.FileOptions{
				OnStart:    func(d *client.Download) { started = d },
				OnProgress: func(done, size int64) { lastDone, lastSize = done, size },
			})
			if err != nil || written != tt.wantWritten {
				t.Fatalf("DownloadFile: got %d, %v, want %d, nil", written, err, tt.wantWritten)
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if i := meshtest.FirstDiff(got, data); i >= 0 {
				t.Fatalf("file of %d bytes differs from the item at byte %d", len(got), i)
			}
			if lastDone != size || lastSize != size {
				t.Errorf("last progress: got %d of %d, want %d of %d", lastDone, lastSize, size, size)
			}
			after := e.relay.Server.Stats()
			if out := after.BytesOut - before.BytesOut; out != tt.wantWritten {
				t.Errorf("bytes the relay sent: got %d, want %d (only the missing bytes)", out, tt.wantWritten)
			}
			if tt.wantWritten == 0 {
				if after.Needs != before.Needs {
					t.Errorf("needs: got %d, want %d (a complete file asks for no part)", after.Needs, before.Needs)
				}
				if started != nil {
					t.Errorf("OnStart called for a complete file")
				}
				return
			}
			if started == nil {
				t.Fatal("OnStart not called")
			}
			if want := size - tt.wantWritten; started.Start != want || started.Size != size || started.Name != "five.bin" {
				t.Errorf("download: got start %d size %d name %q, want %d, %d, five.bin", started.Start, started.Size, started.Name, want, size)
			}
		})
	}

	t.Run("file longer than the item", func(t *testing.T) {
		file := filepath.Join(dir, "long")
		long := append(bytes.Clone(data), "extra"...)
		if err := os.WriteFile(file, long, 0o644); err != nil {
			t.Fatal(err)
		}
		if n, err := client.DownloadFile(ctx(t), url, file, client.FileOptions{}); err == nil {
			t.Fatalf("DownloadFile: got %d, nil, want an error", n)
		}
		got, _ := os.ReadFile(file)
		if !bytes.Equal(got, long) {
			t.Errorf("file changed after a refused download")
		}
	})
}

// TestOpenStat checks Open at an offset and Stat against the relay.
func TestOpenStat(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data := meshtest.RandomBytes(3*partSize+11, 2)
	c := e.newClient(t, client.Config{})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "dir/clip.mp4", MIME: "video/mp4", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	url := e.via(t, it)

	st, err := client.Stat(ctx(t), nil, url)
	if err != nil {
		t.Fatal(err)
	}
	st.Body.Close()
	if st.Size != int64(len(data)) || st.Start != 0 || st.MIME != "video/mp4" || st.Name != "clip.mp4" {
		t.Errorf("Stat: got size %d start %d mime %q name %q, want %d, 0, video/mp4, clip.mp4", st.Size, st.Start, st.MIME, st.Name, len(data))
	}
	if n := e.relay.Server.Stats().Needs; n != 0 {
		t.Errorf("needs after Stat: got %d, want 0", n)
	}

	for _, off := range []int64{0, 1, partSize, int64(len(data)) - 1} {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			d, err := client.Open(ctx(t), nil, url, off)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Body.Close()
			got, err := io.ReadAll(d.Body)
			if err != nil {
				t.Fatal(err)
			}
			if d.Start != off || d.Size != int64(len(data)) {
				t.Errorf("Open: got start %d size %d, want %d, %d", d.Start, d.Size, off, len(data))
			}
			if i := meshtest.FirstDiff(got, data[off:]); i >= 0 {
				t.Errorf("body of %d bytes differs from the item from %d at byte %d", len(got), off, i)
			}
		})
	}

	t.Run("unknown item", func(t *testing.T) {
		_, err := client.Open(ctx(t), nil, e.rv.URL+"/v1/items/"+proto.NewItemID().String(), 0)
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Status != proto.StatusNotFound {
			t.Fatalf("Open: got error %v, want a proto.Error with status %v", err, proto.StatusNotFound)
		}
	})
}

// TestPublishMessage publishes a short message: the rendezvous serves its
// text itself, no relay is involved.
func TestPublishMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	const text = "hello, mesh ✓"
	it := publish(t, c, client.Source{Kind: proto.KindMessage, Text: text})

	tests := []struct {
		name     string
		rng      string
		wantCode int
		want     string
	}{
		{"whole", "", http.StatusOK, text},
		{"range", "bytes=0-4", http.StatusPartialContent, text[:5]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, it.DownloadURL, nil)
			if tt.rng != "" {
				req.Header.Set("Range", tt.rng)
			}
			resp, err := rendezvoustest.NoRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode || string(body) != tt.want {
				t.Fatalf("GET: got %d %q, want %d %q", resp.StatusCode, body, tt.wantCode, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type: got %q, want text/plain", ct)
			}
		})
	}
	u, err := client.ItemURL(it.ShareURL, "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := client.Open(ctx(t), nil, u, 0)
	if err != nil {
		t.Fatalf("Open share link: %v", err)
	}
	got, _ := io.ReadAll(d.Body)
	d.Body.Close()
	if string(got) != text {
		t.Errorf("Open share link: got %q, want %q", got, text)
	}
	if st := e.relay.Server.Stats(); st.Needs != 0 || st.Requests != 0 {
		t.Errorf("relay needs, requests: got %d, %d, want 0, 0", st.Needs, st.Requests)
	}
}

// failingSource serves data up to failAt and fails any read past it.
type failingSource struct {
	data   []byte
	failAt int64
}

var errDisk = errors.New("disk on fire")

func (f failingSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, errDisk
	}
	return copy(p, f.data[off:]), nil
}

// TestSourceError publishes a source whose reads fail: the consumer gets
// an error status or a short body of correct bytes, never made-up bytes,
// and the rendezvous hears of the failed order.
func TestSourceError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data := meshtest.RandomBytes(4*partSize, 3)
	tests := []struct {
		name   string
		failAt int64
	}{
		{"first byte", 0},
		{"second part", 3 * partSize / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.newClient(t, client.Config{FrameSize: 64 << 10})
			it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "bad.bin", Size: int64(len(data)), Reader: failingSource{data, tt.failAt}})
			failed := e.rv.Server.Stats().OrdersFailed

			req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, e.via(t, it), nil)
			resp, err := rendezvoustest.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			switch resp.StatusCode {
			case http.StatusOK:
				if err == nil || int64(len(body)) >= int64(len(data)) {
					t.Fatalf("body: got %d bytes and error %v, want a short body and an error", len(body), err)
				}
				if int64(len(body)) > tt.failAt {
					t.Errorf("body: got %d bytes, want at most the %d the source could read", len(body), tt.failAt)
				}
				if i := meshtest.FirstDiff(body, data[:len(body)]); i >= 0 {
					t.Fatalf("body of %d bytes differs from the item at byte %d", len(body), i)
				}
			case http.StatusServiceUnavailable:
				if !bytes.Contains(body, []byte(`"status":109`)) {
					t.Errorf("503 body: got %s, want status %d (%v)", body, proto.StatusSourceError, proto.StatusSourceError)
				}
			default:
				t.Fatalf("status: got %d %s, want 200 with a short body or 503", resp.StatusCode, body)
			}
			eventually(t, "the rendezvous to hear of the failed order", func() bool {
				return e.rv.Server.Stats().OrdersFailed > failed
			})
		})
	}
}

// TestProgress checks that OnProgress reports bytes acknowledged end to
// end, growing to the item's size and never past it.
func TestProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	data := meshtest.RandomBytes(3*partSize+5, 4)
	var (
		mu    sync.Mutex
		calls int
		last  int64
		bad   []string
	)
	c := e.newClient(t, client.Config{OnProgress: func(p client.Progress) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if p.Acked < last || p.Acked > int64(len(data)) || p.Relay != e.relay.ID() {
			bad = append(bad, fmt.Sprintf("%+v after %d", p, last))
		}
		last = p.Acked
	}})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "p.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	d, err := client.Open(ctx(t), nil, e.via(t, it), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.Body)
	d.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: %d bytes, error %v, want the %d bytes of the item", len(got), err, len(data))
	}
	eventually(t, "progress to reach the item's size", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return last == int64(len(data))
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 || calls < 4 {
		t.Errorf("progress: %d calls, bad reports %q", calls, bad)
	}
}

// TestPublishRefused checks that the rendezvous's refusals reach the
// caller of Publish as *proto.Error with the rendezvous's status.
func TestPublishRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	tests := []struct {
		name string
		src  client.Source
		want proto.Status
	}{
		{"bad MIME type", client.Source{Plain: true, Volunteers: true, Name: "a", MIME: "not a type/", Size: 1, Reader: bytes.NewReader([]byte{1})}, proto.StatusMalformed},
		{"negative size", client.Source{Plain: true, Volunteers: true, Name: "a", Size: -1, Reader: bytes.NewReader(nil)}, proto.StatusMalformed},
		{"control character in name", client.Source{Plain: true, Volunteers: true, Name: "a\nb", Size: 1, Reader: bytes.NewReader([]byte{1})}, proto.StatusMalformed},
		{"unknown kind", client.Source{Plain: true, Volunteers: true, Kind: "hologram", Name: "a", Size: 1, Reader: bytes.NewReader([]byte{1})}, proto.StatusMalformed},
		{"message too long", client.Source{Kind: proto.KindMessage, Text: strings.Repeat("x", rendezvous.DefaultMaxTextMessage+1)}, proto.StatusTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it, err := c.Publish(ctx(t), tt.src)
			var pe *proto.Error
			if !errors.As(err, &pe) || pe.Status != tt.want {
				t.Fatalf("Publish: got %v, %v, want a proto.Error with status %d (%v)", it, err, tt.want, tt.want)
			}
		})
	}
	t.Run("file without reader", func(t *testing.T) {
		if it, err := c.Publish(ctx(t), client.Source{Plain: true, Volunteers: true, Name: "a", Size: 1}); err == nil {
			t.Fatalf("Publish: got %v, nil, want an error", it)
		}
	})
	if n := e.rv.Server.Stats().Items; n != 0 {
		t.Errorf("rendezvous items: got %d, want 0", n)
	}
}

// TestUnpublish withdraws an item: the rendezvous forgets it.
func TestUnpublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newClient(t, client.Config{})
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "u", Size: 3, Reader: bytes.NewReader([]byte{1, 2, 3})})
	c.Unpublish(it.ID)
	eventually(t, "the item gone", func() bool {
		d, err := client.Open(ctx(t), nil, it.DownloadURL, 0)
		if err == nil {
			d.Body.Close()
		}
		var pe *proto.Error
		return errors.As(err, &pe) && pe.Status == proto.StatusNotFound
	})
}

// cutProxy forwards TCP connections to a backend and can cut them all.
type cutProxy struct {
	ln      net.Listener
	backend string

	mu    sync.Mutex // guards conns
	conns []net.Conn
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(b, c); b.Close() }()
			go func() { defer wg.Done(); io.Copy(c, b); c.Close() }()
		}
	}()
	return p
}

// cut closes every connection through the proxy.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestReconnect cuts a publisher's control connection: the client must
// reconnect by itself and take its item back online, and the item must
// then be served again.
func TestReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxy := newCutProxy(t, strings.TrimPrefix(e.rv.URL, "http://"))
	states := make(chan bool, 16)
	c, err := client.New(client.Config{
		Rendezvous: "http://" + proxy.ln.Addr().String(),
		Logger:     relaytest.Logger(t),
		OnState:    func(online bool, _ error) { states <- online },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	data := meshtest.RandomBytes(2*partSize+9, 5)
	it := publish(t, c, client.Source{Plain: true, Volunteers: true, Name: "re.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	url := e.via(t, it)

	want := []bool{true, false, true}
	for i, w := range want {
		if i == 1 {
			proxy.cut()
		}
		select {
		case got := <-states:
			if got != w {
				t.Fatalf("state change %d: got online=%v, want %v", i, got, w)
			}
		case <-time.After(wait):
			t.Fatalf("no state change %d (online=%v) within %v", i, w, wait)
		}
	}
	eventually(t, "the item back online", func() bool {
		st := e.rv.Server.Stats()
		return st.ItemsOnline == 1 && st.Reclaims == 1
	})
	d, err := client.Open(ctx(t), nil, url, 0)
	if err != nil {
		t.Fatalf("Open after reconnect: %v", err)
	}
	got, err := io.ReadAll(d.Body)
	d.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download after reconnect: %d bytes, error %v, want the %d bytes of the item", len(got), err, len(data))
	}
	if st := e.rv.Server.Stats(); st.Items != 1 || st.Publishes != 1 {
		t.Errorf("rendezvous items, publishes: got %d, %d, want 1, 1 (the item was reclaimed, not published anew)", st.Items, st.Publishes)
	}
}
