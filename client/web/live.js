// meshup sealed live channels, format "live1" (the browser side of
// proto/live1 in the Go module): a publisher streams a growing source (a
// camera through MediaRecorder, a file read progressively) into a channel
// that relays fan out without being able to read it, change it, drop,
// reorder or splice a byte unnoticed. WebCrypto only; no dependencies, no
// build step. The rendezvous serves it at /web/live.js.
//
//	K   = 32 random bytes of the publisher, only in the link's fragment: RDV/l/ID#k=BASE64URL(K)
//	ID  = SHA-256("meshup live channel" || SECRET)[:16]   (SECRET: the publisher's bearer token)
//	Kl  = HKDF-SHA256(IKM=K, salt=ID, info="meshup live1 records", L=32)
//
//	record = len:uint32_be || kind:uint8 || seq:uint64_be || time:uint64_be || sealed
//	len    = 1 + 8 + 8 + len(sealed)      time = the publisher's clock, Unix ms (never going back)
//	sealed = AES-256-GCM(Kl, nonce = uint88_be(seq) || flag, AAD = time:uint64_be || head:uint64_be, plaintext)
//	head   = the head seq the record is sealed under: a head record's own seq; for data, sync
//	         and last records the latest head's seq (not on the wire: readers supply their own)
//	kind   0 data (flag 0x00), 1 sync (0x03), 2 head (0x02), 3 last (0x01)
//	head plaintext = uint32_be metaLen || meta JSON {"type", "name"} || init bytes
//
// Data, sync and last records share one counter from 0; head records have
// their own. A reader gets the channel's head first, then records whose
// seq goes up by one from wherever it joined, each opened under the
// current head (so a relay that withholds a newer head, and passes on the
// records sealed under it, fails the reader at the first of them instead
// of feeding it bytes for another init segment); it ends cleanly only on a
// last record (LiveError otherwise, naming what went wrong). Times never
// go back; and within catchUp (30 s) of its first record a reader must
// see a record at most maxLag (60 s) behind its own clock, else a relay
// is replaying or delaying the channel (LiveError 'stale'). A publisher
// quiet for TICK_MS sends an empty data record (a tick), so that even a
// quiet channel has a recent record.
//
// Publishing (goLive): POST RDV/v1/live/ID?enc=live1 with the bearer
// SECRET gives {push_url, url, share}; the records go over a WebSocket to
// the ws(s) form of push_url: first the text {"secret", "enc": "live1"},
// the relay answers {"ok": true}, then one binary message per record; the
// relay sends {"subscribers": N} now and then and closes 1000 after the
// last record. Reading (readLive): GET RDV/v1/live/ID, redirected to a
// relay, whose body is the records.

import { b64urlDecode, b64urlEncode, concat, E2EError, itemIDBytes, parseFragment } from './e2e.js';
import { WebMSplitter } from './webm.js';

/** Name of the format, as in ?enc=live1. */
export const VERSION = 'live1';
/** Content type of a sealed channel's body. */
export const CONTENT_TYPE = 'application/x-meshup-live1';
/** Record kinds. */
export const Kind = Object.freeze({ DATA: 0, SYNC: 1, HEAD: 2, LAST: 3 });
/** Nonce flag of each kind. */
const FLAGS = [0x00, 0x03, 0x02, 0x01];
const KIND_NAMES = ['data', 'sync', 'head', 'last'];
/** Largest record, length field included (proto.LiveMaxRecord). */
export const MAX_RECORD = 64 << 10;
/** Bytes before the sealed part: len, kind, seq, time. */
export const RECORD_HEADER = 4 + 1 + 8 + 8;
/** AES-GCM tag. */
export const TAG_SIZE = 16;
/** Largest plaintext of one record. */
export const MAX_PLAIN = MAX_RECORD - RECORD_HEADER - TAG_SIZE;
/** Largest meta JSON of a head. */
export const MAX_META = 4096;
/** Size of K. */
export const KEY_SIZE = 32;
/** ms a publisher stays quiet at most before it sends a tick (proto.LiveTickInterval). */
export const TICK_MS = 5000;
/** Default reader limits (proto.LiveDefaultMaxLag, LiveDefaultCatchUp), ms. */
export const MAX_LAG_MS = 60_000;
export const CATCH_UP_MS = 30_000;

const INFO_RECORDS = 'meshup live1 records';
const ID_LABEL = 'meshup live channel';
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const MIN_LEN = 1 + 8 + 8 + TAG_SIZE;
const enc = new TextEncoder();

/**
 * An error of a live channel. kind says what happened, for pages to word:
 * 'key' (the head does not open: the key in the link is wrong), 'integrity'
 * (a record does not open: altered by a relay, or, for data, sync and last
 * records, sealed under a newer head that a relay withheld; head says
 * which head it was opened under), 'missing' (a record's seq
 * is not the previous + 1: dropped or reordered), 'cut' (the stream ended
 * without the publisher's end mark), 'nohead' (the first record is not a
 * head), 'head' (an older head after a newer one), 'time' (a record's
 * time is before the previous record's), 'stale' (the channel never
 * reached the live edge: a relay replays or delays it), 'malformed',
 * 'http' (the rendezvous or relay refused; status set) and 'other'. seq
 * is the record's, or -1.
 */
