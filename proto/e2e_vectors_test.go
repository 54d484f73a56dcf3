package proto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"testing"
)

var updateVectors = flag.Bool("update", false, "rewrite testdata/e2e1-vectors.json from the Go implementation")

const e2eVectorsFile = "testdata/e2e1-vectors.json"

// The layout of testdata/e2e1-vectors.json, shared with the JavaScript
// implementation (client/web). All byte strings are lowercase hex unless the
// field name says otherwise; sizes are byte counts.
//
//	comment             free text
//	format              "e2e1"
//	chunk_size          E2EChunkSize (plaintext bytes per chunk)
//	tag_size            E2ETagSize
//	key_hex             the item key K
//	key_fragment        the share link fragment carrying K, without '#'
//	item_id             the item id, text form (26 base32 characters)
//	item_id_hex         the item id, its 16 raw bytes (the HKDF salt)
//	payload_key_hex     Kp = HKDF-SHA256(K, salt=item id, "meshup e2e1 payload", 32)
//	metadata_key_hex    Km = HKDF-SHA256(K, salt=item id, "meshup e2e1 metadata", 32)
//	plaintext_rule      how every payload plaintext is made: byte j is j mod 251
//	payloads[]          one item each, sealed under K for item_id:
//	  plain_size        P
//	  cipher_size       S
//	  chunks            number of chunks n
//	  cipher_sha256     SHA-256 of the whole ciphertext
//	  chunk_tags_hex[]  the 16-byte tag that ends each chunk, in order
//	  cipher_hex        the whole ciphertext (only for small P)
//	metadata            a sealed metadata vector:
//	  nonce_hex         the 12-byte nonce used (fixed here; random in use)
//	  plaintext         the exact JSON text sealed (UTF-8)
//	  meta              the resulting Publish.Meta string
//	  negative[]        {name, meta, key_hex}: must fail to open (key_hex
//	                    is the K to try, derived for item_id as usual)
//	sizes[]             {cipher_size, valid, plain_size}: E2EPlainSize
//	                    (plain_size is 0 when not valid)
//	ranges[]            {cipher_size, first, last, cipher_off, cipher_end,
//	                    chunk, skip}: plaintext bytes [first, last]
//	                    inclusive live in ciphertext [cipher_off, cipher_end),
//	                    which starts at chunk `chunk`; the wanted bytes start
//	                    `skip` bytes into the plaintext of those chunks
//	fragments[]         {fragment, found, valid, key_hex}: parsing a link
//	                    fragment (key_hex only when valid)
//	negative[]          tampered payloads. Take the ciphertext of the payload
//	                    with plain_size = payload, apply op, and read it
//	                    whole (from chunk 0) with a reader told ciphertext
//	                    size claimed_size (or the payload's cipher_size when
//	                    claimed_size is 0), key key_hex (or key_hex above
//	                    when empty) and item id item_id. The reader must
//	                    fail with `error` at chunk `chunk` after handing out
//	                    exactly plain_ok bytes (all correct). op is one of:
//	    {"flip": OFFSET}           XOR the byte at OFFSET with 0x01
//	    {"drop_chunk": I}          remove sealed chunk I
//	    {"swap_chunks": [I, J]}    exchange sealed chunks I and J (both full)
//	    {"truncate": LENGTH}       keep the first LENGTH bytes
//	    {"append_hex": HEX}        add bytes after the end
//	    {"other_item_hex": ID}     use the payload sealed for item id ID
//	                               (16 bytes hex) under the same K instead
//	    {}                         no change (with claimed_size or key_hex)
//	  error             "integrity" (a chunk did not authenticate),
//	                    "truncated" (the ciphertext ended inside or before a
//	                    chunk the size promised), or "trailing" (bytes after
//	                    the last chunk; chunk is then the count of chunks)
type e2eVectors struct {
	Comment        string           `json:"comment"`
	Format         string           `json:"format"`
	ChunkSize      int              `json:"chunk_size"`
	TagSize        int              `json:"tag_size"`
	KeyHex         string           `json:"key_hex"`
	KeyFragment    string           `json:"key_fragment"`
	ItemID         string           `json:"item_id"`
	ItemIDHex      string           `json:"item_id_hex"`
	PayloadKeyHex  string           `json:"payload_key_hex"`
	MetadataKeyHex string           `json:"metadata_key_hex"`
	PlaintextRule  string           `json:"plaintext_rule"`
	Payloads       []e2ePayloadVec  `json:"payloads"`
	Metadata       e2eMetaVec       `json:"metadata"`
	Sizes          []e2eSizeVec     `json:"sizes"`
	Ranges         []e2eRangeVec    `json:"ranges"`
	Fragments      []e2eFragmentVec `json:"fragments"`
	Negative       []e2eNegativeVec `json:"negative"`
}

