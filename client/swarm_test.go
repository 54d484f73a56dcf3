package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay/relaytest"
)

// pauseWriter hashes what it is given; when the bytes written cross at,
// it calls hook once, holding the download until hook returns.
type pauseWriter struct {
	h    io.Writer
	n    int64
	at   int64
	hook func()
	once sync.Once
}

func (p *pauseWriter) Write(b []byte) (int, error) {
	if p.n+int64(len(b)) >= p.at {
		p.once.Do(p.hook)
	}
	p.n += int64(len(b))
	return p.h.Write(b)
}

// TestSwarmPublish (issue 10, swarm upload): two clients publish one
// encrypted item, the second joining with the first's id, owner secret and
// key (as `meshup send --swarm --state FILE` shares them). Both push parts
// of one download; one closes half-way and the download completes intact
// through the other. The second member's reconnect rejoins rather than
// pushing the first out, and a member announcing another size is refused
// with StatusConflict.
func TestSwarmPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ackedA, ackedB atomic.Int64
	a := e.newClient(t, client.Config{OnProgress: func(p client.Progress) { ackedA.Store(p.Acked) }})
	proxy := newCutProxy(t, strings.TrimPrefix(e.rv.URL, "http://"))
	b, err := client.New(client.Config{
		Rendezvous: "http://" + proxy.ln.Addr().String(),
		Logger:     relaytest.Logger(t),
		OnProgress: func(p client.Progress) { ackedB.Store(p.Acked) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	data := meshtest.RandomBytes(12*partSize+321, 77)
	want := sha256.Sum256(data)
	itA := publish(t, a, client.Source{Name: "swarm.bin", Size: int64(len(data)), Reader: bytes.NewReader(data), Swarm: true})
	src := client.Source{Name: "swarm.bin", Size: int64(len(data)), Reader: bytes.NewReader(data), Swarm: true, Key: itA.Key}
	itB, err := b.Reclaim(ctx(t), src, itA.ID, itA.Owner())
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	if itB.ShareURL != itA.ShareURL {
		t.Fatalf("joined item's link %q, want %q", itB.ShareURL, itA.ShareURL)
	}

	// Another size: refused.
	c := e.newClient(t, client.Config{})
	short := client.Source{Name: "swarm.bin", Size: int64(len(data) - 1), Reader: bytes.NewReader(data[1:]), Swarm: true, Key: itA.Key}
	_, err = c.Reclaim(ctx(t), short, itA.ID, itA.Owner())
	if pe := (*proto.Error)(nil); !errors.As(err, &pe) || pe.Status != proto.StatusConflict {
		t.Fatalf("join with another size: got %v, want status %d", err, proto.StatusConflict)
	}

	// b's control connection drops; it comes back and rejoins.
	reclaims := e.rv.Server.Stats().Reclaims
	proxy.cut()
	eventually(t, "b to rejoin", func() bool { return e.rv.Server.Stats().Reclaims > reclaims })

	h := sha256.New()
	var bAtClose int64
	w := &pauseWriter{h: h, at: int64(len(data)) / 2, hook: func() {
		// Both members carried parts of the first half (orders
		// alternate): a is still a member after b's reconnect.
		eventually(t, "both members to push parts", func() bool { return ackedA.Load() > 0 && ackedB.Load() > 0 })
		bAtClose = ackedB.Load()
		a.Close()
	}}
	dctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	n, err := client.DownloadTo(dctx, itA.ShareURL, w, client.FileOptions{})
	if err != nil || n != int64(len(data)) {
		t.Fatalf("download: %d bytes, %v; want %d", n, err, len(data))
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("download SHA-256 %x, want %x", got, want)
	}
	if ackedB.Load() <= bAtClose {
		t.Errorf("b pushed %d bytes before a left and %d in all: nothing after", bAtClose, ackedB.Load())
	}
	if st := e.rv.Server.Stats(); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("rendezvous items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
}
