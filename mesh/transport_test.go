package mesh_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/meshup/meshup/mesh"
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
