package proto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// # End-to-end encryption of items: format "e2e1"
//
// Publishers encrypt an item before any byte leaves them; relays and the
// rendezvous see its ciphertext and the ciphertext's size, nothing else.
// The format must keep items seekable (a plaintext byte range maps to a
// ciphertext byte range by arithmetic) and streamable while the publisher
// is still pushing (each chunk is checked on its own), and it must use only
// primitives WebCrypto has natively, so that the browser library needs no
// dependency.
//
// The construction is the STREAM online authenticated encryption of Hoang,
// Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption and its
// Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as age's payload uses it
// (age-encryption.org/v1, "payload"), with AES-256-GCM in place of
// ChaCha20-Poly1305, and the per-item key derived with HKDF bound to the
// item id, as Tink's AES-GCM-HKDF streaming AEAD does with its salt.
//
// Key. K is 32 bytes from a CSPRNG, chosen by the publisher for each item.
// It travels only in the share link's fragment, which browsers never send
// to a server:
//
//	https://RENDEZVOUS/i/ITEMID#k=BASE64URL(K)      (43 characters, no padding)
//
// Derived keys (HKDF-SHA256, RFC 5869; the item id is its 16 raw bytes):
//
//	payload key   Kp = HKDF(IKM=K, salt=ITEMID, info="meshup e2e1 payload",  L=32)
//	metadata key  Km = HKDF(IKM=K, salt=ITEMID, info="meshup e2e1 metadata", L=32)
//
// Binding Kp to the item id means chunks of another item fail to open even
// if a careless publisher reused K.
//
// Payload. The plaintext is cut into chunks of E2EChunkSize bytes; the last
// chunk holds the rest and may be full; an empty item is one empty last
// chunk. Chunk i (from 0) is sealed with AES-256-GCM under Kp with
//
//	nonce = uint88_be(i) || flag        (12 bytes; flag 0x01 on the last chunk, else 0x00)
//	AAD   = empty
//	ciphertext chunk = GCM ciphertext || 16-byte tag   (plaintext length + 16)
//
// and the ciphertext chunks are concatenated, nothing before or between
// them. The nonce binds each chunk to its index, and the last flag marks
// the end, so a relay cannot reorder chunks, splice in another item's
// chunks, or truncate at a chunk boundary without the reader noticing. A
// reader must fail on the first chunk that does not open, name it, and
// hand out no byte of it; it must also fail if a non-last chunk opens only
// with the last flag or the last one only without.
//
// Sizes. For plaintext size P the ciphertext has n = max(1, ceil(P/C))
// chunks and size S = P + 16n (C = E2EChunkSize). A reader computes P from
// S: n = ceil(S/(C+16)), P = S - 16n; S is invalid when S < 16, or when
// S > 16 and S mod (C+16) is between 1 and 16 (a last chunk without
// plaintext after a full one; only the empty item, S = 16, has an empty
// chunk). E2EPlainSize reports it.
//
// Ranges. Plaintext bytes [a, b] (inclusive) lie in chunks a/C through b/C;
// the reader fetches ciphertext bytes [(a/C)(C+16), min(S, (b/C+1)(C+16)))
// with an ordinary HTTP Range request, opens those chunks, and cuts
// [a, b] out of them. A resumed download resumes at a chunk boundary.
//
// Determinism, and the one thing a publisher must never do. Sealing is
// deterministic: the same chunk always gives the same ciphertext, so a
// publisher may push any ciphertext range again (orders overlap, relays
// fail) without harm. Sealing different bytes under the same (Kp, i) would
// reuse a GCM nonce, which loses confidentiality and integrity. Publishers
// therefore refuse orders for an item whose source changed (size or
// modification time differ from publish time) and publish it again under a
// fresh key.
//
// Metadata. Name, MIME type and modification time travel sealed in
// Publish.Meta:
//
//	plaintext = JSON {"name": STRING, "type": STRING, "modified": UNIX_SECONDS}
//	Meta      = base64url_nopad(nonce || AES-256-GCM(Km, nonce, plaintext, AAD="meshup e2e1 metadata"))
//
// with a fresh random 12-byte nonce each time it is sealed (a publisher that
// takes an item back after a reload seals it again). Sealed metadata is at
// most E2EMaxMeta bytes of text. The rendezvous stores and serves it (GET
// /v1/items/{id}/meta, field "meta") without reading it; an encrypted item's
// Publish.Name is empty and its MIME is application/octet-stream.
//
// Km depends on the item id, which the rendezvous assigns and the publisher
// learns only from Published. So a publisher publishes an encrypted item in
// two steps: a Publish with Enc and Size and no Meta; then, once Published
// names the id, a Publish that takes the item back (ID and Owner set) and
// carries Meta. On such a Publish the rendezvous replaces the stored Meta
// of an encrypted item (and only that; the rest of an item's metadata is
// fixed at publish). Until then /meta has no "meta" and readers show no
// name.
//
// Limits. At most E2EMaxChunks chunks per item (256 TiB of plaintext): far
// below the 2^88 nonces, and each key is used for one item only.
//
// Test vectors shared by the Go and JavaScript implementations live in
// testdata/e2e1-vectors.json; e2e_vectors_test.go documents its layout.

