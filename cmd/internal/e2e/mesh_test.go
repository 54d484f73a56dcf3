package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/relay"
)

// startMesh starts a rendezvous and relays in this process.
func startMesh(t testing.TB, relays int, rc relay.Config) *devmesh.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := devmesh.Start(ctx, devmesh.Config{
		Relays: relays,
		Relay:  rc,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// cutProxy forwards TCP connections to target until cut closes every
// connection it carries; new connections keep working afterwards.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	n := len(p.conns) / 2
	p.conns = nil
	return n
}

// TestSenderReconnects cuts the publisher's control connection: the item
// goes offline, the client reconnects by itself and takes the item back,
// and a later request succeeds with the same link.
func TestSenderReconnects(t *testing.T) {
	m := startMesh(t, 1, relay.Config{PartSize: 1 << 20, Window: 256 << 10})
	proxy := newCutProxy(t, m.URL[len("http://"):])

	data := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{7}).Read(data)
	states := make(chan bool, 16)
	c, err := client.New(client.Config{
		Rendezvous: "http://" + proxy.ln.Addr().String(),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnState:    func(on bool, _ error) { states <- on },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	it, err := c.Publish(ctx, client.Source{Plain: true, Volunteers: true, Name: "x.bin", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	dl := m.URL + "/v1/items/" + it.ID.String()
	fetch := func() (int, []byte) {
		resp, err := http.Get(dl)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := fetch(); code != http.StatusOK || !bytes.Equal(b, data) {
		t.Fatalf("before the cut: got %d with %d bytes, want 200 with the item", code, len(b))
	}
	<-states // online
	if n := proxy.cut(); n == 0 {
		t.Fatal("proxy carried no connection to cut")
	}
	if on := <-states; on {
		t.Fatal("client did not notice the cut")
	}
	if on := <-states; !on {
		t.Fatal("client did not come back online")
	}
	waitFor(t, "item back online", 10*time.Second, func() bool {
		code, b := fetch()
		return code == http.StatusOK && bytes.Equal(b, data)
	})
}
