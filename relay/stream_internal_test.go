package relay

import (
	"errors"
	"testing"

	"github.com/meshup/meshup/proto"
)

// TestPinnedMemory sends 1-byte frames up to the window: the stream pins
// the window's bytes plus at most one buffer, not a 4 KiB buffer per
// frame, and the bytes stay in order.
func TestPinnedMemory(t *testing.T) {
	const window = 64 << 10
	s := &Server{pool: newBufPool(proto.DefaultMaxFrame)}
	ps := &partStream{s: s, n: 1 << 20, window: window, wake: make(chan struct{}, 1)}
	for i := range window {
		b := s.pool.get(1)
		b[0] = byte(i % 251)
		if err := ps.put(b); err != nil {
			t.Fatalf("put byte %d: %v", i, err)
		}
	}
	pinned, n := 0, 0
	for _, c := range ps.chunks {
		pinned += cap(c)
		for _, v := range c {
			if v != byte(n%251) {
				t.Fatalf("byte %d: got %d, want %d", n, v, n%251)
			}
			n++
		}
	}
	if n != window {
		t.Fatalf("queued %d bytes, want %d", n, window)
	}
	if limit := window + 1<<minBufShift; pinned > limit {
		t.Errorf("pinned %d bytes in %d chunks, want at most %d", pinned, len(ps.chunks), limit)
	}
	// One byte beyond the window is a flow violation, refused before a
	// buffer is taken.
	var pe *proto.Error
	if err := ps.admit(1); !errors.As(err, &pe) || pe.Status != proto.StatusFlowViolation {
		t.Errorf("admit beyond the window: got %v, want a flow violation", err)
	}

	// Mixed sizes: every chunk but the last is full.
	ps = &partStream{s: s, n: 1 << 20, window: 1 << 20, wake: make(chan struct{}, 1)}
	for _, k := range []int{1, 4095, 3, 5000, 70000, 1, 9000, 65536} {
		if err := ps.put(s.pool.get(k)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range ps.chunks[:len(ps.chunks)-1] {
		if len(c) != cap(c) {
			t.Errorf("chunk %d of %d: %d of %d bytes used, want full", i, len(ps.chunks), len(c), cap(c))
		}
	}
}
