package client

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/meshup/meshup/proto"
)

// TestSealRanges checks that sealing any ciphertext range from the source
// gives exactly those bytes of the whole ciphertext, whatever the range's
// alignment to chunks, and that alignFrame only ever shortens a frame to a
// chunk boundary.
func TestSealRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int64{0, 1, proto.E2EChunkSize, 3*proto.E2EChunkSize + 17} {
		plain := make([]byte, size)
		for i := range plain {
			plain[i] = byte(rng.Uint32())
		}
		key, id := proto.NewE2EKey(), proto.NewItemID()
		item := proto.NewE2EItem(key, id)
		var whole []byte
		n := proto.E2EChunks(size)
		for i := int64(0); i < n; i++ {
			whole = item.SealChunk(whole, plain[i*proto.E2EChunkSize:min(size, (i+1)*proto.E2EChunkSize)], uint64(i), i == n-1)
		}
		cs, _ := proto.E2ECipherSize(size)
		e := &encrypted{item: item, src: bytes.NewReader(plain), plainSize: size, cipherSize: cs, chunks: n}
		for range 300 {
			off := rng.Int64N(cs)
			k := 1 + rng.Int64N(cs-off)
			dst := make([]byte, k)
			if err := e.readAt(dst, off); err != nil {
				t.Fatalf("size %d: readAt(%d, %d): %v", size, off, k, err)
			}
			if !bytes.Equal(dst, whole[off:off+k]) {
				t.Fatalf("size %d: readAt(%d, %d) differs from the ciphertext", size, off, k)
			}
			a := int64(e.alignFrame(off, uint64(k)))
			if a <= 0 || a > k || (off+a != cs && a != k && (off+a)%proto.E2ESealedChunkSize != 0) {
				t.Fatalf("size %d: alignFrame(%d, %d) = %d", size, off, k, a)
			}
		}
		if err := e.readAt(make([]byte, 1), cs); err == nil {
			t.Errorf("size %d: readAt past the end: nil error", size)
		}
	}
}