// E2E format constants.
const (
	// E2EVersion is the Publish.Enc value of items in this format.
	E2EVersion = "e2e1"
	// E2EKeySize is the size of an item key K.
	E2EKeySize = 32
	// E2EChunkSize is the plaintext size of every chunk but the last (64 KiB,
	// as age: small enough that a seek fetches little beyond what the player
	// wants, large enough that the 16-byte tags cost 0.02%).
	E2EChunkSize = 64 << 10
	// E2ETagSize is the AES-GCM tag appended to every chunk.
	E2ETagSize = 16
	// E2ESealedChunkSize is the ciphertext size of every chunk but the last.
	E2ESealedChunkSize = E2EChunkSize + E2ETagSize
	// E2EMaxChunks bounds the chunks of one item.
	E2EMaxChunks = 1 << 32
	// E2EMaxMeta bounds the text of sealed metadata (Publish.Meta).
	E2EMaxMeta = 4096
	// E2EFragmentKey is the name of the key in the share link's fragment.
	E2EFragmentKey = "k"
)

// HKDF info strings and the metadata AAD.
const (
	e2eInfoPayload  = "meshup e2e1 payload"
	e2eInfoMetadata = "meshup e2e1 metadata"
	e2eMetaAAD      = "meshup e2e1 metadata"
)

// E2E errors. A reader's failure on one chunk is an *E2EChunkError that
// wraps one of ErrE2EIntegrity, ErrE2ETruncated or ErrE2ETrailing.
var (
	// ErrE2EIntegrity means a chunk did not authenticate: altered, moved,
	// from another item, sealed under another key, or with the wrong last
	// flag.
	ErrE2EIntegrity = errors.New("proto: e2e chunk failed its integrity check")
	// ErrE2ETruncated means the ciphertext ended before a chunk the size
	// promised was complete.
	ErrE2ETruncated = errors.New("proto: e2e ciphertext truncated")
	// ErrE2ETrailing means bytes followed the last expected chunk.
	ErrE2ETrailing = errors.New("proto: e2e ciphertext has trailing bytes")
	// ErrE2ESize means a ciphertext or plaintext size is impossible in the
	// format (see E2EPlainSize) or above E2EMaxChunks chunks.
	ErrE2ESize = errors.New("proto: invalid e2e size")
	// ErrE2EKey means a share link fragment holds no valid item key.
	ErrE2EKey = errors.New("proto: bad e2e key in link fragment")
	// ErrE2EMeta means sealed metadata is malformed, too large, or did not
	// open under the item's metadata key.
	ErrE2EMeta = errors.New("proto: bad e2e metadata")
)

// E2EChunkError reports the chunk at which a reader stopped. Err is one of
// ErrE2EIntegrity, ErrE2ETruncated, ErrE2ETrailing; for ErrE2ETrailing
// Chunk is the index after the last chunk.
type E2EChunkError struct {
	Chunk uint64
	Err   error
}

