// meshup end-to-end encryption, format "e2e1" (specified byte by byte in
// proto/e2e.go of the Go module): STREAM with AES-256-GCM over 64 KiB
// chunks, per-item keys from HKDF-SHA256 bound to the item id, sealed
// metadata. WebCrypto only; no dependencies, no build step. The rendezvous
// serves it at /web/e2e.js; the library (meshup.js), the item page and the
// Service Worker import it.
//
//	K  = 32 random bytes, carried in the share link's fragment #k=BASE64URL(K)
//	Kp = HKDF(K, salt=ITEMID, info="meshup e2e1 payload")    chunk i: nonce = uint88_be(i) || last
//	Km = HKDF(K, salt=ITEMID, info="meshup e2e1 metadata")   meta: b64url(nonce || GCM(JSON, AAD))
//
// Reading an item: plainSize(S) gives the plaintext size from the
// ciphertext size, cipherRange maps a plaintext byte range to the
// ciphertext bytes that cover it, and decryptStream turns ciphertext that
// starts at a chunk boundary into plaintext, failing on the first chunk
// that does not open (E2EError names it) without handing out any byte of it.

/** Publish.Enc of items in this format. */
export const VERSION = 'e2e1';
/** Size of an item key K in bytes. */
export const KEY_SIZE = 32;
/** Plaintext bytes of every chunk but the last. */
export const CHUNK_SIZE = 64 << 10;
/** AES-GCM tag appended to every chunk. */
export const TAG_SIZE = 16;
/** Ciphertext bytes of every chunk but the last. */
export const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
/** Most chunks of one item. */
export const MAX_CHUNKS = 2 ** 32;
/** Longest text of sealed metadata. */
export const MAX_META = 4096;
/** Name of the key in the share link's fragment. */
export const FRAGMENT_KEY = 'k';

const INFO_PAYLOAD = 'meshup e2e1 payload';
const INFO_METADATA = 'meshup e2e1 metadata';
const META_AAD = 'meshup e2e1 metadata';
const NONCE_SIZE = 12;
const DECRYPT_DEPTH = 8; // chunks opened concurrently by a decryptor
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

const enc = new TextEncoder();

/**
 * An integrity or key error. chunk is the index of the chunk that did not
 * open, or -1 for metadata, a key or a size. kind is 'integrity' for a
 * chunk that does not authenticate (altered, reordered, another item's,
 * wrong key), 'truncated' for ciphertext that ends inside or before a chunk
 * the size promised (an interrupted transfer: resume from that chunk),
 * 'trailing' for bytes after the last chunk (chunk is then the count of
 * chunks), and 'other' for the rest. The kinds are those of the golden
 * vectors (proto/testdata/e2e1-vectors.json).
 */
export class E2EError extends Error {
  /**
   * @param {string} message
   * @param {number} [chunk]
   * @param {'integrity'|'truncated'|'trailing'|'other'} [kind]
   */
  constructor(message, chunk = -1, kind = 'other') {
    super(message);
    this.name = 'E2EError';
    /** @type {number} */
    this.chunk = chunk;
    this.kind = kind;
  }
}

// --- keys and the fragment ---

/** @returns {Uint8Array} a fresh item key K */
export function newKey() {
  return crypto.getRandomValues(new Uint8Array(KEY_SIZE));
}

/**
 * Encodes bytes as base64url without padding.
 * @param {Uint8Array} b
 */
