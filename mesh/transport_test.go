package mesh_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/mesh/meshtest"
)

// TestStreamsPreferTCP connects two nodes that both listen on TCP and
// QUIC: the connection is TCP with TLS (QUIC costs three to four times the
// CPU for the same bytes, see transport.go), and concurrent streams carry
// several MiB both ways intact through the batched TLS writes.
func TestStreamsPreferTCP(t *testing.T) {
	t.Parallel()
	a := newNode(t, mesh.Config{})
	b := newNode(t, mesh.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := a.Connect(ctx, b.Addrs()); err != nil {
		t.Fatal(err)
	}
	b.Handle("/test/echo", func(st mesh.Stream) {
		defer st.Close()
		io.Copy(st, st)
	})

	const streams, size = 4, 3 << 20
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := a.Open(ctx, b.ID(), "/test/echo")
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Close()
			if addr := st.RemoteAddr(); !strings.Contains(addr, "/tcp/") {
				t.Errorf("stream %d runs over %s, want TCP", i, addr)
			}
			payload := make([]byte, size)
			rand.NewChaCha8([32]byte{byte(i)}).Read(payload)
			go func() {
				// Writes of odd sizes, so that records and yamux frames
				// do not line up with them.
				for rest := payload; len(rest) > 0; {
					n := min(len(rest), 1+rand.IntN(200<<10))
					if _, err := st.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("stream %d: echoed %d bytes, %v; want the %d bytes sent", i, len(got), err, size)
			}
		}()
	}
	wg.Wait()
}

// TestManyStreamsPerPeer holds 300 streams of one protocol from one peer
// open at once: go-libp2p's default resource manager reset the 76th (on a
// 24 GiB machine), below meshup's own limits (128 forwarded parts from
// one entry relay, 256 tunnelled connections into one relay). With
// MaxStreamsPerPeer 100, the 101st is refused.
func TestManyStreamsPerPeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		max, open, want int
	}{
		{0, 300, 300},   // DefaultMaxStreamsPerPeer
		{100, 150, 100}, // the limit binds
	} {
		a := newNode(t, mesh.Config{MaxStreamsPerPeer: tc.max})
		b := newNode(t, mesh.Config{MaxStreamsPerPeer: tc.max})
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if _, err := a.Connect(ctx, b.Addrs()); err != nil {
			t.Fatal(err)
		}
		hold := make(chan struct{})
		b.Handle("/test/hold", func(st mesh.Stream) {
			st.Write([]byte{1})
			<-hold
			st.Close()
		})
		opened := 0
		for range tc.open {
			st, err := a.Open(ctx, b.ID(), "/test/hold")
			if err != nil {
				break
			}
			defer st.Close()
			// The handler's byte proves b accepted the stream; a refused
			// one is reset.
			if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
				break
			}
			opened++
		}
		close(hold)
		if opened != tc.want {
			t.Errorf("MaxStreamsPerPeer %d: %d streams open at once, want %d", tc.max, opened, tc.want)
		}
	}
}

// TestMaxMemory: a peer opens 100 streams to a node and fills each one's
// first receive window (256 KiB) with bytes the node never reads. With
// go-libp2p's default MaxMemory (an eighth of the machine's memory) the
// node holds all 25 MiB. With 16 MiB it holds 64 streams' worth, and the
// 65th stream, whose window does not fit, ends the peer's connection.
func TestMaxMemory(t *testing.T) {
	t.Parallel()
	const window = 256 << 10 // yamux's first receive window of a stream
	for _, limitSet := range []int64{0, 16 << 20} {
		a := newNode(t, mesh.Config{})
		b := newNode(t, mesh.Config{MaxMemory: limitSet})
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if _, err := a.Connect(ctx, b.Addrs()); err != nil {
			t.Fatal(err)
		}
		hold := make(chan struct{})
		b.Handle("/test/unread", func(st mesh.Stream) {
			st.Write([]byte{1})
			<-hold // never reads what the peer sent
			st.Close()
		})
		opened, peak := 0, int64(0)
		for range 100 {
			st, err := a.Open(ctx, b.ID(), "/test/unread")
			if err != nil {
				break
			}
			defer st.Close()
			// The handler's byte proves b accepted the stream; a refused
			// one is reset.
			if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
				break
			}
			st.SetWriteDeadline(time.Now().Add(wait))
			// The window less what protocol negotiation took of it.
			if _, err := st.Write(make([]byte, window-1<<10)); err != nil {
				t.Fatalf("stream %d: writing its first window: %v", opened, err)
			}
			opened++
			used, _ := b.Memory()
			peak = max(peak, used)
		}
		_, limit := b.Memory()
		close(hold)
		t.Logf("MaxMemory %d: %d streams accepted, at most %d bytes held, limit %d", limitSet, opened, peak, limit)
		switch {
		case limitSet == 0 && (opened != 100 || peak < 100*window || limit < 64<<20):
			t.Errorf("default MaxMemory: %d streams, %d bytes held, limit %d; want 100 streams and their windows held", opened, peak, limit)
		case limitSet != 0 && (opened != int(limitSet/window) || peak > limitSet || limit != limitSet):
			t.Errorf("MaxMemory %d: %d streams, %d bytes held, limit %d; want %d streams within the limit", limitSet, opened, peak, limit, limitSet/window)
		}
		if limitSet != 0 {
			meshtest.Eventually(t, wait, "the peer whose stream did not fit disconnected", func() bool { return !a.Connected(b.ID()) })
		}
	}
}