export class LiveError extends Error {
  /**
   * @param {string} message
   * @param {'key'|'integrity'|'missing'|'cut'|'nohead'|'head'|'time'|'stale'|'malformed'|'http'|'other'} [kind]
   * @param {number} [seq]
   * @param {number} [status] HTTP status of a refusal
   */
  constructor(message, kind = 'other', seq = -1, status = 0) {
    super(message);
    this.name = 'LiveError';
    this.kind = kind;
    this.seq = seq;
    this.status = status;
    /** the head seq a data, sync or last record that did not open was opened under, or -1 */
    this.head = -1;
  }
}

// --- ids, keys and links ---

/**
 * Encodes 16 bytes as the 26-character text form of an id.
 * @param {Uint8Array} b
 */
export function idText(b) {
  let s = '', acc = 0, bits = 0;
  for (const x of b) {
    acc = ((acc << 8) | x) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      s += ID_ALPHABET[(acc >> bits) & 31];
    }
  }
  if (bits > 0) s += ID_ALPHABET[(acc << (5 - bits)) & 31];
  return s;
}

/** @returns {string} a fresh channel secret: 32 random bytes in base64url */
export function newSecret() {
  return b64urlEncode(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * The channel id of secret: SHA-256("meshup live channel" || secret)[:16],
 * in text form.
 * @param {string} secret
 * @returns {Promise<string>}
 */
export async function channelID(secret) {
  if (!/^[A-Za-z0-9._~-]{22,128}$/.test(secret)) throw new LiveError('bad channel secret: 22 to 128 characters of A-Z a-z 0-9 - _ . ~', 'malformed');
  const h = new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(ID_LABEL + secret)));
  return idText(h.subarray(0, 16));
}

/**
 * The raw record key Kl of channel id (text or 16 bytes), for tests.
 * @param {Uint8Array} key K
 * @param {string|Uint8Array} id
 * @returns {Promise<Uint8Array>}
 */
export async function deriveRaw(key, id) {
  if (key.length !== KEY_SIZE) throw new LiveError(`key of ${key.length} bytes, want ${KEY_SIZE}`, 'key');
  const salt = typeof id === 'string' ? itemIDBytes(id) : id;
  const ikm = await crypto.subtle.importKey('raw', key, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info: enc.encode(INFO_RECORDS) }, ikm, 256));
}

/**
 * The record key Kl of channel id.
 * @param {Uint8Array} key K
 * @param {string|Uint8Array} id
 * @returns {Promise<CryptoKey>}
 */
export async function deriveKey(key, id) {
  return crypto.subtle.importKey('raw', await deriveRaw(key, id), { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/**
 * The share link of a channel: share (RDV/l/ID, LiveEntry.share) with the
 * key in its fragment.
 * @param {string} share
 * @param {Uint8Array} key
 */
export function formatLink(share, key) {
  return `${share}#k=${b64urlEncode(key)}`;
}

/**
 * Reads a channel link RDV/l/ID#k=KEY (or RDV/v1/live/ID#k=KEY).
 * @param {string} link
 * @returns {{base: string, id: string, key: Uint8Array|null}} key null when the link has none
 */
export function parseLink(link) {
  let u;
  try {
    u = new URL(link, globalThis.location?.href);
  } catch {
    throw new LiveError(`not a link: ${link}`, 'malformed');
  }
  const m = /^(.*)\/(?:l|v1\/live)\/([a-z2-7]{26})\/?$/.exec(u.pathname);
  if (!m) throw new LiveError(`not a live channel link: ${link}`, 'malformed');
  try {
    itemIDBytes(m[2]);
  } catch {
    throw new LiveError(`bad channel id in ${link}`, 'malformed');
  }
  let key;
  try {
    key = parseFragment(u.hash);
  } catch (err) {
    throw new LiveError(err.message, 'key');
  }
  return { base: u.origin + m[1], id: m[2], key };
}

// --- records ---

/**
 * The nonce of a record: uint88_be(seq) || flag.
 * @param {number} seq
 * @param {number} flag
 */
export function recordNonce(seq, flag) {
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setUint32(3, Math.floor(seq / 2 ** 32));
  v.setUint32(7, seq >>> 0);
  n[11] = flag;
  return n;
}

/**
 * The 8 bytes of a record's time: uint64_be(ms), the first half of the
 * AEAD's additional data.
 * @param {number} ms Unix milliseconds
 */
export function timeBytes(ms) {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  const t = Math.max(0, Math.floor(ms));
  v.setUint32(0, Math.floor(t / 2 ** 32));
  v.setUint32(4, t >>> 0);
  return b;
}

/**
 * A record's additional data: its 8 time bytes || uint64_be(head), where
 * head is the record's own seq for a head record.
 * @param {Uint8Array} tb
 * @param {number} kind
 * @param {number} seq
 * @param {number} head
 */
export function recordAAD(tb, kind, seq, head) {
  const a = new Uint8Array(16);
  a.set(tb, 0);
  const h = kind === Kind.HEAD ? seq : head;
  const v = new DataView(a.buffer);
  v.setUint32(8, Math.floor(h / 2 ** 32));
  v.setUint32(12, h >>> 0);
  return a;
}

/**
 * Seals one record.
 * @param {CryptoKey} kl
 * @param {number} kind a Kind
 * @param {number} seq
 * @param {number} head the seq of the head the record is sealed under (the latest head sent);
 *   ignored for a head record, which is bound to its own seq
 * @param {Uint8Array} plain at most MAX_PLAIN bytes
 * @param {number} [time] the publisher's clock, Unix ms; default now
 * @returns {Promise<Uint8Array>} the whole record, length field included
 */
export async function sealRecord(kl, kind, seq, head, plain, time = Date.now()) {
  if (plain.length > MAX_PLAIN) throw new LiveError(`record plaintext of ${plain.length} bytes is over ${MAX_PLAIN}`, 'malformed');
  if (kind !== Kind.HEAD && !(head >= 0)) throw new LiveError(`${KIND_NAMES[kind]} record ${seq} before any channel head`, 'nohead', seq);
  const tb = timeBytes(time);
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: recordNonce(seq, FLAGS[kind]), additionalData: recordAAD(tb, kind, seq, head) }, kl, plain));
  const rec = new Uint8Array(RECORD_HEADER + sealed.length);
  const v = new DataView(rec.buffer);
  v.setUint32(0, 1 + 8 + 8 + sealed.length);
  rec[4] = kind;
  v.setUint32(5, Math.floor(seq / 2 ** 32));
  v.setUint32(9, seq >>> 0);
  rec.set(tb, 13);
  rec.set(sealed, RECORD_HEADER);
  return rec;
}

