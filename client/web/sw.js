// meshup Service Worker, served at /sw.js (scope: the whole origin) and
// registered as a module: it streams downloads to disk and decrypts
// end-to-end encrypted items (format e2e1, /web/e2e.js) for the page.
//
// Downloads. A download of item ID is a navigation to /dl/ID?key=TAG. The
// worker answers it with a stream that it fills by fetching /v1/items/ID
// (following the rendezvous's redirect to a relay), so the browser writes
// the bytes to disk as they come and never holds the file in memory. When
// the response ends short (the sender's tab went away: relays end the body
// early, they never pad it) or the item answers 503 (sender offline), the
// worker waits and goes on with a Range request from where it stopped; for
// an encrypted item, from the chunk boundary where it stopped. It reports
// progress on the BroadcastChannel "meshup-downloads" as {key, id, state,
// received, size, message, chunk}, where state is running, waiting,
// integrity, resuming, done or failed.
//
// Failover (issue 10). Every relay names itself in the Meshup-Relay header
// of its item responses. When the exit relay fails mid-transfer (the
// connection breaks, the body ends short, it answers 5xx), the worker
// resumes at once with a Range request from where it stopped through the
// rendezvous, with ?avoid=ID1,ID2 naming the exits that failed, so that
// the rendezvous sends it to another live relay; it reports state
// resuming with a message naming the relay. The consumer sees a pause,
// not an error. Further tries without progress wait, with a backoff. A
// resumed response must start at the byte asked for and be of the same
// size (for a plaintext item: also of the same ETag), else the download
// fails rather than mixing two versions of the item.
//
// Previews. A media element (or fetch) of the page reads
// /sw/plain/ID[/anything]: the worker answers with the item's plaintext,
// honouring one Range: it maps the plaintext range to the ciphertext
// chunks that hold it, fetches just those, decrypts, and answers 206 with
// the plaintext Content-Range, so a seek moves only what the player needs.
//
// Keys. The page posts {type: 'key', id, key} (key in base64url, from the
// link's fragment: it never goes into a URL that reaches a server). A
// worker restarted by the browser forgets keys; it then asks the open pages
// with {type: 'need-key', id} on a MessageChannel, and a page showing that
// item answers {key}.
//
// Integrity. A chunk that does not open is never handed out. The worker
// reports it (state integrity, with the chunk index) and reads the range
// once more through another relay (?via=RELAY_ID, from GET /v1/status,
// neither the relay that served it nor one that failed); if that fails too
// the response fails.
//
// Live channels (format live1, /web/live.js). The page of a channel
// (/l/{id}) reads and decrypts it itself; to save it, it transfers the
// stream of plaintext to the worker ({type: 'live-save', tag, name,
// stream}) and navigates a hidden frame to /dl/live/TAG, which the worker
// answers with that stream as an attachment: the browser writes it to
// disk as it arrives, and the download fails if the channel does not end
// cleanly.
//
// Every other request goes to the network untouched.

/// <reference lib="webworker" />

import * as e2e from '/web/e2e.js';

const CHANNEL = 'meshup-downloads';
const PROGRESS_EVERY_MS = 100;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
// The most exits a resume asks the rendezvous to avoid (proto.MaxAvoid).
const MAX_AVOID = 8;
// A response that delivers no byte for this long while it is read is left
// like one whose exit died (meshup get --stall-timeout): longer than a
// relay's own pause while it waits for a quiet publisher (30 s).
const STALL_MS = 60_000;
const ASK_KEY_MS = 2000;
// Chunks a preview asks the relays for at once: a player reads ahead only
// as far as it needs, and a request bounded to 8 MiB keeps the relays
// from bringing in more than that beyond what the player took.
const PREVIEW_WINDOW_CHUNKS = 128;

const channel = new BroadcastChannel(CHANNEL);
/** @type {Map<string, Uint8Array>} item keys K by item id, from the pages */
const keys = new Map();
/** @type {Map<string, Promise<ItemInfo>>} */
const infos = new Map();

