package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/mesh/meshtest"
)

// TestLiveCommand: `cmd | meshup live` prints a link; two `meshup get
// LINK` readers joined before the first byte receive every byte of stdin
// and end cleanly when stdin ends.
func TestLiveCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := startMeshWith(t, devmesh.Config{Relays: 2})
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	liveErr := make(chan error, 1)
	go func() {
		liveErr <- liveFrom(ctx, []string{"--rendezvous", m.URL}, stdinR, outW, io.Discard)
		outW.Close()
	}()
	link, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("meshup live printed no link: %v (%v)", err, <-liveErr)
	}
	link = strings.TrimSpace(link)
	if !isLiveURL(link) {
		t.Fatalf("link %q is not a live channel's", link)
	}
	stdinW.Write(nil) // the push has begun
	subscribers := func() (n int64) {
		for _, r := range m.Relays {
			n += r.LiveStats().Subscribers
		}
		return n
	}
	meshtest.Eventually(t, 10*time.Second, "the channel on its relay", func() bool {
		for _, r := range m.Relays {
			if r.LiveStats().Channels == 1 {
				return true
			}
		}
		return false
	})
	type got struct {
		b   []byte
		err error
	}
	results := make(chan got, 2)
	outs := [2]*progressWriter{newProgressWriter(), newProgressWriter()}
	for i := range 2 {
		go func() {
			err := runGet(ctx, []string{link, "-o", "-"}, outs[i], io.Discard)
			results <- got{outs[i].bytes(), err}
		}()
	}
	meshtest.Eventually(t, 10*time.Second, "two readers subscribed", func() bool { return subscribers() == 2 })
	// stdin as a live source would give it: never far ahead of the
	// readers (a publisher much faster than its readers has them cut
	// off, by design).
	data := meshtest.RandomBytes(3<<20, 5)
	const chunk = 64 << 10
	for off := 0; off < len(data); off += chunk {
		stdinW.Write(data[off:min(off+chunk, len(data))])
		for _, o := range outs {
			o.waitFor(ctx, off+chunk-256<<10)
		}
	}
	stdinW.Close()
	if err := <-liveErr; err != nil {
		t.Fatalf("meshup live: %v", err)
	}
	for range 2 {
		r := <-results
		if r.err != nil || !bytes.Equal(r.b, data) {
			t.Errorf("meshup get: %d bytes (first diff at %d), err %v; want the %d bytes of stdin", len(r.b), meshtest.FirstDiff(r.b, data), r.err, len(data))
		}
	}
}

// progressWriter is a bytes.Buffer whose length can be waited for.
type progressWriter struct {
	mu   sync.Mutex // guards buf
	buf  bytes.Buffer
	wake chan struct{}
}

func newProgressWriter() *progressWriter { return &progressWriter{wake: make(chan struct{}, 1)} }

func (w *progressWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return w.buf.Write(p)
}

func (w *progressWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}

// waitFor waits until n bytes were written, or ctx is done.
func (w *progressWriter) waitFor(ctx context.Context, n int) {
	for {
		w.mu.Lock()
		l := w.buf.Len()
		w.mu.Unlock()
		if l >= n {
			return
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return
		}
	}
}