/**
 * The plaintext of a head: uint32_be metaLen || meta JSON || init.
 * @param {{type: string, name?: string}} meta
 * @param {Uint8Array} [init]
 */
export function headPlain(meta, init = new Uint8Array(0)) {
  /** @type {{type: string, name?: string}} */
  const m = { type: meta.type || 'application/octet-stream' };
  if (meta.name) m.name = meta.name;
  const json = enc.encode(JSON.stringify(m));
  if (json.length > MAX_META) throw new LiveError(`head meta of ${json.length} bytes is over ${MAX_META}`, 'malformed');
  const out = new Uint8Array(4 + json.length + init.length);
  new DataView(out.buffer).setUint32(0, json.length);
  out.set(json, 4);
  out.set(init, 4 + json.length);
  return out;
}

/**
 * Splits a head's plaintext.
 * @param {Uint8Array} p
 * @returns {{meta: {type: string, name: string}, init: Uint8Array}}
 */
export function parseHead(p) {
  if (p.length < 4) throw new LiveError('the channel head is too short', 'malformed');
  const n = new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(0);
  if (n > MAX_META || 4 + n > p.length) throw new LiveError(`the channel head's meta of ${n} bytes is over ${Math.min(MAX_META, p.length - 4)}`, 'malformed');
  let m;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(p.subarray(4, 4 + n)));
  } catch {
    throw new LiveError('the channel head\'s meta is not JSON', 'malformed');
  }
  if (typeof m !== 'object' || m === null || typeof m.type !== 'string' || typeof (m.name ?? '') !== 'string') {
    throw new LiveError('the channel head\'s meta has fields of the wrong type', 'malformed');
  }
  return { meta: { type: m.type, name: m.name ?? '' }, init: p.slice(4 + n) };
}

/**
 * One opened record (time: the publisher's clock, Unix ms).
 * @typedef {{kind: 'head', seq: number, time: number, meta: {type: string, name: string}, init: Uint8Array}
 *   | {kind: 'data'|'sync'|'last', seq: number, time: number, data: Uint8Array}} LiveRecord
 */

/**
 * A reader's limits and clock.
 * @typedef {object} LiveReadLimits
 * @property {number} [maxLag] ms behind the reader's clock the live edge may be (default MAX_LAG_MS;
 *   negative: no check)
 * @property {number} [catchUp] ms from the first record to wait for the live edge (default CATCH_UP_MS)
 * @property {() => number} [now] the reader's clock, Unix ms (default Date.now)
 */

/**
 * Words a reader's lag like Go's time.Duration (3m12s, 1m0s, 850ms).
 * @param {number} ms
 */