func (e *E2EChunkError) Error() string {
	return fmt.Sprintf("e2e chunk %d: %v", e.Chunk, e.Err)
}

func (e *E2EChunkError) Unwrap() error { return e.Err }

// E2EKey is an item key K.
type E2EKey [E2EKeySize]byte

// NewE2EKey returns a fresh random item key.
func NewE2EKey() E2EKey {
	var k E2EKey
	rand.Read(k[:]) // never fails; see crypto/rand.Read
	return k
}

// String returns the base64url form of k (43 characters, no padding), as it
// appears in a link fragment.
func (k E2EKey) String() string { return base64.RawURLEncoding.EncodeToString(k[:]) }

// Fragment returns the share link fragment carrying k, without the '#':
// "k=BASE64URL(K)".
func (k E2EKey) Fragment() string { return E2EFragmentKey + "=" + k.String() }

// ParseE2EFragment finds the item key in a link fragment ("k=...", with or
// without a leading '#', possibly among other '&'-separated parameters).
// It reports ErrE2EKey when there is no key or it is malformed, and
// found=false (with a nil error) when the fragment carries no k parameter.
func ParseE2EFragment(fragment string) (k E2EKey, found bool, err error) {
	fragment = strings.TrimPrefix(fragment, "#")
	for _, kv := range strings.Split(fragment, "&") {
		name, val, _ := strings.Cut(kv, "=")
		if name != E2EFragmentKey {
			continue
		}
		if found {
			return k, true, fmt.Errorf("%w: more than one %q", ErrE2EKey, E2EFragmentKey)
		}
		found = true
		b, derr := base64.RawURLEncoding.DecodeString(val)
		if derr != nil || len(b) != E2EKeySize || base64.RawURLEncoding.EncodeToString(b) != val {
			return k, true, fmt.Errorf("%w: want %d bytes in unpadded base64url", ErrE2EKey, E2EKeySize)
		}
		copy(k[:], b)
	}
	return k, found, nil
}

// E2EDeriveKeys returns the payload key Kp and metadata key Km of item id
// under k (HKDF-SHA256, see the format above).
func E2EDeriveKeys(k E2EKey, id ItemID) (kp, km [32]byte) {
	p, err := hkdf.Key(sha256.New, k[:], id[:], e2eInfoPayload, 32)
	if err != nil {
		panic(err) // only for lengths above 255*32
	}
	m, err := hkdf.Key(sha256.New, k[:], id[:], e2eInfoMetadata, 32)
	if err != nil {
		panic(err)
	}
	copy(kp[:], p)
	copy(km[:], m)
	return kp, km
}

// E2EItem seals and opens the chunks and the metadata of one item. It is
// safe for concurrent use.
type E2EItem struct {
	payload  cipher.AEAD
	metadata cipher.AEAD
}

// NewE2EItem derives the keys of item id under k.
func NewE2EItem(k E2EKey, id ItemID) *E2EItem {
	kp, km := E2EDeriveKeys(k, id)
	return &E2EItem{payload: newGCM(kp), metadata: newGCM(km)}
}

func newGCM(key [32]byte) cipher.AEAD {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // 32-byte keys are always valid
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

// e2eNonce returns the nonce of chunk i: uint88_be(i) || flag.
func e2eNonce(i uint64, last bool) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[3:11], i)
	if last {
		n[11] = 1
	}
	return n
}

// SealChunk appends the sealed chunk i of plaintext plain to dst and returns
// the result. plain must be E2EChunkSize bytes unless last, and at most that
// when last. dst may be plain[:0] to seal in place, if its capacity holds
// the tag.
func (e *E2EItem) SealChunk(dst, plain []byte, i uint64, last bool) []byte {
	n := e2eNonce(i, last)
	return e.payload.Seal(dst, n[:], plain, nil)
}

