// WebM sync points for live channels (format live1, see live.js): a
// streaming walker of the EBML structure of a WebM stream that finds where
// each Cluster begins, so that a publisher can send the bytes before the
// first Cluster as the channel head's init bytes and mark the record that
// begins each Cluster as a sync record, where a reader may join.
//
// Clusters are found by walking elements (id, size, body), never by
// scanning for the Cluster id: the id's four bytes may well occur inside
// frame data. The walker knows three containers and skips every other
// element by its size:
//
//	top level   EBML header (skipped), Segment (entered)
//	Segment     Cluster (entered, reported), SeekHead, Info, Tracks, Cues, ... (skipped)
//	Cluster     Timecode, SimpleBlock, BlockGroup, ... (skipped)
//
// MediaRecorder writes the Segment and its Clusters with unknown size (all
// ones): an unknown-size Cluster ends where an element that may not be its
// child begins (a Segment-level element, another Cluster, a new EBML
// header). No dependency; runs in browsers and in Node.

/** EBML ids (with their length marker bits, as written). */
export const ID = Object.freeze({
  EBML: 0x1a45dfa3,
  SEGMENT: 0x18538067,
  CLUSTER: 0x1f43b675,
  SEEK_HEAD: 0x114d9b74,
  INFO: 0x1549a966,
  TRACKS: 0x1654ae6b,
  CUES: 0x1c53bb6b,
  TAGS: 0x1254c367,
  CHAPTERS: 0x1043a770,
  ATTACHMENTS: 0x1941a469,
});

// Elements that end an unknown-size Cluster: those that may not be its
// children.
const ENDS_CLUSTER = new Set([ID.EBML, ID.SEGMENT, ID.CLUSTER, ID.SEEK_HEAD, ID.INFO, ID.TRACKS, ID.CUES, ID.TAGS, ID.CHAPTERS, ID.ATTACHMENTS]);

/** The stream is not WebM as the walker understands it. */
export class WebMError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(`webm: ${message}`);
    this.name = 'WebMError';
  }
}

/**
 * Length in bytes of a variable-size integer from its first byte (1 to 8),
 * or 0 when the byte is zero.
 * @param {number} b
 */
function vintLength(b) {
  for (let n = 1; n <= 8; n++) if (b & (0x100 >> n)) return n;
  return 0;
}

/**
 * EBMLWalker walks a WebM stream fed in pieces of any size and reports
 * the absolute offsets where Clusters begin. It holds at most one element
 * header (12 bytes), never the stream.
 */
export class EBMLWalker {
  constructor() {
    this.pos = 0; // absolute offset of the next byte
    this.skip = 0; // bytes of the current element's body left to skip
    /** @type {number[]} */
    this.hdr = []; // bytes of the element header being read
    /** @type {{id: number, end: number}[]} open Segment and Cluster; end is Infinity when unknown */
    this.stack = [];
  }

  /**
   * Feeds the next bytes of the stream.
   * @param {Uint8Array} b
   * @returns {number[]} the absolute offsets of Clusters that begin in b, in order
   */
  push(b) {
    /** @type {number[]} */
    const found = [];
    let i = 0;
    while (i < b.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, b.length - i);
        this.skip -= n;
        i += n;
        this.pos += n;
        continue;
      }
      if (this.hdr.length === 0) {
        while (this.stack.length && this.stack[this.stack.length - 1].end <= this.pos) this.stack.pop();
      }
      this.hdr.push(b[i]);
      i++;
      this.pos++;
      const h = this.hdr;
      const idLen = vintLength(h[0]);
      if (idLen === 0 || idLen > 4) throw new WebMError(`bad element id byte 0x${h[0].toString(16)} at ${this.pos - h.length}`);
      if (h.length <= idLen) continue;
      const sizeLen = vintLength(h[idLen]);
      if (sizeLen === 0) throw new WebMError(`bad element size byte at ${this.pos - h.length + idLen}`);
      if (h.length < idLen + sizeLen) continue;
      let id = 0;
      for (let k = 0; k < idLen; k++) id = id * 256 + h[k];
      let size = h[idLen] & (0xff >> sizeLen);
      let allOnes = size === (0xff >> sizeLen);
      for (let k = 1; k < sizeLen; k++) {
        size = size * 256 + h[idLen + k];
        allOnes &&= h[idLen + k] === 0xff;
      }
      const start = this.pos - h.length;
      this.hdr = [];
      this.element(id, allOnes ? Infinity : size, start, found);
    }
    return found;
  }

  /**
   * Acts on an element whose header ends at this.pos.
   * @param {number} id
   * @param {number} size body size, Infinity when unknown
   * @param {number} start offset of the element's first byte
   * @param {number[]} found
   */
  element(id, size, start, found) {
    const top = () => this.stack[this.stack.length - 1];
    // Unknown-size containers end where an element they may not hold begins.
    if (top()?.id === ID.CLUSTER && top().end === Infinity && ENDS_CLUSTER.has(id)) this.stack.pop();
    if (top()?.id === ID.SEGMENT && top().end === Infinity && (id === ID.EBML || id === ID.SEGMENT)) this.stack.pop();
    const parent = top()?.id ?? 0;
    const end = this.pos + size;
    if (id === ID.SEGMENT && parent === 0) {
      this.stack.push({ id, end });
      return;
    }
    if (id === ID.CLUSTER && parent === ID.SEGMENT) {
      found.push(start);
      this.stack.push({ id, end });
      return;
    }
    if (size === Infinity) throw new WebMError(`element 0x${id.toString(16)} at ${start} has an unknown size`);
    if (parent === 0 && id !== ID.EBML) throw new WebMError(`element 0x${id.toString(16)} at ${start} is not a WebM top-level element`);
    this.skip = size;
  }
}