export function b64urlEncode(b) {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Decodes base64url without padding; throws E2EError on anything else.
 * @param {string} s
 */
export function b64urlDecode(s) {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) throw new E2EError('not base64url');
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * The fragment of a share link that carries K: "k=BASE64URL(K)".
 * @param {Uint8Array} key
 */
export function formatFragment(key) {
  return `${FRAGMENT_KEY}=${b64urlEncode(key)}`;
}

/**
 * Reads K from a URL fragment ("#k=..." or "k=...", other parameters
 * allowed). Returns null when there is no key; throws E2EError when there
 * is one that is not 32 bytes of base64url.
 * @param {string} hash
 * @returns {Uint8Array|null}
 */
export function parseFragment(hash) {
  const vs = new URLSearchParams(hash.replace(/^#/, '')).getAll(FRAGMENT_KEY);
  if (vs.length === 0) return null;
  if (vs.length > 1) throw new E2EError('the link has more than one key');
  const v = vs[0];
  let key;
  try {
    key = b64urlDecode(v);
  } catch {
    throw new E2EError('the key in the link is not valid base64url');
  }
  // Exactly 43 characters of canonical base64url: one key has one spelling.
  if (key.length !== KEY_SIZE || b64urlEncode(key) !== v) throw new E2EError(`the key in the link is not ${KEY_SIZE} bytes of base64url`);
  return key;
}

/**
 * Decodes the 26-character text form of an item id into its 16 bytes.
 * @param {string} id
 */
export function itemIDBytes(id) {
  const out = new Uint8Array(16);
  let acc = 0, bits = 0, n = 0;
  for (const ch of id.toLowerCase()) {
    const v = ID_ALPHABET.indexOf(ch);
    if (v < 0) throw new E2EError(`bad item id ${id}`);
    acc = ((acc << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      if (n < 16) out[n++] = (acc >> bits) & 0xff;
    }
  }
  if (n !== 16 || id.length !== 26) throw new E2EError(`bad item id ${id}`);
  return out;
}

/**
 * HKDF-SHA256 of K with the item id as salt.
 * @param {Uint8Array} key K
 * @param {string|Uint8Array} id the item id, text form or 16 bytes
 * @param {string} info
 * @returns {Promise<Uint8Array>} 32 bytes
 */
async function hkdf(key, id, info) {
  if (key.length !== KEY_SIZE) throw new E2EError(`key of ${key.length} bytes, want ${KEY_SIZE}`);
  const salt = typeof id === 'string' ? itemIDBytes(id) : id;
  const ikm = await crypto.subtle.importKey('raw', key, 'HKDF', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info: enc.encode(info) }, ikm, 256);
  return new Uint8Array(bits);
}

/**
 * @param {Uint8Array} raw
 * @returns {Promise<CryptoKey>}
 */
function aesKey(raw) {
  return crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/**
 * The raw derived keys of an item, for tests against the golden vectors.
 * @param {Uint8Array} key
 * @param {string|Uint8Array} id
 */
export async function deriveRaw(key, id) {
  return { payload: await hkdf(key, id, INFO_PAYLOAD), metadata: await hkdf(key, id, INFO_METADATA) };
}

/**
 * The keys of one item: payload key Kp and metadata key Km.
 * @typedef {{payload: CryptoKey, metadata: CryptoKey}} ItemKeys
 */

/**
 * Derives the keys of item id from K.
 * @param {Uint8Array} key
 * @param {string|Uint8Array} id
 * @returns {Promise<ItemKeys>}
 */
export async function deriveKeys(key, id) {
  const raw = await deriveRaw(key, id);
  return { payload: await aesKey(raw.payload), metadata: await aesKey(raw.metadata) };
}

// --- sizes and ranges ---

/**
 * Ciphertext size of a plaintext of p bytes.
 * @param {number} p
 */
export function sealedSize(p) {
  return p + TAG_SIZE * Math.max(1, Math.ceil(p / CHUNK_SIZE));
}

/**
 * Plaintext size of a ciphertext of s bytes; throws E2EError when no
 * plaintext seals to s bytes.
 * @param {number} s
 */
export function plainSize(s) {
  const r = s % SEALED_CHUNK_SIZE;
  if (!Number.isSafeInteger(s) || s < TAG_SIZE || (s > TAG_SIZE && r >= 1 && r <= TAG_SIZE)) {
    throw new E2EError(`ciphertext size ${s} is not a size of format ${VERSION}`);
  }
  const n = Math.ceil(s / SEALED_CHUNK_SIZE);
  if (n > MAX_CHUNKS) throw new E2EError(`ciphertext size ${s} is over ${MAX_CHUNKS} chunks`);
  return s - TAG_SIZE * n;
}

/**
 * Number of chunks of a ciphertext of s bytes.
 * @param {number} s
 */
export function chunkCount(s) {
  return Math.max(1, Math.ceil(s / SEALED_CHUNK_SIZE));
}

/**
 * The ciphertext bytes [start, end) that hold plaintext bytes [a, b]
 * (inclusive) of an item of ciphertext size s, and the first chunk.
 * @param {number} a
 * @param {number} b
 * @param {number} s
 */
export function cipherRange(a, b, s) {
  const first = Math.floor(a / CHUNK_SIZE);
  const last = Math.floor(b / CHUNK_SIZE);
  return { first, start: first * SEALED_CHUNK_SIZE, end: Math.min(s, (last + 1) * SEALED_CHUNK_SIZE) };
}

/**
 * The 12-byte nonce of chunk i.
 * @param {number} i
 * @param {boolean} last
 */
export function chunkNonce(i, last) {
  const n = new Uint8Array(NONCE_SIZE);
  const v = new DataView(n.buffer);
  v.setUint32(3, Math.floor(i / 2 ** 32));
  v.setUint32(7, i >>> 0);
  n[11] = last ? 1 : 0;
  return n;
}

// --- chunks ---

/**
 * Seals plaintext chunk i.
 * @param {CryptoKey} kp payload key
 * @param {number} i
 * @param {boolean} last
 * @param {BufferSource} plain at most CHUNK_SIZE bytes
 * @returns {Promise<Uint8Array>}
 */
export async function sealChunk(kp, i, last, plain) {
  const iv = chunkNonce(i, last);
  return new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, kp, plain));
}

/**
 * Opens sealed chunk i; throws E2EError naming i when it does not open.
 * @param {CryptoKey} kp payload key
 * @param {number} i
 * @param {boolean} last
 * @param {BufferSource} sealed
 * @returns {Promise<Uint8Array>}
 */
export async function openChunk(kp, i, last, sealed) {
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: chunkNonce(i, last) }, kp, sealed));
  } catch {
    throw new E2EError(`chunk ${i} does not open: the bytes were altered, reordered, cut short or come from another item, or the key is wrong`, i, 'integrity');
  }
}