// OpenChunk appends the plaintext of sealed chunk i to dst and returns it,
// or ErrE2EIntegrity (wrapped in an *E2EChunkError naming i). dst may be
// sealed[:0] to open in place.
func (e *E2EItem) OpenChunk(dst, sealed []byte, i uint64, last bool) ([]byte, error) {
	n := e2eNonce(i, last)
	out, err := e.payload.Open(dst, n[:], sealed, nil)
	if err != nil {
		return nil, &E2EChunkError{Chunk: i, Err: ErrE2EIntegrity}
	}
	return out, nil
}

// E2EChunks returns the number of chunks of an item of plaintext size p.
func E2EChunks(p int64) int64 {
	if p <= 0 {
		return 1
	}
	return (p + E2EChunkSize - 1) / E2EChunkSize
}

// E2ECipherSize returns the ciphertext size of an item of plaintext size p,
// or ErrE2ESize when p is negative or needs more than E2EMaxChunks chunks.
func E2ECipherSize(p int64) (int64, error) {
	if p < 0 || p > E2EMaxChunks*E2EChunkSize {
		return 0, fmt.Errorf("%w: plaintext size %d", ErrE2ESize, p)
	}
	return p + E2ETagSize*E2EChunks(p), nil
}

// E2EPlainSize returns the plaintext size of an item of ciphertext size s,
// or ErrE2ESize when no plaintext has that ciphertext size: s < 16, or
// s > 16 with s mod (C+16) between 1 and 16 (a last chunk with no
// plaintext after a full one), or more than E2EMaxChunks chunks.
func E2EPlainSize(s int64) (int64, error) {
	if s == E2ETagSize {
		return 0, nil
	}
	if s > E2EMaxChunks*E2ESealedChunkSize {
		return 0, fmt.Errorf("%w: ciphertext size %d", ErrE2ESize, s)
	}
	if r := s % E2ESealedChunkSize; s < E2ETagSize || (r >= 1 && r <= E2ETagSize) {
		return 0, fmt.Errorf("%w: ciphertext size %d", ErrE2ESize, s)
	}
	n := (s + E2ESealedChunkSize - 1) / E2ESealedChunkSize
	if n > E2EMaxChunks {
		return 0, fmt.Errorf("%w: ciphertext size %d", ErrE2ESize, s)
	}
	return s - E2ETagSize*n, nil
}

// E2ECipherRange maps the plaintext bytes [first, last] (inclusive, as in
// an HTTP Range; 0 <= first <= last < plaintext size) of an item of
// ciphertext size s to the ciphertext bytes [off, end) that hold them,
// which start at chunk `chunk`. The plaintext of those chunks begins at
// plaintext offset chunk*E2EChunkSize, so the wanted bytes start skip =
// first - chunk*E2EChunkSize bytes into it.
func E2ECipherRange(first, last, s int64) (off, end int64, chunk uint64) {
	c0 := first / E2EChunkSize
	c1 := last / E2EChunkSize
	return c0 * E2ESealedChunkSize, min(s, (c1+1)*E2ESealedChunkSize), uint64(c0)
}

// E2EMeta is the plaintext of an item's sealed metadata.
type E2EMeta struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Modified is the modification time in Unix seconds.
	Modified int64 `json:"modified"`
}

// SealMeta seals m with a fresh random nonce and returns Publish.Meta, or
// ErrE2EMeta when the result would exceed E2EMaxMeta.
func (e *E2EItem) SealMeta(m E2EMeta) (string, error) {
	var nonce [12]byte
	rand.Read(nonce[:])
	return e.sealMeta(m, nonce)
}

func (e *E2EItem) sealMeta(m E2EMeta, nonce [12]byte) (string, error) {
	plain, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrE2EMeta, err)
	}
	sealed := e.metadata.Seal(nonce[:], nonce[:], plain, []byte(e2eMetaAAD))
	s := base64.RawURLEncoding.EncodeToString(sealed)
	if len(s) > E2EMaxMeta {
		return "", fmt.Errorf("%w: %d bytes sealed, limit %d", ErrE2EMeta, len(s), E2EMaxMeta)
	}
	return s, nil
}