function fmtDuration(ms) {
  if (Math.abs(ms) < 1000) return `${Math.round(ms)}ms`;
  let s = Math.round(ms / 1000);
  const neg = s < 0;
  s = Math.abs(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (neg ? '-' : '') + (h ? `${h}h${m}m${r}s` : m ? `${m}m${r}s` : `${r}s`);
}

/**
 * LiveReader enforces the reader rules of live1 on a byte stream of
 * records: the first is a head; then data, sync and last records whose
 * seq goes up by one from the first, each opened under the current head;
 * later heads (with a higher head seq) replace the meta and init. A
 * record that does not open fails with its seq (and, for data, sync and
 * last records, the head it was opened under: err.head), before any byte
 * of it is handed out; so does a gap in seq. The end is clean only at a
 * last record.
 */
export class LiveReader {
  /**
   * @param {CryptoKey} kl
   * @param {LiveReadLimits} [opts]
   */
  constructor(kl, opts = {}) {
    this.kl = kl;
    this.buf = new Uint8Array(0);
    this.head = -1; // seq of the current head, -1 before the first
    this.next = -1; // seq the next data record must have, -1 before the first
    this.ended = false;
    /** @type {LiveError|null} a failure after records still to hand out */
    this.err = null;
    this.now = opts.now ?? (() => Date.now());
    this.maxLag = opts.maxLag || MAX_LAG_MS;
    this.catchUp = opts.catchUp && opts.catchUp > 0 ? opts.catchUp : CATCH_UP_MS;
    this.start = -1; // the reader's clock at the first record, -1 before it
    this.lastTime = -1; // time of the newest record
    this.caughtUp = this.maxLag < 0;
    this.expired = false; // the catch-up deadline passed (openRecords' timer)
  }

  /** The error of a reader that did not catch up, at its clock now. */
  staleError(now = this.now()) {
    return new LiveError(`the channel is ${fmtDuration(now - this.lastTime)} behind its publisher: a relay is replaying or delaying it (or the publisher's clock is off; max lag ${fmtDuration(this.maxLag)})`, 'stale');
  }

  /**
   * The catch-up deadline passed (openRecords' timer): unless caught up,
   * the reader fails with 'stale'.
   * @returns {boolean} whether the reader is now failed
   */
  expire() {
    if (this.caughtUp) return false;
    this.expired = true;
    return true;
  }

  /**
   * Feeds bytes; returns the records they complete, opened, in order.
   * @param {Uint8Array} b
   * @returns {Promise<LiveRecord[]>}
   */
  async push(b) {
    if (this.err) throw this.err;
    this.buf = this.buf.length ? concat([this.buf, b]) : b;
    /** @type {LiveRecord[]} */
    const out = [];
    try {
      await this.parse(out);
    } catch (err) {
      // The records before the failure are handed out first.
      if (out.length === 0) throw err;
      this.err = err;
    }
    return out;
  }

  /**
   * Opens the whole records in buf into out.
   * @param {LiveRecord[]} out
   */
  async parse(out) {
    let at = 0;
    while (this.buf.length - at >= 4 && !this.ended) {
      const v = new DataView(this.buf.buffer, this.buf.byteOffset + at);
      const len = v.getUint32(0);
      if (len < MIN_LEN || 4 + len > MAX_RECORD) {
        throw new LiveError(`a record of ${len} bytes is outside [${MIN_LEN}, ${MAX_RECORD - 4}]: not a live1 stream`, 'malformed');
      }
      if (this.buf.length - at < 4 + len) break;
      const kind = this.buf[at + 4];
      const seq = v.getUint32(5) * 2 ** 32 + v.getUint32(9);
      const tb = this.buf.subarray(at + 13, at + 21);
      const sealed = this.buf.subarray(at + RECORD_HEADER, at + 4 + len);
      at += 4 + len;
      const rec = await this.open(kind, seq, tb, sealed);
      if (rec) out.push(rec);
    }
    this.buf = at === this.buf.length ? new Uint8Array(0) : this.buf.slice(at);
  }

  /**
   * Checks the order rules and opens one record.
   * @param {number} kind
   * @param {number} seq
   * @param {Uint8Array} tb its 8 time bytes
   * @param {Uint8Array} sealed
   * @returns {Promise<LiveRecord|null>} null for a replay of the current head
   */
  async open(kind, seq, tb, sealed) {
    if (kind > Kind.LAST) throw new LiveError(`record ${seq} has kind ${kind}, not one of live1`, 'malformed', seq);
    if (this.head < 0 && kind !== Kind.HEAD) throw new LiveError('no channel head: the first record is not the channel head', 'nohead', seq);
    if (kind !== Kind.HEAD && this.next >= 0 && seq !== this.next) {
      throw new LiveError(`record ${this.next} missing (got ${seq}): the relay dropped or reordered data`, 'missing', this.next);
    }
    let plain;
    try {
      plain = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: recordNonce(seq, FLAGS[kind]), additionalData: recordAAD(tb, kind, seq, this.head) }, this.kl, sealed));
    } catch {
      if (kind === Kind.HEAD && this.head < 0) throw new LiveError(`the channel head (head ${seq}) does not open: the key in the link is wrong, or a relay altered it`, 'key', seq);
      if (kind === Kind.HEAD) throw new LiveError(`head record ${seq} does not open: a relay altered, swapped or replayed it`, 'integrity', seq);
      // The words of proto.LiveRecordError, shared through the vectors.
      const err = new LiveError(`${KIND_NAMES[kind]} record ${seq} does not open under head ${this.head}: a relay changed it or withheld a newer channel head, or it is of another channel or key`, 'integrity', seq);
      err.head = this.head;
      throw err;
    }
    if (kind === Kind.HEAD) {
      if (seq === this.head) return null; // the current head again (a relay's replay): nothing new
      if (seq < this.head) throw new LiveError(`head ${seq} after head ${this.head}: a relay replayed an old channel head`, 'head', seq);
    }
    const tv = new DataView(tb.buffer, tb.byteOffset, 8);
    const time = tv.getUint32(0) * 2 ** 32 + tv.getUint32(4);
    if (time < this.lastTime) {
      throw new LiveError(`${KIND_NAMES[kind]} record ${seq} goes back in time: its publisher time is before the previous record's: a relay replayed or spliced it`, 'time', seq);
    }
    this.lastTime = time;
    this.checkFresh(time, kind === Kind.LAST);
    if (kind === Kind.HEAD) {
      this.head = seq;
      return { kind: 'head', seq, time, ...parseHead(plain) };
    }
    this.next = seq + 1;
    if (kind === Kind.LAST) this.ended = true;
    return { kind: /** @type {'data'|'sync'|'last'} */ (KIND_NAMES[kind]), seq, time, data: plain };
  }

  /**
   * The catch-up rule, for a record of time t that just opened (the
   * channel's last record when last): throws LiveError 'stale'.
   * @param {number} t
   * @param {boolean} last
   */
  checkFresh(t, last) {
    const now = this.now();
    if (this.start < 0) this.start = now;
    if (this.caughtUp) return;
    if (this.expired) throw this.staleError(now);
    if (now - t <= this.maxLag) {
      this.caughtUp = true;
      return;
    }
    if (last || now - this.start > this.catchUp) throw this.staleError(now);
  }
}

