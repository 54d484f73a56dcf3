package proto

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
// S: n = ceil(S/(C+16)), P = S - 16n; S is invalid when S < 16 or when
// S mod (C+16) is between 1 and 16 (E2EPlainSize reports it).
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
// Limits. At most E2EMaxChunks chunks per item (256 TiB of plaintext): far
// below the 2^88 nonces, and each key is used for one item only.
//
// Test vectors shared by the Go and JavaScript implementations live in
// testdata/e2e1-vectors.json.

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