/**
 * Seals a whole plaintext (tests and small items).
 * @param {CryptoKey} kp
 * @param {Uint8Array} plain
 * @returns {Promise<Uint8Array>}
 */
export async function sealAll(kp, plain) {
  const n = Math.max(1, Math.ceil(plain.length / CHUNK_SIZE));
  const parts = await Promise.all(Array.from({ length: n }, (_, i) =>
    sealChunk(kp, i, i === n - 1, plain.subarray(i * CHUNK_SIZE, Math.min(plain.length, (i + 1) * CHUNK_SIZE)))));
  return concat(parts);
}

/**
 * Opens a whole ciphertext (tests and small items).
 * @param {CryptoKey} kp
 * @param {Uint8Array} sealed
 * @returns {Promise<Uint8Array>}
 */
export async function openAll(kp, sealed) {
  const out = [];
  const stream = new Blob([sealed]).stream().pipeThrough(decryptStream(kp, sealed.length));
  for await (const b of /** @type {any} */ (stream)) out.push(b);
  return concat(out);
}

/**
 * Reads ciphertext bytes [off, off+len) of a plaintext Blob, sealing the
 * chunks that cover them. The plaintext of a range is read with one
 * Blob.slice() (reading chunk by chunk costs a round trip each in
 * browsers), its chunks are sealed concurrently, and the last chunk sealed
 * is kept, so that consecutive ranges cut inside a chunk seal it once.
 */
export class Sealer {
  /**
   * @param {CryptoKey} kp payload key
   * @param {Blob} blob the plaintext
   */
  constructor(kp, blob) {
    this.kp = kp;
    this.blob = blob;
    this.size = sealedSize(blob.size);
    this.chunks = chunkCount(this.size);
    /** @type {{i: number, data: Promise<Uint8Array>}|null} */
    this.cached = null;
  }

  /**
   * Ciphertext bytes [off, off+len).
   * @param {number} off
   * @param {number} len
   * @returns {Promise<Uint8Array>}
   */
  async range(off, len) {
    if (off < 0 || len < 0 || off + len > this.size) throw new E2EError(`range [${off}, ${off + len}) outside the ciphertext of ${this.size} bytes`);
    const out = new Uint8Array(len);
    if (len === 0) return out;
    let first = Math.floor(off / SEALED_CHUNK_SIZE);
    const last = Math.floor((off + len - 1) / SEALED_CHUNK_SIZE);
    /** @type {Promise<void>[]} */
    const jobs = [];
    /** @param {number} i @param {Promise<Uint8Array>} p */
    const place = (i, p) => jobs.push(p.then((c) => {
      const cs = i * SEALED_CHUNK_SIZE;
      const from = Math.max(off, cs), to = Math.min(off + len, cs + c.length);
      out.set(c.subarray(from - cs, to - cs), from - off);
    }));
    const cached = this.cached;
    if (cached && cached.i === first) {
      place(first, cached.data);
      first++;
    }
    if (first <= last) {
      const plain = this.blob.slice(first * CHUNK_SIZE, Math.min(this.blob.size, (last + 1) * CHUNK_SIZE)).arrayBuffer();
      for (let i = first; i <= last; i++) {
        const at = (i - first) * CHUNK_SIZE;
        const sealed = plain.then((b) => sealChunk(this.kp, i, i === this.chunks - 1, new Uint8Array(b, at, Math.min(CHUNK_SIZE, b.byteLength - at))));
        sealed.catch(() => {});
        if (i === last) this.cached = { i, data: sealed };
        place(i, sealed);
      }
    }
    await Promise.all(jobs);
    return out;
  }
}