type e2ePayloadVec struct {
	PlainSize    int64    `json:"plain_size"`
	CipherSize   int64    `json:"cipher_size"`
	Chunks       int64    `json:"chunks"`
	CipherSHA256 string   `json:"cipher_sha256"`
	ChunkTagsHex []string `json:"chunk_tags_hex"`
	CipherHex    string   `json:"cipher_hex,omitempty"`
}

type e2eMetaVec struct {
	NonceHex  string `json:"nonce_hex"`
	Plaintext string `json:"plaintext"`
	Meta      string `json:"meta"`
	Negative  []struct {
		Name   string `json:"name"`
		Meta   string `json:"meta"`
		KeyHex string `json:"key_hex"`
	} `json:"negative"`
}

type e2eSizeVec struct {
	CipherSize int64 `json:"cipher_size"`
	Valid      bool  `json:"valid"`
	PlainSize  int64 `json:"plain_size"`
}

type e2eRangeVec struct {
	CipherSize int64  `json:"cipher_size"`
	First      int64  `json:"first"`
	Last       int64  `json:"last"`
	CipherOff  int64  `json:"cipher_off"`
	CipherEnd  int64  `json:"cipher_end"`
	Chunk      uint64 `json:"chunk"`
	Skip       int64  `json:"skip"`
}

type e2eFragmentVec struct {
	Fragment string `json:"fragment"`
	Found    bool   `json:"found"`
	Valid    bool   `json:"valid"`
	KeyHex   string `json:"key_hex,omitempty"`
}

type e2eOp struct {
	Flip         *int64  `json:"flip,omitempty"`
	DropChunk    *int64  `json:"drop_chunk,omitempty"`
	SwapChunks   []int64 `json:"swap_chunks,omitempty"`
	Truncate     *int64  `json:"truncate,omitempty"`
	AppendHex    string  `json:"append_hex,omitempty"`
	OtherItemHex string  `json:"other_item_hex,omitempty"`
}

type e2eNegativeVec struct {
	Name        string `json:"name"`
	Payload     int64  `json:"payload"`
	Op          e2eOp  `json:"op"`
	ClaimedSize int64  `json:"claimed_size"`
	KeyHex      string `json:"key_hex,omitempty"`
	Error       string `json:"error"`
	Chunk       uint64 `json:"chunk"`
	PlainOK     int64  `json:"plain_ok"`
}