// OpenMeta opens Publish.Meta, or reports ErrE2EMeta.
func (e *E2EItem) OpenMeta(s string) (E2EMeta, error) {
	var m E2EMeta
	if len(s) > E2EMaxMeta {
		return m, fmt.Errorf("%w: %d bytes, limit %d", ErrE2EMeta, len(s), E2EMaxMeta)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 12+E2ETagSize {
		return m, fmt.Errorf("%w: not base64url of nonce and ciphertext", ErrE2EMeta)
	}
	plain, err := e.metadata.Open(nil, b[:12], b[12:], []byte(e2eMetaAAD))
	if err != nil {
		return m, fmt.Errorf("%w: does not open under this key", ErrE2EMeta)
	}
	if err := json.Unmarshal(plain, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrE2EMeta, err)
	}
	return m, nil
}

// E2EReader decrypts a run of ciphertext chunks as it reads them. Read
// hands out a chunk's plaintext only after the whole chunk authenticated;
// on the first chunk that does not, or when the ciphertext ends early or
// runs on past the run, it returns an *E2EChunkError naming the chunk and
// returns it again on every later call.
type E2EReader struct {
	item         *E2EItem
	src          io.Reader
	next         uint64 // index of the next chunk to read
	end          uint64 // index after the last chunk of the run
	final        uint64 // index of the item's last chunk
	lastSealed   int64  // sealed size of the item's last chunk
	buf          []byte // one sealed chunk
	openedReader        // plain aliases buf
}

// NewReader returns a reader of the plaintext of an item of ciphertext size
// s from src, which must yield the ciphertext from the start of chunk
// `chunk` up to ciphertext offset end (a chunk boundary or s; end = s reads
// to the end of the item). Reading past end is an error: src must end
// there. NewReader reports ErrE2ESize when s, chunk or end do not fit the
// format.
func (e *E2EItem) NewReader(src io.Reader, s int64, chunk uint64, end int64) (*E2EReader, error) {
	p, err := E2EPlainSize(s)
	if err != nil {
		return nil, err
	}
	n := uint64(E2EChunks(p))
	endChunk := uint64((end + E2ESealedChunkSize - 1) / E2ESealedChunkSize)
	if end < 0 || end > s || (end != s && end%E2ESealedChunkSize != 0) || chunk > endChunk || endChunk > n {
		return nil, fmt.Errorf("%w: chunks from %d to ciphertext offset %d of %d", ErrE2ESize, chunk, end, s)
	}
	r := &E2EReader{item: e, src: src, next: chunk, end: endChunk, final: n - 1,
		lastSealed: s - int64(n-1)*E2ESealedChunkSize,
		buf:        make([]byte, E2ESealedChunkSize)}
	r.openNext = r.fill
	return r, nil
}

// Chunk returns the index of the next chunk the reader will read: after an
// error, the chunk that failed.
func (r *E2EReader) Chunk() uint64 { return r.next }

// fill reads and opens the next chunk into r.plain.
func (r *E2EReader) fill() error {
	if r.next >= r.end {
		// The run is complete: the source must end here.
		var one [1]byte
		for {
			n, err := r.src.Read(one[:])
			if n > 0 {
				return &E2EChunkError{Chunk: r.next, Err: ErrE2ETrailing}
			}
			if err == io.EOF {
				return io.EOF
			}
			if err != nil {
				return fmt.Errorf("e2e chunk %d: %w", r.next, err)
			}
		}
	}
	last := r.next == r.final
	size := E2ESealedChunkSize
	if last {
		size = int(r.lastSealed)
	}
	buf := r.buf[:size]
	if _, err := io.ReadFull(r.src, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return &E2EChunkError{Chunk: r.next, Err: ErrE2ETruncated}
		}
		return fmt.Errorf("e2e chunk %d: %w", r.next, err)
	}
	plain, err := r.item.OpenChunk(buf[:0], buf, r.next, last)
	if err != nil {
		return err
	}
	r.plain = plain
	r.next++
	return nil
}