/**
 * A TransformStream from ciphertext to plaintext. The ciphertext must
 * start at the boundary of chunk first (default 0) of an item whose
 * ciphertext is cipherSize bytes, and go on through chunk last (default
 * the item's last: a range may stop earlier). Each chunk is emitted whole as soon as it opens, in order;
 * up to 8 chunks are opened concurrently. The first chunk that does not
 * open, or a stream that ends inside a chunk, errors the stream with an
 * E2EError naming the chunk; no byte of that chunk or a later one is
 * emitted.
 * @param {CryptoKey} kp payload key
 * @param {number} cipherSize S, the item's ciphertext size
 * @param {number} [first] index of the first chunk
 * @param {number} [last] index of the last chunk wanted
 * @returns {TransformStream<Uint8Array, Uint8Array>}
 */
export function decryptStream(kp, cipherSize, first = 0, last = chunkCount(cipherSize) - 1) {
  const n = chunkCount(cipherSize);
  let i = first;
  let buf = new Uint8Array(0); // the chunk being filled
  let have = 0;
  /** @type {Promise<Uint8Array>[]} */
  const pending = [];
  let failed = false;
  const want = () => (i === n - 1 ? cipherSize - i * SEALED_CHUNK_SIZE : SEALED_CHUNK_SIZE);
  /** @param {TransformStreamDefaultController<Uint8Array>} c */
  const emitOne = async (c) => {
    const p = /** @type {Promise<Uint8Array>} */ (pending.shift());
    try {
      c.enqueue(await p);
    } catch (err) {
      failed = true;
      for (const q of pending) q.catch(() => {});
      pending.length = 0;
      throw err;
    }
  };
  // The readable side holds a few opened chunks, so that opening runs
  // ahead of a consumer that reads chunk by chunk.
  return new TransformStream({
    async transform(data, c) {
      if (failed) return;
      let at = 0;
      while (at < data.length) {
        if (i >= n) {
          while (pending.length) await emitOne(c);
          throw new E2EError(`bytes after the last chunk ${n - 1}`, n, 'trailing');
        }
        const w = want();
        if (buf.length !== w) buf = new Uint8Array(w);
        const k = Math.min(w - have, data.length - at);
        buf.set(data.subarray(at, at + k), have);
        have += k;
        at += k;
        if (have < w) break;
        const p = openChunk(kp, i, i === n - 1, buf);
        p.catch(() => {});
        pending.push(p);
        buf = new Uint8Array(0);
        have = 0;
        i++;
        if (pending.length >= DECRYPT_DEPTH) await emitOne(c);
      }
    },
    async flush(c) {
      while (pending.length) await emitOne(c);
      if (have > 0 || i <= last) throw new E2EError(`chunk ${i} is cut short: ${have} of ${want()} bytes`, i, 'truncated');
    },
  }, { highWaterMark: 2 }, { highWaterMark: DECRYPT_DEPTH });
}

// --- metadata ---

/**
 * The plaintext metadata of an item.
 * @typedef {{name: string, type: string, modified: number}} Meta
 */

/**
 * Seals metadata for Publish.Meta.
 * @param {CryptoKey} km metadata key
 * @param {Meta} meta
 * @returns {Promise<string>}
 */
export async function sealMeta(km, meta) {
  const iv = crypto.getRandomValues(new Uint8Array(NONCE_SIZE));
  const plain = enc.encode(JSON.stringify({ name: meta.name, type: meta.type, modified: Math.floor(meta.modified) }));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: enc.encode(META_AAD) }, km, plain));
  const s = b64urlEncode(concat([iv, ct]));
  if (s.length > MAX_META) throw new E2EError(`sealed metadata of ${s.length} bytes is over ${MAX_META}`);
  return s;
}

/**
 * Opens Publish.Meta; throws E2EError when it does not open (wrong key)
 * or is not metadata.
 * @param {CryptoKey} km metadata key
 * @param {string} sealed
 * @returns {Promise<Meta>}
 */
export async function openMeta(km, sealed) {
  if (sealed.length > MAX_META) throw new E2EError(`sealed metadata of ${sealed.length} bytes is over ${MAX_META}`);
  const b = b64urlDecode(sealed);
  if (b.length < NONCE_SIZE + TAG_SIZE) throw new E2EError('sealed metadata is too short');
  let plain;
  try {
    plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: b.subarray(0, NONCE_SIZE), additionalData: enc.encode(META_AAD) }, km, b.subarray(NONCE_SIZE));
  } catch {
    throw new E2EError('the metadata does not open: the key in the link is wrong');
  }
  let m;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(plain));
  } catch {
    throw new E2EError('the metadata is not JSON');
  }
  if (typeof m !== 'object' || m === null || typeof (m.name ?? '') !== 'string' || typeof (m.type ?? '') !== 'string' || typeof (m.modified ?? 0) !== 'number') {
    throw new E2EError('the metadata has fields of the wrong type');
  }
  return { name: m.name ?? '', type: m.type ?? '', modified: m.modified ?? 0 };
}

/**
 * Concatenates byte arrays.
 * @param {Uint8Array[]} parts
 */
export function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
