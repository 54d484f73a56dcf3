package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// creditPair opens a part stream between two real mesh nodes: the entry's
// side, read by an exitCredit, and the exit's side, played by the test.
func creditPair(t *testing.T, n int64) (*exitCredit, mesh.Stream) {
	t.Helper()
	entry, exit := rendezvoustest.NewNode(t), rendezvoustest.NewNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := entry.Connect(ctx, exit.Addrs()); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan mesh.Stream, 1)
	exit.Handle("/test/part", func(st mesh.Stream) { accepted <- st })
	st, err := entry.Open(ctx, exit.ID(), "/test/part")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Reset() })
	st.Write([]byte{0}) // the stream reaches the exit with its first byte
	var xs mesh.Stream
	select {
	case xs = <-accepted:
	case <-ctx.Done():
		t.Fatal("the exit's side of the stream never came")
	}
	t.Cleanup(func() { xs.Reset() })
	if _, err := io.ReadFull(xs, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c := &exitCredit{st: st, n: n, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.readLoop()
	return c, xs
}

// TestCreditWriter: the entry writes a forwarded part only up to the
// credit the exit granted, goes on as it grants more, and stops when the
// exit ends the part or grants credit beyond it.
func TestCreditWriter(t *testing.T) {
	t.Parallel()
	const n = 1 << 20
	data := bytes.Repeat([]byte("meshup!"), n/7+1)[:n]

	t.Run("writes within the credit", func(t *testing.T) {
		t.Parallel()
		c, xs := creditPair(t, n)
		w := &creditWriter{w: c.st, c: c, timeout: time.Minute}
		type result struct {
			n   int
			err error
		}
		wrote := make(chan result, 1)
		go func() {
			n, err := w.Write(data)
			wrote <- result{n, err}
		}()
		// Credit in three steps; the exit reads exactly what it granted.
		var got []byte
		for _, limit := range []int{100 << 10, 100<<10 + 1, 600 << 10} {
			xs.Write(proto.Ack{Acked: uint64(len(got)), Limit: uint64(limit)}.AppendFrame(nil))
			buf := make([]byte, limit-len(got))
			if _, err := io.ReadFull(xs, buf); err != nil {
				t.Fatalf("reading up to %d: %v", limit, err)
			}
			got = append(got, buf...)
		}
		// The exit ends the part: the writer has written exactly the
		// credit, not a byte more, and says why it stopped.
		xs.Write(proto.PartEnd{Status: proto.StatusCancelled, Reason: "consumer went away"}.AppendFrame(nil))
		var r result
		select {
		case r = <-wrote:
		case <-time.After(time.Minute):
			t.Fatalf("Write still blocked after the exit ended the part")
		}
		if r.n != len(got) || r.err == nil {
			t.Fatalf("Write: got %d bytes, error %v; want %d bytes (the credit) and an error", r.n, r.err, len(got))
		}
		var pe *proto.Error
		if !errors.As(r.err, &pe) || pe.Status != proto.StatusCancelled {
			t.Errorf("Write error: got %v, want the exit's status %v", r.err, proto.StatusCancelled)
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Error("the bytes the exit read are not the part's first bytes")
		}
	})

	t.Run("credit beyond the part", func(t *testing.T) {
		t.Parallel()
		c, xs := creditPair(t, n)
		xs.Write(proto.Ack{Limit: n + 1}.AppendFrame(nil))
		<-c.done
		if c.err == nil {
			t.Fatal("credit beyond the part's end accepted")
		}
		w := &creditWriter{w: c.st, c: c, timeout: time.Minute}
		if k, err := w.Write(data); k != 0 || err == nil {
			t.Errorf("Write after a bad credit: got %d bytes, error %v; want 0 and an error", k, err)
		}
	})

	t.Run("no credit", func(t *testing.T) {
		t.Parallel()
		c, _ := creditPair(t, n)
		w := &creditWriter{w: c.st, c: c, timeout: 50 * time.Millisecond}
		if k, err := w.Write(data); k != 0 || err == nil {
			t.Errorf("Write with no credit: got %d bytes, error %v; want 0 and an error", k, err)
		}
	})

	t.Run("whole part, then the exit's PartEnd", func(t *testing.T) {
		t.Parallel()
		c, xs := creditPair(t, n)
		xs.Write(proto.Ack{Limit: n}.AppendFrame(nil))
		w := &creditWriter{w: c.st, c: c, timeout: time.Minute}
		go func() {
			if _, err := io.ReadFull(xs, make([]byte, n)); err == nil {
				xs.Write(proto.PartEnd{Status: proto.StatusOK}.AppendFrame(nil))
			}
		}()
		if k, err := w.Write(data); k != n || err != nil {
			t.Fatalf("Write: got %d bytes, error %v; want %d and none", k, err, n)
		}
		<-c.done
		if c.err != nil || c.end.Status != proto.StatusOK {
			t.Errorf("end: got %v, error %v; want OK", c.end.Status, c.err)
		}
	})
}