/**
 * WebMSplitter cuts a WebM stream, fed in pieces, into the channel head's
 * init bytes (everything before the first Cluster) and pieces of media
 * that begin either anywhere (sync false) or at a Cluster (sync true).
 */
export class WebMSplitter {
  constructor() {
    this.walker = new EBMLWalker();
    /** @type {Uint8Array[]} bytes before the first Cluster */
    this.head = [];
    this.started = false; // the first Cluster was seen
    this.pending = new Uint8Array(0); // held back: an element header not complete yet
  }

  /**
   * Feeds the next bytes.
   * @param {Uint8Array} b
   * @returns {{init: Uint8Array|null, parts: {bytes: Uint8Array, sync: boolean}[]}} init
   *   once, with the piece where the first Cluster begins; then parts
   */
  push(b) {
    const found = this.walker.push(b);
    // Bytes of an element header not complete yet are held back: they
    // may begin a Cluster.
    const hold = this.walker.hdr.length;
    const buf = this.pending.length ? concatBytes([this.pending, b]) : b;
    const base = this.walker.pos - buf.length; // absolute offset of buf[0]
    const end = buf.length - hold;
    this.pending = buf.slice(end);
    const offs = found.map((o) => o - base);
    /** @type {Uint8Array|null} */
    let init = null;
    /** @type {{bytes: Uint8Array, sync: boolean}[]} */
    const parts = [];
    let from = 0;
    if (!this.started) {
      if (offs.length === 0) {
        this.head.push(buf.slice(0, end));
        return { init, parts };
      }
      this.head.push(buf.slice(0, offs[0]));
      init = concatBytes(this.head);
      this.head = [];
      this.started = true;
      from = offs[0];
    }
    let s = from;
    for (const c of [...offs.filter((o) => o > from), end]) {
      if (c > s) parts.push({ bytes: buf.subarray(s, c), sync: offs.includes(s) });
      s = c;
    }
    return { init, parts };
  }

  /**
   * The bytes held back at the end of the stream (an element header cut
   * short), and the init bytes when no Cluster ever began.
   * @returns {Uint8Array}
   */
  flush() {
    const rest = concatBytes([...this.head, this.pending]);
    this.head = [];
    this.pending = new Uint8Array(0);
    return rest;
  }
}

/**
 * Concatenates byte arrays.
 * @param {Uint8Array[]} parts
 */
function concatBytes(parts) {
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

// Codec ids of WebM tracks and their names in a MIME type's codecs
// parameter (RFC 6381, as MediaSource.isTypeSupported takes them).
const CODECS = new Map([['V_VP8', 'vp8'], ['V_VP9', 'vp9'], ['A_OPUS', 'opus'], ['A_VORBIS', 'vorbis']]);
const TRACK_ENTRY = 0xae;
const CODEC_ID = 0x86;

/**
 * The codecs of the tracks of a WebM's init bytes (EBML header, Segment
 * up to its first Cluster), for a MIME type that lacks them: a "video/webm"
 * without codecs is not a type MediaSource takes. Codecs it does not know
 * are left out; malformed bytes give what was found before them.
 * @param {Uint8Array} init
 * @returns {string[]} e.g. ["vp8", "opus"]
 */
export function webmCodecs(init) {
  /** @type {string[]} */
  const out = [];
  /**
   * Walks the elements of init[from, to).
   * @param {number} from
   * @param {number} to
   * @param {number} depth 0 top, 1 Segment, 2 Tracks, 3 TrackEntry
   */
  const walk = (from, to, depth) => {
    let at = from;
    while (at < to) {
      const idLen = vintLength(init[at]);
      if (idLen === 0 || idLen > 4 || at + idLen >= to) return;
      let id = 0;
      for (let k = 0; k < idLen; k++) id = id * 256 + init[at + k];
      const sizeLen = vintLength(init[at + idLen]);
      if (sizeLen === 0 || at + idLen + sizeLen > to) return;
      let size = init[at + idLen] & (0xff >> sizeLen);
      let allOnes = size === (0xff >> sizeLen);
      for (let k = 1; k < sizeLen; k++) {
        size = size * 256 + init[at + idLen + k];
        allOnes &&= init[at + idLen + k] === 0xff;
      }
      const body = at + idLen + sizeLen;
      const end = allOnes ? to : Math.min(to, body + size);
      if ((depth === 0 && id === ID.SEGMENT) || (depth === 1 && id === ID.TRACKS) || (depth === 2 && id === TRACK_ENTRY)) {
        walk(body, end, depth + 1);
      } else if (depth === 3 && id === CODEC_ID) {
        const name = CODECS.get(String.fromCharCode(...init.subarray(body, end)));
        if (name && !out.includes(name)) out.push(name);
      }
      at = end;
    }
  };
  walk(0, init.length, 0);
  return out;
}