/**
 * Opens the records of body with Kl, enforcing the reader rules: an async
 * iterator of LiveRecord that ends after the last record, and throws
 * LiveError (kind 'cut') when the body ends before it. From the first
 * record a timer of catchUp runs until the reader has caught up with the
 * live edge: when it fires, the body is cancelled and the iterator
 * throws LiveError 'stale', even when no byte came meanwhile.
 * @param {CryptoKey} kl
 * @param {ReadableStream<Uint8Array>} body
 * @param {LiveReadLimits} [opts]
 * @returns {AsyncGenerator<LiveRecord>}
 */
export async function* openRecords(kl, body, opts = {}) {
  const r = new LiveReader(kl, opts);
  const reader = body.getReader();
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  let timer;
  const arm = () => {
    if (timer === undefined && r.start >= 0 && !r.caughtUp) {
      timer = setTimeout(() => {
        if (r.expire()) reader.cancel().catch(() => {});
      }, r.catchUp);
    }
  };
  try {
    for (;;) {
      let res;
      try {
        res = await reader.read();
      } catch (err) {
        if (r.expired) throw r.staleError();
        throw new LiveError(`the channel ended without its end mark: the connection broke (${err.message})`, 'cut');
      }
      if (r.expired) throw r.staleError();
      if (res.done) break;
      const recs = await r.push(res.value);
      arm();
      for (const rec of recs) {
        yield rec;
        if (rec.kind === 'last') return;
      }
      if (r.err) throw r.err;
    }
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => {});
  }
  if (r.buf.length) throw new LiveError(`the channel ended without its end mark, inside a record (${r.buf.length} bytes of it)`, 'cut');
  if (r.head < 0) throw new LiveError('the channel ended without its end mark, before its head', 'cut');
  throw new LiveError('the channel ended without its end mark', 'cut');
}

/**
 * @typedef {object} LiveRead
 * @property {string} id the channel id
 * @property {{type: string, name: string}} meta the head's meta
 * @property {Uint8Array} init the head's init bytes
 * @property {AsyncGenerator<LiveRecord>} records the records after the first head (heads included)
 * @property {ReadableStream<Uint8Array>} stream init, then the data of every record: a later
 *   head's init bytes come again where it appears; errors with LiveError
 * @property {() => void} cancel
 */

/**
 * Opens a channel for reading: GET RDV/v1/live/ID (the rendezvous
 * redirects to a relay) and waits for the channel's head. Use either
 * records or stream, not both.
 * @param {string} link RDV/l/ID#k=KEY
 * @param {{signal?: AbortSignal, key?: Uint8Array} & LiveReadLimits} [opts] maxLag, catchUp
 *   and now: the reader's limits (a relay that replays or delays the channel fails it, 'stale')
 * @returns {Promise<LiveRead>}
 */
export async function readLive(link, opts = {}) {
  const { base, id, key: linkKey } = parseLink(link);
  const key = opts.key ?? linkKey;
  if (!key) throw new LiveError('the link has no key (#k=...): the channel is encrypted end to end', 'key');
  const kl = await deriveKey(key, id);
  const abort = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, abort.signal]) : abort.signal;
  let res;
  try {
    res = await fetch(`${base}/v1/live/${id}`, { cache: 'no-store', signal });
  } catch (err) {
    throw new LiveError(`cannot reach the channel (${err.message})`, 'http');
  }
  if (!res.ok || !res.body) {
    let why = '';
    try {
      why = (await res.json()).error ?? '';
    } catch {
      // not JSON
    }
    throw new LiveError(res.status === 404 ? 'no such live channel: it has ended or never started' : `the channel answered ${res.status}${why ? `: ${why}` : ''}`, 'http', -1, res.status);
  }
  const ctype = (res.headers.get('Content-Type') ?? '').split(';')[0].trim();
  if (ctype && ctype !== CONTENT_TYPE) {
    res.body.cancel().catch(() => {});
    throw new LiveError(`the channel is not sealed (${ctype}, not ${CONTENT_TYPE}): read it at ${base}/v1/live/${id}`, 'malformed');
  }
  const records = openRecords(kl, res.body, { maxLag: opts.maxLag, catchUp: opts.catchUp, now: opts.now });
  const first = await records.next();
  if (first.done || first.value.kind !== 'head') throw new LiveError('no channel head', 'nohead');
  const head = first.value;
  const stream = new ReadableStream({
    start(c) {
      if (head.init.length) c.enqueue(head.init);
    },
    async pull(c) {
      for (;;) {
        let r;
        try {
          r = await records.next();
        } catch (err) {
          c.error(err);
          return;
        }
        if (r.done) {
          c.close();
          return;
        }
        const rec = r.value;
        const bytes = rec.kind === 'head' ? rec.init : rec.data;
        if (rec.kind === 'last') {
          if (bytes.length) c.enqueue(bytes);
          c.close();
          return;
        }
        if (bytes.length) {
          c.enqueue(bytes);
          return;
        }
      }
    },
    cancel() {
      abort.abort();
      records.return(undefined);
    },
  }, { highWaterMark: 0 });
  return { id, meta: head.meta, init: head.init, records, stream, cancel: () => abort.abort() };
}