/**
 * What the worker knows of an item to read it.
 * @typedef {object} ItemInfo
 * @property {string} id
 * @property {boolean} encrypted
 * @property {number} cipherSize size on the wire
 * @property {number} size plaintext size
 * @property {string} name
 * @property {string} type
 * @property {CryptoKey|null} kp payload key
 */

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (ev) => ev.waitUntil(self.clients.claim()));

// A page with a download in progress posts {type: 'keepalive'} now and then:
// handling a message keeps the worker alive while a download waits for its
// sender, with no request in flight.
self.addEventListener('message', (ev) => {
  const m = ev.data;
  if (m?.type === 'keepalive') ev.waitUntil(Promise.resolve());
  if (m?.type === 'live-save' && typeof m.tag === 'string' && m.stream instanceof ReadableStream) {
    liveSave(m.tag).resolve({ stream: m.stream, name: String(m.name ?? 'live') });
  }
  if (m?.type === 'key' && typeof m.id === 'string' && typeof m.key === 'string') {
    try {
      const k = e2e.parseFragment(`k=${m.key}`);
      if (k && !sameKey(keys.get(m.id), k)) {
        keys.set(m.id, k);
        infos.delete(m.id);
      }
    } catch {
      // not a key: ignore
    }
  }
});

self.addEventListener('fetch', (ev) => {
  const url = new URL(ev.request.url);
  if (url.origin !== self.location.origin || ev.request.method !== 'GET') return;
  const live = url.pathname.match(/^\/dl\/live\/([0-9a-f-]{36})$/);
  if (live) {
    ev.respondWith(liveResponse(live[1]));
    return;
  }
  let m = url.pathname.match(/^\/dl\/([a-z2-7]{26})$/);
  if (m) {
    ev.respondWith(download(m[1], url.searchParams.get('key') || m[1]));
    return;
  }
  m = url.pathname.match(/^\/sw\/plain\/([a-z2-7]{26})(\/.*)?$/);
  if (m) ev.respondWith(plain(m[1], ev.request));
});

/**
 * @param {Uint8Array|undefined} a
 * @param {Uint8Array} b
 */