// Fixed inputs of the vectors.
func vecKey() (k E2EKey) {
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func vecOtherKey() (k E2EKey) {
	for i := range k {
		k[i] = byte(i + 1)
	}
	return k
}

func vecItem() (id ItemID) {
	for i := range id {
		id[i] = 0xa0 + byte(i)
	}
	return id
}

func vecOtherItem() (id ItemID) {
	for i := range id {
		id[i] = 0xb0 + byte(i)
	}
	return id
}

var vecPlainSizes = []int64{0, 1, 65535, 65536, 65537, 200000}

func vecPlain(p int64) []byte {
	b := make([]byte, p)
	for j := range b {
		b[j] = byte(j % 251)
	}
	return b
}

// sealAll seals plain whole, chunk by chunk, for item e.
func sealAll(e *E2EItem, plain []byte) []byte {
	n := E2EChunks(int64(len(plain)))
	out := make([]byte, 0, int64(len(plain))+n*E2ETagSize)
	for i := int64(0); i < n; i++ {
		c := plain[i*E2EChunkSize : min(int64(len(plain)), (i+1)*E2EChunkSize)]
		out = e.SealChunk(out, c, uint64(i), i == n-1)
	}
	return out
}

func p64(v int64) *int64 { return &v }

func applyOp(t testing.TB, ct []byte, op e2eOp, plain []byte) []byte {
	ct = bytes.Clone(ct)
	switch {
	case op.Flip != nil:
		ct[*op.Flip] ^= 1
	case op.DropChunk != nil:
		i := *op.DropChunk * E2ESealedChunkSize
		ct = append(ct[:i:i], ct[min(int64(len(ct)), i+E2ESealedChunkSize):]...)
	case op.SwapChunks != nil:
		a, b := op.SwapChunks[0]*E2ESealedChunkSize, op.SwapChunks[1]*E2ESealedChunkSize
		tmp := bytes.Clone(ct[a : a+E2ESealedChunkSize])
		copy(ct[a:], ct[b:b+E2ESealedChunkSize])
		copy(ct[b:], tmp)
	case op.Truncate != nil:
		ct = ct[:*op.Truncate]
	case op.AppendHex != "":
		b, err := hex.DecodeString(op.AppendHex)
		if err != nil {
			t.Fatal(err)
		}
		ct = append(ct, b...)
	case op.OtherItemHex != "":
		b, err := hex.DecodeString(op.OtherItemHex)
		if err != nil || len(b) != 16 {
			t.Fatalf("other_item_hex %q", op.OtherItemHex)
		}
		ct = sealAll(NewE2EItem(vecKey(), ItemID(b)), plain)
	}
	return ct
}

func makeVectors(t testing.TB) e2eVectors {
	k, id := vecKey(), vecItem()
	kp, km := E2EDeriveKeys(k, id)
	e := NewE2EItem(k, id)
	v := e2eVectors{
		Comment:        "meshup e2e1 test vectors; format in proto/e2e.go, layout of this file in proto/e2e_vectors_test.go; regenerate with go test ./proto -run TestE2EVectors -update",
		Format:         E2EVersion,
		ChunkSize:      E2EChunkSize,
		TagSize:        E2ETagSize,
		KeyHex:         hex.EncodeToString(k[:]),
		KeyFragment:    k.Fragment(),
		ItemID:         id.String(),
		ItemIDHex:      hex.EncodeToString(id[:]),
		PayloadKeyHex:  hex.EncodeToString(kp[:]),
		MetadataKeyHex: hex.EncodeToString(km[:]),
		PlaintextRule:  "byte j of a plaintext of size P is j mod 251",
	}
	for _, p := range vecPlainSizes {
		ct := sealAll(e, vecPlain(p))
		sum := sha256.Sum256(ct)
		pv := e2ePayloadVec{PlainSize: p, CipherSize: int64(len(ct)), Chunks: E2EChunks(p), CipherSHA256: hex.EncodeToString(sum[:])}
		for i := int64(0); i < pv.Chunks; i++ {
			end := min(int64(len(ct)), (i+1)*E2ESealedChunkSize)
			pv.ChunkTagsHex = append(pv.ChunkTagsHex, hex.EncodeToString(ct[end-E2ETagSize:end]))
		}
		if p <= 1024 {
			pv.CipherHex = hex.EncodeToString(ct)
		}
		v.Payloads = append(v.Payloads, pv)
	}

	var nonce [12]byte
	for i := range nonce {
		nonce[i] = 0xc0 + byte(i)
	}
	m := E2EMeta{Name: "Été 2026 report.pdf", Type: "application/pdf", Modified: 1767225600}
	plain, _ := json.Marshal(m)
	sealed, err := e.sealMeta(m, nonce)
	if err != nil {
		t.Fatal(err)
	}
	v.Metadata = e2eMetaVec{NonceHex: hex.EncodeToString(nonce[:]), Plaintext: string(plain), Meta: sealed}
	tampered := []byte(sealed)
	tampered[20] ^= 'A' ^ 'B'
	if tampered[20] == sealed[20] {
		tampered[20] = 'C'
	}
	other := vecOtherKey()
	v.Metadata.Negative = append(v.Metadata.Negative,
		struct {
			Name   string `json:"name"`
			Meta   string `json:"meta"`
			KeyHex string `json:"key_hex"`
		}{"wrong key", sealed, hex.EncodeToString(other[:])},
		struct {
			Name   string `json:"name"`
			Meta   string `json:"meta"`
			KeyHex string `json:"key_hex"`
		}{"altered character", string(tampered), v.KeyHex},
		struct {
			Name   string `json:"name"`
			Meta   string `json:"meta"`
			KeyHex string `json:"key_hex"`
		}{"cut short", sealed[:len(sealed)-4], v.KeyHex},
	)

	const sc = E2ESealedChunkSize
	for _, s := range []int64{0, 1, 15, 16, 17, 32, sc - 1, sc, sc + 1, sc + 16, sc + 17, 2 * sc, 2*sc + 16, 2*sc + 17, 200000 + 4*16, 1 << 40} {
		p, err := E2EPlainSize(s)
		v.Sizes = append(v.Sizes, e2eSizeVec{CipherSize: s, Valid: err == nil, PlainSize: p})
	}
	s200k, _ := E2ECipherSize(200000)
	for _, r := range [][2]int64{{0, 0}, {0, 199999}, {65535, 65536}, {65536, 65536}, {100000, 150000}, {196608, 199999}, {199999, 199999}, {131071, 131072}} {
		off, end, chunk := E2ECipherRange(r[0], r[1], s200k)
		v.Ranges = append(v.Ranges, e2eRangeVec{CipherSize: s200k, First: r[0], Last: r[1], CipherOff: off, CipherEnd: end, Chunk: chunk, Skip: r[0] - int64(chunk)*E2EChunkSize})
	}

	for _, f := range []string{"#" + k.Fragment(), k.Fragment(), "x=1&" + k.Fragment() + "&y", "", "#", "#x=1", "#k=", "#k=" + k.String()[:42], "#k=" + k.String() + "A", "#k=" + k.String()[:42] + "=", "#k=" + k.String() + "&k=" + k.String(), "#k=" + k.String()[:42] + "9"} {
		key, found, err := ParseE2EFragment(f)
		fv := e2eFragmentVec{Fragment: f, Found: found, Valid: found && err == nil}
		if fv.Valid {
			fv.KeyHex = hex.EncodeToString(key[:])
		}
		v.Fragments = append(v.Fragments, fv)
	}

	otherID := vecOtherItem()
	negs := []e2eNegativeVec{
		{Name: "flip a byte in chunk 1", Payload: 200000, Op: e2eOp{Flip: p64(70000)}},
		{Name: "flip a byte in the first chunk's tag", Payload: 200000, Op: e2eOp{Flip: p64(sc - 1)}},
		{Name: "flip a byte in the last chunk", Payload: 200000, Op: e2eOp{Flip: p64(s200k - 100)}},
		{Name: "flip the only byte of a 1-byte item", Payload: 1, Op: e2eOp{Flip: p64(0)}},
		{Name: "flip a tag byte of the empty item", Payload: 0, Op: e2eOp{Flip: p64(15)}},
		{Name: "drop chunk 1", Payload: 200000, Op: e2eOp{DropChunk: p64(1)}},
		{Name: "drop the last chunk", Payload: 200000, Op: e2eOp{DropChunk: p64(3)}},
		{Name: "swap chunks 1 and 2", Payload: 200000, Op: e2eOp{SwapChunks: []int64{1, 2}}},
		{Name: "swap chunks 0 and 1", Payload: 65537, Op: e2eOp{SwapChunks: []int64{0, 0}}},
		{Name: "truncate inside chunk 1", Payload: 200000, Op: e2eOp{Truncate: p64(100000)}},
		{Name: "truncate at the boundary of chunk 2", Payload: 200000, Op: e2eOp{Truncate: p64(2 * sc)}},
		{Name: "truncate inside the tag of the last chunk", Payload: 65537, Op: e2eOp{Truncate: p64(sc + 16)}},
		{Name: "empty body for the empty item", Payload: 0, Op: e2eOp{Truncate: p64(0)}},
		{Name: "one extra byte", Payload: 200000, Op: e2eOp{AppendHex: "00"}},
		{Name: "a whole extra chunk's worth", Payload: 65536, Op: e2eOp{AppendHex: hex.EncodeToString(make([]byte, 32))}},
		{Name: "chunks of another item under the same key", Payload: 200000, Op: e2eOp{OtherItemHex: hex.EncodeToString(otherID[:])}},
		{Name: "wrong key", Payload: 200000, KeyHex: hex.EncodeToString(other[:])},
		{Name: "wrong key on the empty item", Payload: 0, KeyHex: hex.EncodeToString(other[:])},
		{Name: "truncated at a chunk boundary with a size that agrees (last flag missing)", Payload: 200000, Op: e2eOp{Truncate: p64(2 * sc)}, ClaimedSize: 2 * sc},
		{Name: "full chunk claimed as an item of one chunk (last flag missing)", Payload: 65537, Op: e2eOp{Truncate: p64(sc)}, ClaimedSize: sc},
		{Name: "last chunk read as a full middle one (last flag where none belongs)", Payload: 65536, ClaimedSize: 2 * sc},
	}
	// Swapping chunk 0 with 1 of a 65537-byte item would move a short chunk;
	// swap two full chunks instead.
	negs[8] = e2eNegativeVec{Name: "swap chunks 0 and 1", Payload: 200000, Op: e2eOp{SwapChunks: []int64{0, 1}}}
	for i := range negs {
		n := &negs[i]
		res := runNegative(t, &v, n)
		n.Error, n.Chunk, n.PlainOK = res.kind, res.chunk, res.ok
	}
	v.Negative = negs
	return v
}

type negResult struct {
	kind  string
	chunk uint64
	ok    int64
}

// runNegative reads the tampered ciphertext of n and reports how the reader
// failed; it fails t if the reader did not fail or handed out a wrong byte.
func runNegative(t testing.TB, v *e2eVectors, n *e2eNegativeVec) negResult {
	t.Helper()
	plain := vecPlain(n.Payload)
	id := vecItem()
	ct := sealAll(NewE2EItem(vecKey(), id), plain)
	s := int64(len(ct))
	ct = applyOp(t, ct, n.Op, plain)
	if n.ClaimedSize != 0 {
		s = n.ClaimedSize
	}
	k := vecKey()
	if n.KeyHex != "" {
		b, err := hex.DecodeString(n.KeyHex)
		if err != nil || len(b) != E2EKeySize {
			t.Fatalf("%s: key_hex %q", n.Name, n.KeyHex)
		}
		k = E2EKey(b)
	}
	r, err := NewE2EItem(k, id).NewReader(bytes.NewReader(ct), s, 0, s)
	if err != nil {
		t.Fatalf("%s: NewReader: %v", n.Name, err)
	}
	got, err := io.ReadAll(r)
	if !bytes.Equal(got, plain[:len(got)]) {
		t.Fatalf("%s: reader handed out %d bytes that differ from the plaintext", n.Name, len(got))
	}
	var ce *E2EChunkError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: got error %v, want an *E2EChunkError", n.Name, err)
	}
	var kind string
	switch {
	case errors.Is(err, ErrE2EIntegrity):
		kind = "integrity"
	case errors.Is(err, ErrE2ETruncated):
		kind = "truncated"
	case errors.Is(err, ErrE2ETrailing):
		kind = "trailing"
	default:
		t.Fatalf("%s: got error %v of no known kind", n.Name, err)
	}
	if int64(len(got)) != int64(ce.Chunk)*E2EChunkSize && kind != "trailing" {
		t.Fatalf("%s: handed out %d bytes before failing at chunk %d", n.Name, len(got), ce.Chunk)
	}
	return negResult{kind, ce.Chunk, int64(len(got))}
}