// --- publishing ---

/**
 * @typedef {object} GoLiveOptions
 * @property {string} [rendezvous] base URL; defaults to the page's origin
 * @property {MediaStream|Blob|ReadableStream<Uint8Array>} source a camera or screen (recorded
 *   with MediaRecorder as WebM), or bytes read progressively
 * @property {string} [type] MIME type of the stream; defaults to the recorder's or the Blob's
 * @property {string} [name] file name for readers who save the stream
 * @property {number} [rate] bytes per second at most, for Blob and ReadableStream sources (0: as fast as the relay takes them)
 * @property {boolean} [wait] read a Blob or ReadableStream source only after start() (the head goes at once)
 * @property {number} [timeslice] ms of media per MediaRecorder chunk; default 250
 * @property {string} [mimeType] MediaRecorder type; default the first of VP8/Opus WebM this browser records
 * @property {(n: number) => void} [onViewers] subscribers of the channel at its source relay
 * @property {(state: string, detail?: any) => void} [onState] 'live', 'streaming', 'ended', 'failed'
 * @property {number} [tick] ms of quiet after which a tick (an empty data record) goes; default TICK_MS
 */

/** Bytes a publisher lets wait in its WebSocket before it holds back. */
const SEND_BUFFER = 1 << 20;
const DRAIN_POLL_MS = 10;
/** Most ms between two keyframes of a recorded camera: a joining reader's wait. */
const KEYFRAME_MS = 1000;

/**
 * A live channel being published. Events: 'state' {state, detail},
 * 'viewers' {viewers}, 'record' {kind, seq, size, at, tick} for each data,
 * sync or last record handed to the WebSocket (at: Date.now(); tick: an
 * empty data record sent because the channel was quiet).
 */
export class LiveChannel extends EventTarget {
  constructor() {
    super();
    /** @type {string} the share link, RDV/l/ID#k=KEY */
    this.link = '';
    /** @type {string} the channel id */
    this.id = '';
    /** @type {string} the raw stream of sealed records, RDV/v1/live/ID */
    this.url = '';
    /** @type {string} the relay the records go to */
    this.relay = '';
    this.viewers = 0;
    this.sent = 0; // plaintext bytes sent in data records
    this.records = 0; // records sent
    /** @type {{type: string, name: string}} */
    this.meta = { type: '', name: '' };
    /** @type {'connecting'|'live'|'streaming'|'ended'|'failed'} */
    this.state = 'connecting';
    /** @type {Promise<void>} settles when the channel has ended (rejects when it failed) */
    this.done = Promise.resolve();
    /** @type {() => void} start a source that waits (GoLiveOptions.wait) */
    this.start = () => {};
    /** @type {() => Promise<void>} */
    this.stop = async () => {};
  }
}

/**
 * Publishes source as a sealed live channel. It resolves once the relay
 * took the channel (the head is sent and the link usable); the source is
 * then streamed until it ends or stop() is called, which sends the end
 * mark: readers then end cleanly.
 * @param {GoLiveOptions} opts
 * @returns {Promise<LiveChannel>}
 */