function sameKey(a, b) {
  return !!a && a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Asks the open pages for the key of item id.
 * @param {string} id
 * @returns {Promise<Uint8Array|null>}
 */
async function askKey(id) {
  const pages = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const answers = pages.map((c) => new Promise((resolve) => {
    const ch = new MessageChannel();
    const t = setTimeout(() => resolve(null), ASK_KEY_MS);
    ch.port1.onmessage = (ev) => {
      clearTimeout(t);
      try {
        resolve(typeof ev.data?.key === 'string' ? e2e.parseFragment(`k=${ev.data.key}`) : null);
      } catch {
        resolve(null);
      }
    };
    c.postMessage({ type: 'need-key', id }, [ch.port2]);
  }));
  for (const k of await Promise.all(answers)) if (k) return k;
  return null;
}

/** An error answered to the page as an HTTP status. */
class HTTPError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Reads an item's metadata and, for an encrypted one, its keys.
 * @param {string} id
 * @returns {Promise<ItemInfo>}
 */
function info(id) {
  let p = infos.get(id);
  if (!p) {
    p = loadInfo(id);
    infos.set(id, p);
    p.catch(() => infos.delete(id));
  }
  return p;
}

/**
 * @param {string} id
 * @returns {Promise<ItemInfo>}
 */
async function loadInfo(id) {
  let res;
  try {
    res = await fetch(`/v1/items/${id}/meta`, { cache: 'no-store' });
  } catch (err) {
    throw new HTTPError(503, `cannot reach the server (${err.message})`);
  }
  if (!res.ok) throw new HTTPError(404, 'no such item');
  const m = await res.json();
  if (!m.encrypted) {
    return { id, encrypted: false, cipherSize: m.size, size: m.size, name: m.name || id, type: m.mime, kp: null };
  }
  if (m.enc !== e2e.VERSION) throw new HTTPError(501, `the item is encrypted with ${m.enc}, which this page cannot read`);
  let k = keys.get(id) ?? null;
  if (!k) {
    k = await askKey(id);
    if (!k) throw new HTTPError(403, 'the link has no key: the item is encrypted end to end');
    keys.set(id, k);
  }
  const ks = await e2e.deriveKeys(k, id);
  let meta;
  try {
    meta = await e2e.openMeta(ks.metadata, m.meta ?? '');
  } catch (err) {
    throw new HTTPError(403, err.message);
  }
  let size;
  try {
    size = e2e.plainSize(m.size);
  } catch (err) {
    throw new HTTPError(502, err.message);
  }
  return { id, encrypted: true, cipherSize: m.size, size, name: meta.name || id, type: meta.type || 'application/octet-stream', kp: ks.payload };
}

/**
 * Picks a live relay other than the one whose response came from
 * servedFrom (named exit when it said so) and those in avoid, for a second
 * try after an integrity error.
 * @param {string} servedFrom the URL of the failed response
 * @param {string} exit the relay id the response named, or ''
 * @param {string[]} avoid relay ids that failed
 * @returns {Promise<string>} a relay id, or '' when there is no other
 */
async function otherRelay(servedFrom, exit, avoid) {
  try {
    const st = await (await fetch('/v1/status', { cache: 'no-store' })).json();
    const live = (st.relays ?? []).filter((r) => r.alive !== false);
    const from = live.find((r) => (exit && r.id === exit) || (r.reach && servedFrom.startsWith(r.reach)) || (r.http_url && servedFrom.startsWith(r.http_url)));
    return live.find((r) => r !== from && !avoid.includes(r.id))?.id ?? '';
  } catch {
    return '';
  }
}

/**
 * Plaintext bytes [a, b] of an item, read from the relays: ciphertext
 * ranges from the chunk boundary at or before the next byte wanted,
 * decrypted. An interrupted response is resumed (after a wait when the
 * sender is offline); a chunk that does not open is read once more
 * through another relay.
 */
class PlainReader {
  /**
   * @param {ItemInfo} it
   * @param {number} a first byte
   * @param {number} b last byte (inclusive)
   * @param {(state: string, message?: string, chunk?: number) => void} report
   * @param {{wait?: boolean}} [opts] wait: resume after interruptions forever (downloads); else give up after one retry
   */
  constructor(it, a, b, report, opts = {}) {
    this.it = it;
    this.pos = a;
    this.end = b + 1;
    this.report = report;
    this.wait = !!opts.wait;
    this.abort = new AbortController();
    /** @type {AbortController|null} the current request's, for the stall watchdog */
    this.req = null;
    /** @type {ReadableStreamDefaultReader<Uint8Array>|null} */
    this.reader = null;
    this.base = 0; // plaintext offset of the next value the reader yields
    this.via = '';
    this.retried = false; // an integrity error was retried through another relay
    this.failures = 0;
    this.servedFrom = '';
    this.windowEnd = 0; // plaintext end of the range the current response asked for
    this.exit = ''; // the relay serving the current response (Meshup-Relay)
    /** @type {string[]} exits that failed, for ?avoid= */
    this.avoid = [];
    this.etag = ''; // validator of the first response (plaintext items)
    this.moved = true; // bytes were handed out since the last failure
  }

  /**
   * Notes that the exit relay failed at the current position: the next
   * request asks the rendezvous to avoid it.
   * @param {string} exit
   */
  avoidExit(exit) {
    if (!exit) return;
    this.avoid = this.avoid.filter((id) => id !== exit);
    this.avoid.push(exit);
    if (this.avoid.length > MAX_AVOID) this.avoid.shift();
    this.via = '';
  }

  /**
   * The exit relay's response broke or ended short: the next request
   * asks the rendezvous to avoid it. It throws when the reader is not to
   * wait (a preview) and has failed too often.
   * @param {string} why
   * @returns {boolean} whether to pause before the next request: no
   *   bytes came since the last failure (the first resume goes at once)
   */
  exitFailed(why) {
    const exit = this.exit;
    this.avoidExit(exit);
    this.reader = null;
    if (!this.wait && ++this.failures > 2) throw new HTTPError(503, `the transfer stopped (${why})`);
    this.report('resuming', `relay ${exit || '(unknown)'} stopped at byte ${this.pos} (${why}); resuming through another relay`);
    const paused = !this.moved;
    this.moved = false;
    return paused;
  }

  /** @returns {Promise<Uint8Array|null>} the next bytes, or null at the end */
  async next() {
    let delay = RETRY_MIN_MS;
    while (this.pos < this.end) {
      if (!this.reader) {
        const wait = await this.open();
        if (wait) {
          if (!this.wait && ++this.failures > 2) throw new HTTPError(503, wait);
          this.report('waiting', wait);
          await sleep(delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
          continue;
        }
      }
      let r;
      let stalled = false;
      const req = this.req;
      const watchdog = setTimeout(() => {
        stalled = true;
        req?.abort();
      }, STALL_MS);
      try {
        r = await /** @type {ReadableStreamDefaultReader<Uint8Array>} */ (this.reader).read();
      } catch (err) {
        this.reader = null;
        if (this.abort.signal.aborted) throw err;
        if (stalled) err = new Error(`no byte for ${STALL_MS / 1000} s`);
        if (err instanceof e2e.E2EError && err.kind !== 'truncated') {
          if (this.retried) throw new HTTPError(502, `integrity error: ${err.message}`);
          this.retried = true;
          this.via = await otherRelay(this.servedFrom, this.exit, this.avoid);
          if (this.exit) this.avoid = [...this.avoid.filter((id) => id !== this.exit), this.exit].slice(-MAX_AVOID);
          this.report('integrity', `${err.message}; ${this.via ? 'reading it again through another relay' : 'reading it again'}`, err.chunk);
          continue;
        }
        if (this.exitFailed(err.message)) {
          await sleep(delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
        }
        continue;
      } finally {
        clearTimeout(watchdog);
      }
      if (r.done && this.pos >= this.windowEnd) {
        this.reader = null; // a bounded window is done: ask for the next one
        continue;
      }
      if (r.done) {
        // Ended short: the exit died, or the sender went away (relays
        // end the body early, they never pad it). Resume through another
        // exit; the rendezvous says 503 when the sender is away.
        if (this.exitFailed('the body ended short')) {
          await sleep(delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
        }
        continue;
      }
      const v = r.value;
      const from = this.pos - this.base;
      const to = Math.min(v.length, this.end - this.base);
      this.base += v.length;
      if (to <= from) continue;
      this.pos += to - from;
      this.moved = true;
      return from === 0 && to === v.length ? v : v.subarray(from, to);
    }
    this.cancel();
    return null;
  }

  /**
   * Requests the rest of the range.
   * @returns {Promise<string>} why to wait and try again, or '' when the reader is open
   */
  async open() {
    const { it } = this;
    let start = this.pos, end = this.end, first = 0, last = 0;
    if (it.encrypted) {
      const cr = e2e.cipherRange(this.pos, this.end - 1, it.cipherSize);
      first = cr.first;
      last = Math.floor((this.end - 1) / e2e.CHUNK_SIZE);
      if (!this.wait) last = Math.min(last, first + PREVIEW_WINDOW_CHUNKS - 1);
      start = cr.start;
      end = Math.min(cr.end, (last + 1) * e2e.SEALED_CHUNK_SIZE);
      this.base = first * e2e.CHUNK_SIZE;
      this.windowEnd = Math.min(this.end, (last + 1) * e2e.CHUNK_SIZE);
    } else {
      if (!this.wait) end = Math.min(end, start + PREVIEW_WINDOW_CHUNKS * e2e.CHUNK_SIZE);
      this.base = this.pos;
      this.windowEnd = end;
    }
    const whole = start === 0 && end === it.cipherSize;
    const headers = whole ? {} : { Range: `bytes=${start}-${end - 1}` };
    let url = `/v1/items/${it.id}`;
    if (this.via) url += `?via=${encodeURIComponent(this.via)}`;
    else if (this.avoid.length) url += `?avoid=${this.avoid.map(encodeURIComponent).join(',')}`;
    let res;
    try {
      this.req = new AbortController();
      res = await fetch(url, { headers, cache: 'no-store', signal: AbortSignal.any([this.abort.signal, this.req.signal]) });
    } catch (err) {
      if (this.abort.signal.aborted) throw err;
      return `cannot reach the item (${err.message})`;
    }
    if (res.status === 404 || res.status === 410) throw new HTTPError(404, 'the item is gone');
    // Relays name themselves on every item response, errors included;
    // the rendezvous's own answers carry no Meshup-Relay.
    const exit = res.headers.get('Meshup-Relay') ?? '';
    if (res.status === 503 || res.status === 429 || res.status >= 500) {
      res.body?.cancel();
      if (exit) this.avoidExit(exit); // that exit refuses: let the rendezvous choose another
      else if (this.via) this.via = ''; // the pinned relay is gone: let the rendezvous choose
      if (exit) return `relay ${exit} answered ${res.status}`;
      return res.status === 503 ? 'the sender is offline' : `the server answered ${res.status}`;
    }
    const cr = res.status === 206 ? /^bytes (\d+)-\d+\/(\d+)$/.exec(res.headers.get('Content-Range') ?? '') : null;
    const got = cr ? Number(cr[1]) : 0;
    if ((res.status !== 200 && res.status !== 206) || (res.status === 206 && !cr) || got !== start || !res.body) {
      res.body?.cancel();
      throw new HTTPError(502, `unexpected answer ${res.status} at byte ${start}`);
    }
    // Never mix two versions of the item: the size is the one the
    // rendezvous described, and a plaintext item keeps its validator
    // (an encrypted one needs none: every chunk is authenticated).
    const total = cr ? Number(cr[2]) : Number(res.headers.get('Content-Length') ?? it.cipherSize);
    const etag = res.headers.get('ETag') ?? '';
    if (total !== it.cipherSize || (!it.encrypted && this.etag && etag !== this.etag)) {
      res.body?.cancel();
      throw new HTTPError(502, `the item changed during the download (relay ${exit || '(unknown)'} serves ${total} bytes, version ${etag || '(none)'})`);
    }
    if (!this.etag) this.etag = etag;
    this.exit = exit;
    this.servedFrom = res.url;
    const body = it.kp ? res.body.pipeThrough(e2e.decryptStream(it.kp, it.cipherSize, first, last)) : res.body;
    this.reader = body.getReader();
    return '';
  }

  cancel() {
    this.abort.abort();
    this.reader?.cancel().catch(() => {});
    this.reader = null;
  }
}

/**
 * A ReadableStream over a PlainReader.
 * @param {PlainReader} r
 * @param {(err: Error) => void} [onError]
 */
function streamOf(r, onError) {
  return new ReadableStream({
    async pull(c) {
      try {
        const v = await r.next();
        if (v) c.enqueue(v);
        else c.close();
      } catch (err) {
        onError?.(err);
        c.error(err);
      }
    },
    cancel() {
      r.cancel();
    },
  }, { highWaterMark: 0 });
}

/**
 * @param {number} status
 * @param {string} message
 */
function textResponse(status, message) {
  return new Response(`${message}\n`, { status, headers: { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' } });
}

/**
 * Answers a download navigation for item id with a resuming stream of its
 * plaintext.
 * @param {string} id
 * @param {string} key names this download in progress reports
 * @returns {Promise<Response>}
 */
async function download(id, key) {
  let it;
  try {
    it = await info(id);
  } catch (err) {
    post({ key, id, state: 'failed', received: 0, size: 0, message: err.message });
    return textResponse(err.status ?? 500, err.message);
  }
  let lastPost = 0, state = '';
  /** @type {PlainReader} */
  let r;
  const report = (/** @type {string} */ s, message = '', chunk = -1) => {
    state = s;
    lastPost = Date.now();
    post({ key, id, state: s, received: r.pos, size: it.size, message, chunk });
  };
  r = new PlainReader(it, 0, it.size - 1, report, { wait: true });
  const body = new ReadableStream({
    async pull(c) {
      try {
        const v = await r.next();
        if (!v) {
          c.close();
          report('done');
          return;
        }
        c.enqueue(v);
        if (state !== 'running' || Date.now() - lastPost >= PROGRESS_EVERY_MS || r.pos >= it.size) report('running');
      } catch (err) {
        c.error(err);
        report('failed', err.message);
      }
    },
    cancel() {
      r.cancel();
      report('failed', 'download cancelled');
    },
  }, { highWaterMark: 0 });
  if (it.size === 0) r.pos = 0;
  return new Response(body, {
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(it.size),
      'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(it.name)}`,
      'X-Content-Type-Options': 'nosniff',
    },
  });
}

/**
 * Answers a request of the page for an item's plaintext, with one Range.
 * @param {string} id
 * @param {Request} req
 * @returns {Promise<Response>}
 */
async function plain(id, req) {
  let it;
  try {
    it = await info(id);
  } catch (err) {
    return textResponse(err.status ?? 500, err.message);
  }
  const size = it.size;
  let a = 0, b = size - 1, partial = false;
  const range = req.headers.get('Range');
  const m = range && /^bytes=(\d*)-(\d*)$/.exec(range.trim());
  if (m && (m[1] || m[2])) {
    partial = true;
    if (m[1]) {
      a = Number(m[1]);
      if (m[2]) b = Math.min(Number(m[2]), size - 1);
    } else {
      a = Math.max(0, size - Number(m[2]));
    }
    if (a >= size || a > b) {
      return new Response(null, { status: 416, headers: { 'Content-Range': `bytes */${size}` } });
    }
  }
  const headers = {
    'Content-Type': it.type,
    'Content-Length': String(size === 0 ? 0 : b - a + 1),
    'Accept-Ranges': 'bytes',
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'no-store',
  };
  if (partial) headers['Content-Range'] = `bytes ${a}-${b}/${size}`;
  if (size === 0) return new Response(null, { status: 200, headers });
  const report = (/** @type {string} */ s, message = '', chunk = -1) => {
    if (s === 'integrity') post({ key: `plain-${id}`, id, state: s, received: 0, size, message, chunk });
  };
  const r = new PlainReader(it, a, b, report);
  const body = streamOf(r, (err) => post({ key: `plain-${id}`, id, state: 'failed', received: 0, size, message: err.message }));
  return new Response(body, { status: partial ? 206 : 200, headers });
}

/** @param {object} m */
function post(m) {
  channel.postMessage(m);
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** @type {Map<string, {p: Promise<{stream: ReadableStream, name: string}>, resolve: (v: {stream: ReadableStream, name: string}) => void}>} */
const liveSaves = new Map();
const LIVE_SAVE_WAIT_MS = 10_000;

/**
 * The save of a live channel named tag: its stream comes in a message, its
 * download as a navigation, in either order.
 * @param {string} tag
 */
function liveSave(tag) {
  let e = liveSaves.get(tag);
  if (!e) {
    /** @type {(v: {stream: ReadableStream, name: string}) => void} */
    let resolve = () => {};
    const p = new Promise((r) => { resolve = r; });
    e = { p, resolve };
    liveSaves.set(tag, e);
    setTimeout(() => liveSaves.delete(tag), LIVE_SAVE_WAIT_MS);
  }
  return e;
}

/**
 * Answers /dl/live/TAG with the stream the page handed over.
 * @param {string} tag
 * @returns {Promise<Response>}
 */
async function liveResponse(tag) {
  const got = await Promise.race([liveSave(tag).p, sleep(LIVE_SAVE_WAIT_MS).then(() => null)]);
  liveSaves.delete(tag);
  if (!got) return textResponse(404, 'no such live channel save');
  return new Response(got.stream, {
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(got.name)}`,
      'X-Content-Type-Options': 'nosniff',
    },
  });
}