func TestE2EVectors(t *testing.T) {
	v := makeVectors(t)
	got, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateVectors {
		if err := os.WriteFile(e2eVectorsFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(e2eVectorsFile)
	if err != nil {
		t.Fatalf("read vectors (run with -update to create them): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what the Go implementation produces (first difference near byte %d)", e2eVectorsFile, firstDiff(got, want))
	}
	// Check the file on its own terms too, as another implementation would.
	var fv e2eVectors
	if err := json.Unmarshal(want, &fv); err != nil {
		t.Fatal(err)
	}
	checkVectorsFile(t, &fv)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// checkVectorsFile verifies a decoded vectors file independently of the
// code that wrote it where that is cheap: the chunk nonces and the sizes are
// recomputed here from the text of the format.
func checkVectorsFile(t *testing.T, v *e2eVectors) {
	kb, _ := hex.DecodeString(v.KeyHex)
	idb, _ := hex.DecodeString(v.ItemIDHex)
	k, id := E2EKey(kb), ItemID(idb)
	if id.String() != v.ItemID {
		t.Errorf("item_id %s, want %s", v.ItemID, id.String())
	}
	for _, p := range v.Payloads {
		plain := vecPlain(p.PlainSize)
		// Seal with the standard library directly: nonce = uint88_be(i) || flag.
		kp, _ := hex.DecodeString(v.PayloadKeyHex)
		g := newGCM([32]byte(kp))
		var ct []byte
		n := max(1, (p.PlainSize+int64(v.ChunkSize)-1)/int64(v.ChunkSize))
		for i := int64(0); i < n; i++ {
			nonce := make([]byte, 12)
			nonce[10] = byte(i) // i < 256 here
			if i == n-1 {
				nonce[11] = 1
			}
			ct = g.Seal(ct, nonce, plain[i*int64(v.ChunkSize):min(p.PlainSize, (i+1)*int64(v.ChunkSize))], nil)
		}
		sum := sha256.Sum256(ct)
		if int64(len(ct)) != p.CipherSize || hex.EncodeToString(sum[:]) != p.CipherSHA256 {
			t.Errorf("payload %d: got size %d sha %x, want %d %s", p.PlainSize, len(ct), sum, p.CipherSize, p.CipherSHA256)
		}
		if p.CipherHex != "" && p.CipherHex != hex.EncodeToString(ct) {
			t.Errorf("payload %d: cipher_hex differs", p.PlainSize)
		}
		r, err := NewE2EItem(k, id).NewReader(bytes.NewReader(ct), p.CipherSize, 0, p.CipherSize)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("payload %d: open: %v", p.PlainSize, err)
		}
	}
	e := NewE2EItem(k, id)
	m, err := e.OpenMeta(v.Metadata.Meta)
	if err != nil {
		t.Fatalf("open metadata: %v", err)
	}
	if b, _ := json.Marshal(m); string(b) != v.Metadata.Plaintext {
		t.Errorf("metadata opened to %s, want %s", b, v.Metadata.Plaintext)
	}
	for _, n := range v.Metadata.Negative {
		kb, _ := hex.DecodeString(n.KeyHex)
		if _, err := NewE2EItem(E2EKey(kb), id).OpenMeta(n.Meta); !errors.Is(err, ErrE2EMeta) {
			t.Errorf("metadata %s: got %v, want ErrE2EMeta", n.Name, err)
		}
	}
	for _, s := range v.Sizes {
		// n = ceil(S/(C+16)), P = S - 16n; invalid when S < 16 or S > 16 with S mod (C+16) in [1, 16].
		sc := int64(v.ChunkSize + v.TagSize)
		r := s.CipherSize % sc
		valid := s.CipherSize == 16 || (s.CipherSize > 16 && !(r >= 1 && r <= 16))
		if valid != s.Valid {
			t.Errorf("size %d: valid %v, want %v", s.CipherSize, s.Valid, valid)
		}
		if valid && s.PlainSize != s.CipherSize-16*((s.CipherSize+sc-1)/sc) {
			t.Errorf("size %d: plain %d", s.CipherSize, s.PlainSize)
		}
	}
	for _, n := range v.Negative {
		res := runNegative(t, v, &n)
		if res.kind != n.Error || res.chunk != n.Chunk || res.ok != n.PlainOK {
			t.Errorf("%s: got %s at chunk %d after %d bytes, want %s at %d after %d", n.Name, res.kind, res.chunk, res.ok, n.Error, n.Chunk, n.PlainOK)
		}
	}
}