export async function goLive(opts) {
  const ch = new LiveChannel();
  const rdv = (opts.rendezvous ?? globalThis.location.origin).replace(/\/$/, '');
  const secret = newSecret();
  const id = await channelID(secret);
  const key = crypto.getRandomValues(new Uint8Array(KEY_SIZE));
  const kl = await deriveKey(key, id);
  const setState = (/** @type {LiveChannel['state']} */ s, detail) => {
    ch.state = s;
    opts.onState?.(s, detail);
    ch.dispatchEvent(new CustomEvent('state', { detail: { state: s, detail } }));
  };

  // Sealed: volunteer relays may carry it (they see sealed records only).
  const res = await fetch(`${rdv}/v1/live/${id}?enc=${VERSION}`, { method: 'POST', headers: { Authorization: `Bearer ${secret}` } });
  const entry = await res.json().catch(() => ({}));
  if (!res.ok) throw new LiveError(`the rendezvous refused the channel: ${entry.error ?? res.status}`, 'http', -1, res.status);
  ch.id = id;
  ch.url = entry.url ?? `${rdv}/v1/live/${id}`;
  ch.relay = entry.relay ?? '';
  ch.link = formatLink(entry.share || `${rdv}/l/${id}`, key);

  const ws = new WebSocket(String(entry.push_url).replace(/^http/, 'ws'));
  ws.binaryType = 'arraybuffer';
  let closed = /** @type {CloseEvent|null} */ (null);
  const closedP = new Promise((resolve) => ws.addEventListener('close', (ev) => {
    closed = ev;
    resolve(ev);
  }));
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', () => ws.send(JSON.stringify({ secret, enc: VERSION })), { once: true });
    ws.addEventListener('message', (ev) => {
      let m = null;
      try {
        m = typeof ev.data === 'string' ? JSON.parse(ev.data) : null;
      } catch {
        // not JSON
      }
      if (m?.ok === true) resolve(undefined);
      else reject(new LiveError(`the relay refused the channel: ${ev.data}`, 'http'));
    }, { once: true });
    closedP.then((ev) => reject(new LiveError(`the relay refused the channel: ${ev.reason || `close ${ev.code}`}`, 'http', -1, ev.code >= 4000 ? ev.code - 4000 : 0)));
  });
  ws.addEventListener('message', (ev) => {
    if (typeof ev.data !== 'string') return;
    try {
      const m = JSON.parse(ev.data);
      if (typeof m.subscribers === 'number') {
        ch.viewers = m.subscribers;
        opts.onViewers?.(m.subscribers);
        ch.dispatchEvent(new CustomEvent('viewers', { detail: { viewers: m.subscribers } }));
      }
    } catch {
      // ignore what is not JSON
    }
  });

  let seq = 0, headSeq = 0; // headSeq: the next head's; records are sealed under headSeq - 1
  let lastTime = 0; // time of the last record: times never go back
  let lastAt = 0; // Date.now() when the last record was handed on (0 before the head)
  let ending = false; // the last record is on its way: no more ticks
  let chain = Promise.resolve(); // records go one after the other, ticks between the source's
  const tickMs = opts.tick && opts.tick > 0 ? opts.tick : TICK_MS;
  const failure = () => new LiveError(`the relay closed the channel: ${closed?.reason || `close ${closed?.code}`}`, 'http');
  /** @param {number} kind @param {Uint8Array} plain @param {boolean} tick */
  const sendNow = async (kind, plain, tick) => {
    if (tick && (ending || closed || Date.now() - lastAt < tickMs)) return;
    if (kind !== Kind.HEAD && headSeq === 0) throw new LiveError('a record before the channel head', 'nohead');
    const s = kind === Kind.HEAD ? headSeq++ : seq++;
    lastTime = Math.max(lastTime, Date.now());
    const rec = await sealRecord(kl, kind, s, headSeq - 1, plain, lastTime);
    while (ws.bufferedAmount > SEND_BUFFER && !closed) await sleep(DRAIN_POLL_MS);
    if (closed) throw failure();
    ws.send(rec);
    lastAt = Date.now();
    ch.records++;
    if (kind !== Kind.HEAD) ch.dispatchEvent(new CustomEvent('record', { detail: { kind, seq: s, size: rec.length, at: lastAt, tick } }));
  };
  /** @param {number} kind @param {Uint8Array} plain @param {boolean} [tick] */
  const send = (kind, plain, tick = false) => {
    if (kind === Kind.LAST) ending = true;
    const p = chain.then(() => sendNow(kind, plain, tick));
    chain = p.catch(() => {});
    return p;
  };
  /** @param {Uint8Array} b @param {boolean} sync */
  const sendData = async (b, sync) => {
    for (let at = 0; at < b.length; at += MAX_PLAIN) {
      const piece = b.subarray(at, Math.min(b.length, at + MAX_PLAIN));
      await send(sync && at === 0 ? Kind.SYNC : Kind.DATA, piece);
      ch.sent += piece.length;
    }
  };
  /** @param {{type: string, name?: string}} meta @param {Uint8Array} [init] */
  const sendHead = async (meta, init) => {
    ch.meta = { type: meta.type, name: meta.name ?? '' };
    await send(Kind.HEAD, headPlain(meta, init));
  };

  // The source as pieces: a MediaRecorder's chunks or a byte stream.
  const src = opts.source;
  /** @type {MediaRecorder|null} */
  let recorder = null;
  /** @type {AsyncIterable<Uint8Array>} */
  let chunks;
  let type = opts.type ?? '';
  let webm = false;
  if (typeof MediaStream !== 'undefined' && src instanceof MediaStream) {
    const video = src.getVideoTracks().length > 0;
    const kinds = video ? ['video/webm;codecs=vp8,opus', 'video/webm;codecs=vp8', 'video/webm'] : ['audio/webm;codecs=opus', 'audio/webm'];
    const mimeType = opts.mimeType ?? kinds.find((t) => MediaRecorder.isTypeSupported(t)) ?? '';
    // A keyframe every KEYFRAME_MS (Chromium's MediaRecorder option; others
    // ignore it) starts a Cluster a joining reader can decode at once.
    recorder = new MediaRecorder(src, /** @type {MediaRecorderOptions} */ ({ ...(mimeType ? { mimeType } : {}), videoKeyFrameIntervalDuration: KEYFRAME_MS }));
    type ||= recorder.mimeType || mimeType || 'video/webm';
    webm = true;
    chunks = recorderChunks(recorder, opts.timeslice ?? 250);
  } else if (src instanceof Blob) {
    type ||= src.type || 'application/octet-stream';
    webm = /^(video|audio)\/webm\b/.test(type);
    chunks = streamChunks(src.stream());
  } else if (src instanceof ReadableStream) {
    type ||= 'application/octet-stream';
    webm = /^(video|audio)\/webm\b/.test(type);
    chunks = streamChunks(src);
  } else {
    throw new LiveError('source must be a MediaStream, a Blob or a ReadableStream', 'other');
  }
  const name = opts.name ?? (/** @type {File} */ (src).name || '');

  let stopping = false;
  /** @type {() => void} */
  let started = () => {};
  const gate = opts.wait && !recorder ? new Promise((r) => { started = () => r(undefined); }) : Promise.resolve();
  ch.start = () => started();
  /** @type {() => void} */
  let wake = () => {};
  const stopped = new Promise((r) => { wake = () => r(undefined); });
  ch.stop = async () => {
    stopping = true;
    started();
    wake();
    if (recorder && recorder.state !== 'inactive') recorder.stop();
    await ch.done.catch(() => {});
  };
  // A relay that goes away ends the channel (not cleanly) even while the
  // source waits for start() or is quiet: the pump stops and fails.
  closedP.then(() => {
    if (ch.state === 'ended') return;
    stopping = true;
    started();
    wake();
    if (recorder && recorder.state !== 'inactive') recorder.stop();
  });

  // The head goes first: at once, or (WebM) when the first Cluster shows
  // where the init bytes end.
  const splitter = webm ? new WebMSplitter() : null;
  if (!splitter) await sendHead({ type, name });
  setState('live');

  // Ticks: a channel quiet for tickMs (after its head) sends an empty data
  // record, so that readers see a recent record (their catch-up rule).
  let ticking = false;
  const ticker = setInterval(() => {
    if (ticking || ending || closed || lastAt === 0 || Date.now() - lastAt < tickMs) return;
    ticking = true;
    send(Kind.DATA, new Uint8Array(0), true).catch(() => {}).finally(() => { ticking = false; });
  }, Math.min(1000, tickMs / 2));

  const pump = async () => {
    const rate = recorder ? 0 : opts.rate ?? 0;
    let t0 = 0, paced = 0;
    for await (const chunk of chunks) {
      /** @type {{bytes: Uint8Array, sync: boolean}[]} */
      let parts = [{ bytes: chunk, sync: false }];
      if (splitter) {
        const r = splitter.push(chunk);
        if (r.init) await sendHead({ type, name }, r.init);
        parts = r.parts;
      }
      if (!parts.length) continue;
      if (!t0) {
        await Promise.race([gate, stopped]);
        if (stopping && !recorder) break;
        t0 = performance.now();
        setState('streaming');
      }
      for (const p of parts) {
        if (rate > 0) {
          // Pace: piece by piece, never ahead of rate.
          for (let at = 0; at < p.bytes.length; at += MAX_PLAIN) {
            const piece = p.bytes.subarray(at, Math.min(p.bytes.length, at + MAX_PLAIN));
            const due = t0 + (paced * 1000) / rate;
            const now = performance.now();
            if (due > now) await Promise.race([sleep(due - now), stopped]);
            if (stopping && !recorder) break;
            await sendData(piece, p.sync && at === 0);
            paced += piece.length;
          }
        } else {
          await sendData(p.bytes, p.sync);
        }
        if (stopping && !recorder) break;
      }
      if (stopping && !recorder) break;
    }
    // The end: bytes the splitter held back (never a Cluster: all of it
    // was init) go in the last record, or the head.
    let rest = splitter ? splitter.flush() : new Uint8Array(0);
    if (splitter && !splitter.started) {
      await sendHead({ type, name }, rest);
      rest = new Uint8Array(0);
    }
    if (rest.length > MAX_PLAIN) {
      await sendData(rest, false);
      rest = new Uint8Array(0);
    }
    await send(Kind.LAST, rest);
    ch.sent += rest.length;
    // The relay closes 1000 once readers have the end.
    const ev = await closedP;
    if (/** @type {CloseEvent} */ (ev).code !== 1000) throw failure();
  };
  if (recorder) recorder.start(opts.timeslice ?? 250);
  ch.done = pump().finally(() => clearInterval(ticker)).then(() => setState('ended'), (err) => {
    try {
      ws.close(1000);
    } catch {
      // closed already
    }
    if (recorder && recorder.state !== 'inactive') recorder.stop();
    setState('failed', err);
    throw err;
  });
  ch.done.catch(() => {});
  return ch;
}

