package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/meshup/meshup/proto"
)

// This file is the publisher's side of end-to-end encryption (format e2e1,
// proto/e2e.go): the item is published with its ciphertext size, and every
// ordered ciphertext range is sealed from the source when it is pushed.

// encrypted is the sealing state of an encrypted item.
type encrypted struct {
	item       *proto.E2EItem
	src        io.ReaderAt
	plainSize  int64
	cipherSize int64
	chunks     int64
	meta       string // sealed metadata, sent with the second Publish

	// The source's size and modification time at publish, when the source
	// can tell them (an *os.File can): sealing other bytes under the same
	// chunk index would reuse a GCM nonce, so orders are refused once the
	// source changed.
	stat    func() (os.FileInfo, error)
	size    int64
	modTime time.Time
}

// chunkPool holds buffers of one sealed chunk, for chunks that straddle a
// frame boundary.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, proto.E2ESealedChunkSize); return &b }}

// statter is implemented by *os.File.
type statter interface {
	Stat() (os.FileInfo, error)
}

// publishEncrypted publishes src end-to-end encrypted, in two steps (see
// proto/e2e.go, "Metadata"): the ciphertext size first, then the sealed
// metadata once the rendezvous has named the item. With owner set it takes
// back item id (see Reclaim) under src.Key, in one step since the id is
// known.
func (c *Client) publishEncrypted(ctx context.Context, src Source, id proto.ItemID, owner string) (*Item, error) {
	cipherSize, err := proto.E2ECipherSize(src.Size)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	enc := &encrypted{src: src.Reader, plainSize: src.Size, cipherSize: cipherSize, chunks: proto.E2EChunks(src.Size)}
	modified := src.Modified
	if st, ok := src.Reader.(statter); ok {
		fi, err := st.Stat()
		if err != nil {
			return nil, fmt.Errorf("client: stat source: %w", err)
		}
		enc.stat, enc.size, enc.modTime = st.Stat, fi.Size(), fi.ModTime()
		if modified.IsZero() {
			modified = fi.ModTime()
		}
	}
	var mod int64
	if !modified.IsZero() {
		mod = modified.Unix()
	}
	meta := proto.E2EMeta{Name: src.Name, Type: src.MIME, Modified: mod}
	key := src.Key
	p := proto.Publish{Kind: src.Kind, MIME: "application/octet-stream", Size: cipherSize, Enc: proto.E2EVersion, Via: src.Via, Swarm: src.Swarm}
	if owner != "" {
		if key == (proto.E2EKey{}) {
			return nil, errors.New("client: taking back an encrypted item needs its key (Source.Key)")
		}
		enc.item = proto.NewE2EItem(key, id)
		if enc.meta, err = enc.item.SealMeta(meta); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		p.ID, p.Owner, p.Meta = id, owner, enc.meta
	} else {
		key = proto.NewE2EKey()
	}
	pub, err := c.publishRetry(ctx, p)
	if err != nil {
		return nil, err
	}
	if enc.item == nil {
		enc.item = proto.NewE2EItem(key, pub.ID)
		enc.meta, err = enc.item.SealMeta(meta)
		if err != nil {
			c.send(proto.Unpublish{ID: pub.ID})
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	frag := "#" + key.Fragment()
	it := &Item{
		ID: pub.ID, ShareURL: pub.ShareURL + frag, DownloadURL: pub.DownloadURL + frag,
		Encrypted: true, Key: key,
		src: src, owner: pub.Owner, size: cipherSize, enc: enc, Expires: expiresAt(pub),
	}
	c.registerItem(it)
	if owner != "" {
		return it, nil // the metadata went with the reclaim
	}
	// The second step. If the connection drops first, the reclaim after
	// the reconnect carries the metadata instead.
	if _, err := c.request(ctx, it.publishMsg(newRef())); err != nil && !errors.Is(err, errOffline) {
		c.Unpublish(it.ID)
		return nil, fmt.Errorf("client: send sealed metadata: %w", err)
	}
	return it, nil
}

// publishMsg is the Publish that takes it back online (after a reconnect,
// or to deliver an encrypted item's sealed metadata).
func (it *Item) publishMsg(ref string) proto.Publish {
	p := proto.Publish{
		Ref: ref, ID: it.ID, Owner: it.owner,
		Kind: it.src.Kind, Name: it.src.Name, MIME: it.src.MIME, Size: it.size, Text: it.src.Text,
		Via: it.src.Via, Volunteers: it.src.Volunteers, Swarm: it.src.Swarm,
	}
	if it.enc != nil {
		p.Name, p.MIME, p.Enc, p.Meta, p.Volunteers = "", "application/octet-stream", proto.E2EVersion, it.enc.meta, false
	}
	return p
}

// ErrSourceChanged means an encrypted item's source changed size or
// modification time since it was published; it must be published again
// (under a fresh key).
var ErrSourceChanged = errors.New("client: source changed since it was published; publish it again")

// checkSource reports ErrSourceChanged when an encrypted item's source is
// no longer what was published.
func (it *Item) checkSource() error {
	if it.enc == nil || it.enc.stat == nil {
		return nil
	}
	fi, err := it.enc.stat()
	if err != nil {
		return fmt.Errorf("client: stat source: %w", err)
	}
	if fi.Size() != it.enc.size || !fi.ModTime().Equal(it.enc.modTime) {
		return fmt.Errorf("%w (size %d, was %d; modified %s, was %s)", ErrSourceChanged,
			fi.Size(), it.enc.size, fi.ModTime().Format(time.RFC3339Nano), it.enc.modTime.Format(time.RFC3339Nano))
	}
	return nil
}

// alignFrame shortens a frame of k bytes at ciphertext offset off so that
// it ends on a chunk boundary, when that leaves any bytes: then every chunk
// is sealed once, in place in the frame.
func (e *encrypted) alignFrame(off int64, k uint64) uint64 {
	end := off + int64(k)
	if end == e.cipherSize {
		return k
	}
	if r := uint64(end % proto.E2ESealedChunkSize); r < k {
		return k - r
	}
	return k
}

// readAt fills dst with the ciphertext at off: it reads the plaintext of
// each chunk dst covers from the source and seals it, in place when the
// whole chunk fits in dst.
func (e *encrypted) readAt(dst []byte, off int64) error {
	if off < 0 || off+int64(len(dst)) > e.cipherSize {
		return fmt.Errorf("read ciphertext [%d, %d): outside the item's %d bytes", off, off+int64(len(dst)), e.cipherSize)
	}
	for len(dst) > 0 {
		i := off / proto.E2ESealedChunkSize
		in := off - i*proto.E2ESealedChunkSize
		pOff := i * proto.E2EChunkSize
		pLen := min(int64(proto.E2EChunkSize), e.plainSize-pOff)
		sealedLen := pLen + proto.E2ETagSize
		last := i == e.chunks-1
		if in == 0 && int64(len(dst)) >= sealedLen {
			if err := readFull(e.src, dst[:pLen], pOff); err != nil {
				return err
			}
			e.item.SealChunk(dst[:0], dst[:pLen], uint64(i), last)
			dst = dst[sealedLen:]
			off += sealedLen
			continue
		}
		bp := chunkPool.Get().(*[]byte)
		buf := (*bp)[:pLen]
		if err := readFull(e.src, buf, pOff); err != nil {
			chunkPool.Put(bp)
			return err
		}
		sealed := e.item.SealChunk(buf[:0], buf, uint64(i), last)
		n := copy(dst, sealed[in:])
		chunkPool.Put(bp)
		dst = dst[n:]
		off += int64(n)
	}
	return nil
}