/**
 * The chunks of a MediaRecorder as bytes, in order, until it stops.
 * @param {MediaRecorder} rec
 * @param {number} _timeslice
 * @returns {AsyncGenerator<Uint8Array>}
 */
async function* recorderChunks(rec, _timeslice) {
  /** @type {Promise<Uint8Array>[]} */
  const queue = [];
  let done = false;
  /** @type {() => void} */
  let notify = () => {};
  rec.addEventListener('dataavailable', (ev) => {
    if (ev.data.size) queue.push(ev.data.arrayBuffer().then((b) => new Uint8Array(b)));
    notify();
  });
  rec.addEventListener('stop', () => {
    done = true;
    notify();
  });
  for (;;) {
    if (queue.length) {
      yield await /** @type {Promise<Uint8Array>} */ (queue.shift());
      continue;
    }
    if (done) return;
    await new Promise((r) => { notify = () => r(undefined); });
  }
}

/**
 * @param {ReadableStream<Uint8Array>} s
 * @returns {AsyncGenerator<Uint8Array>}
 */
async function* streamChunks(s) {
  const r = s.getReader();
  let end = false;
  try {
    for (;;) {
      const { done, value } = await r.read();
      if (done) {
        end = true;
        return;
      }
      if (value.length) yield value;
    }
  } finally {
    if (!end) r.cancel().catch(() => {});
  }
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export { b64urlDecode, b64urlEncode, E2EError };
