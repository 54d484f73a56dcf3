// meshup browser library: publish files, blobs, clips and short messages
// from a tab, and push the parts a rendezvous orders to the relays it names.
//
// Plain ES module, no dependencies, no build step. The rendezvous serves it
// at /web/meshup.js:
//
//	import { Client } from '/web/meshup.js';
//	const c = new Client();                 // rendezvous = this page's origin
//	c.addEventListener('progress', (e) => console.log(e.detail));
//	const item = await c.publish(file);     // metadata only; bytes stay here
//	console.log(item.shareURL);             // .../i/ID#k=KEY: the key never reaches a server
//
// Files, blobs and clips are encrypted end to end by default (format e2e1,
// see e2e.js and proto/e2e.go): the rendezvous learns the ciphertext size
// only, relays carry ciphertext, and the key travels in the share link's
// fragment. publish(file, {encrypt: false}) publishes plaintext, for
// applications whose backend reads items directly. Short messages travel
// whole through the rendezvous, in plaintext.
//
// Protocol flow (see proto/ in the Go module for the wire formats):
//
//	control WebSocket /v1/control, subprotocol meshup.v1, JSON messages
//	  <- welcome {session, max_message, ping_seconds, relays[{id, push_url}]}
//	  -> publish {ref, kind, name, mime, size[, text][, id, owner][, enc, meta][, volunteers][, swarm]}
//	  <- published {ref, id, owner, share_url, download_url} | error {ref, ...}
//	  <- order {order, item, off, len, relay, push_url, token}
//	  <- cancel {order}
//	  -> order_failed {order, status, reason} / unpublish {id}
//
//	push WebSocket (order.push_url), subprotocol meshup.v1, one binary
//	frame per message: type u8 | length u32 BE | body
//	  -> PartBegin 0x01 {stream u32, item [16], off u64, len u64, tokenLen u16, token}
//	  <- Ack       0x04 {stream u32, acked u64, limit u64}  credit: send below limit
//	  -> PartData  0x02 {stream u32, data}
//	  <- PartEnd   0x03 {stream u32, status u16, reason}    0 = every byte accepted
//	  -> PartEnd   0x03 to abort a part

import * as e2e from './e2e.js';

/** WebSocket subprotocol of both the control and the push channel. */
export const SUBPROTOCOL = 'meshup.v1';

/** Item kinds (proto/control.go). */
export const Kind = Object.freeze({ FILE: 'file', MESSAGE: 'message', CLIP: 'clip' });

/** Status codes (proto/status.go); values are never renumbered. */
export const Status = Object.freeze({
  OK: 0,
  FORBIDDEN: 103,
  NOT_WANTED: 104,
  OVER_LIMIT: 105,
  OFFLINE: 106,
  NOT_FOUND: 107,
  UNAVAILABLE: 108,
  SOURCE_ERROR: 109,
  CANCELLED: 110,
  TIMEOUT: 112,
  CONFLICT: 113,
  MALFORMED: 200,
  TOO_LARGE: 201,
});

/** Default part bytes per PartData frame, as the Go client (client.DefaultFrameSize). */
export const DEFAULT_FRAME_SIZE = 1 << 20;

/** Default limit on the text of a message item (rendezvous.DefaultMaxTextMessage). */
export const DEFAULT_MAX_TEXT = 16 << 10;

/** Frames read (and sealed) ahead of the relay's credit per part. */
const READ_AHEAD = 4;

const FRAME_PART_BEGIN = 0x01;
const FRAME_PART_DATA = 0x02;
const FRAME_PART_END = 0x03;
const FRAME_ACK = 0x04;
const HEADER_LEN = 5;
const DATA_PREFIX_LEN = 4;
const CLOSE_CODE_BASE = 4000;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 10_000;
const STABLE_MS = 60_000; // a connection up this long resets the backoff

/**
 * An error reported by the rendezvous or a relay, with its status code.
 */
/** How long waitClipStored waits, once a clip is stored, for a holder to
 * confirm it keeps the sealed metadata (client/clip.go: sealedWait). */
const SEALED_WAIT_MS = 5000;

export class MeshupError extends Error {
  /**
   * @param {number} status a Status code
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.name = 'MeshupError';
    /** @type {number} */
    this.status = status;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string} [url] base URL of the rendezvous; defaults to the page's origin
 * @property {number} [frameSize] part bytes per PartData frame; defaults to 1 MiB
 * @property {number} [maxText] longest message text in bytes; defaults to 16 KiB
 * @property {string} [clientName] sent in the hello message
 */

/**
 * @typedef {object} PublishOptions
 * @property {string} [name] defaults to the File's name, or "blob"
 * @property {string} [type] MIME type; defaults to the Blob's type
 * @property {string} [kind] Kind.FILE (default) or Kind.CLIP
 * @property {string} [id] with owner: take back an item published earlier (same share link)
 * @property {string} [owner] the owner secret of that item
 * @property {boolean} [encrypt] encrypt end to end (default true); false publishes plaintext
 * @property {Uint8Array|string} [key] the item key K (bytes or base64url), to take back an
 *   encrypted item with the key it was published under; defaults to a fresh key
 * @property {boolean} [volunteers] let volunteer relays carry a plaintext item
 * @property {boolean} [swarm] publish as one member of a swarm (issue 10): with id, owner
 *   and key, join the item as one more publisher instead of taking it over; every member
 *   holds the same bytes and key, and a member announcing another size is refused with
 *   Status.CONFLICT. Reconnects keep it, so this tab rejoins rather than pushing others out.
 */

/**
 * A published item. Its fields are read-only for users of the library.
 */
export class Item {
  /** @param {{kind: string, name: string, type: string, size: number, blob: Blob|null, text: string}} src */
  constructor(src) {
    /** @type {string} */ this.id = '';
    /** @type {string} */ this.owner = '';
    /** @type {string} */ this.shareURL = '';
    /** @type {string} */ this.downloadURL = '';
    /** @type {string} */ this.kind = src.kind;
    /** @type {string} */ this.name = src.name;
    /** @type {string} */ this.type = src.type;
    /** @type {number} */ this.size = src.size;
    /** @type {string} */ this.text = src.text;
    /** Bytes acknowledged end to end by relays, all parts, since publish. */
    this.served = 0;
    /** @type {Map<string, number>} bytes served per relay id */
    this.servedByRelay = new Map();
    /** @type {'publishing'|'online'|'paused'|'offline'|'cancelled'} */
    this.state = 'publishing';
    /** @type {Blob|null} */
    this.blob = src.blob;
    /** @type {Map<number, PartPush>} parts being pushed, by order id */
    this.parts = new Map();
    /** @type {string} e2e.VERSION when encrypted end to end, else '' */
    this.enc = '';
    /** @type {Uint8Array|null} the item key K of an encrypted item */
    this.key = null;
    /** @type {string} K in base64url, as in the share link's fragment */
    this.keyText = '';
    /** @type {number} size of the plaintext; size is the ciphertext's */
    this.plainSize = src.size;
    /** @type {number} modification time, seconds since 1970 */
    this.modified = 0;
    /** @type {string} sealed metadata, as published */
    this.meta = '';
    this.volunteers = false;
    /** publishes as one member of a swarm (PublishOptions.swarm) */
    this.swarm = false;
    /** @type {e2e.Sealer|null} */
    this.sealer = null;
    /** @type {Date|null} when a clip expires: relays keep it readable until then, tab closed or not */
    this.expires = null;
  }

  /**
   * Reads bytes [off, off+len) of what is published: the plaintext, or
   * the ciphertext sealed from it.
   * @param {number} off
   * @param {number} len
   * @returns {Promise<ArrayBuffer|Uint8Array>}
   */
  read(off, len) {
    if (this.sealer) return this.sealer.range(off, len);
    return /** @type {Blob} */ (this.blob).slice(off, off + len).arrayBuffer();
  }
}

/**
 * Client is a connection to a rendezvous that keeps itself up: it
 * reconnects with backoff, takes its items back online, keeps push
 * connections to the relays the rendezvous names, and pushes the parts it
 * is ordered to push.
 *
 * Events (CustomEvent, data in detail):
 * - state: {state: 'connecting'|'online'|'offline'|'closed', error?: string}
 * - item: {item} an item was published, paused, resumed, taken offline or cancelled
 * - progress: {item, relay, order, served, size} bytes acknowledged end to end
 * - error: {item?, message, status?} a part failed, a relay refused, a publish failed
 */
export class Client extends EventTarget {
  /** @param {ClientOptions} [opts] */
  constructor(opts = {}) {
    super();
    const base = new URL(opts.url ?? globalThis.location.origin);
    /** @type {string} */
    this.baseURL = base.origin + base.pathname.replace(/\/$/, '');
    this.frameSize = opts.frameSize ?? DEFAULT_FRAME_SIZE;
    this.maxText = opts.maxText ?? DEFAULT_MAX_TEXT;
    this.clientName = opts.clientName ?? 'meshup.js/1';
    /** @type {'idle'|'connecting'|'online'|'offline'|'closed'} */
    this.state = 'idle';
    /** @type {Map<string, Item>} published items by id */
    this.items = new Map();
    /** @type {WebSocket|null} */
    this._ws = null;
    /** @type {Map<string, Item>} items cancelled while offline: unpublished on reconnect */
    this._dropped = new Map();
    /** @type {Map<string, {resolve: (m: any) => void, reject: (e: Error) => void, msg: object}>} */
    this._requests = new Map();
    /** publishes in progress, and orders that came for their items first (a clip's store orders) */
    this._publishing = 0;
    /** @type {any[]} */
    this._early = [];
    /** @type {Map<string, PushConn>} push connections by URL */
    this._pushers = new Map();
    /** @type {Set<string>} push URLs from the last welcome: kept connected */
    this._relayURLs = new Set();
    this._backoff = MIN_BACKOFF_MS;
    this._timer = 0;
    this._refs = 0;
  }

  /** Opens the control connection; it reconnects until close(). */
  connect() {
    if (this.state !== 'idle' && this.state !== 'offline') return;
    clearTimeout(this._timer);
    this._setState('connecting');
    const url = this.baseURL.replace(/^http/, 'ws') + '/v1/control';
    const ws = new WebSocket(url, SUBPROTOCOL);
    this._ws = ws;
    let opened = 0;
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return; // the rendezvous only sends JSON; ignore anything else
      }
      if (m.type === 'welcome') {
        opened = Date.now();
        this._welcome(m);
        return;
      }
      this._handle(m);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      if (this.state === 'closed') return;
      if (opened && Date.now() - opened > STABLE_MS) this._backoff = MIN_BACKOFF_MS;
      const why = ev.code >= CLOSE_CODE_BASE ? ev.reason || `status ${ev.code - CLOSE_CODE_BASE}` : '';
      for (const it of this.items.values()) {
        if (it.state === 'online') this._setItemState(it, 'offline');
      }
      this._setState('offline', why);
      const wait = this._backoff / 2 + Math.random() * this._backoff / 2;
      this._backoff = Math.min(this._backoff * 2, MAX_BACKOFF_MS);
      this._timer = setTimeout(() => this.connect(), wait);
    };
  }

  /** Closes every connection. Items are left for the rendezvous to expire. */
  close() {
    this._setState('closed');
    clearTimeout(this._timer);
    this._ws?.close(1000, 'bye');
    this._ws = null;
    this._relayURLs.clear();
    for (const p of this._pushers.values()) p.close();
    this._pushers.clear();
    for (const r of this._requests.values()) r.reject(new Error('client closed'));
    this._requests.clear();
  }

  /**
   * Publishes a File or Blob. Only its metadata leaves the tab; its bytes
   * are read with Blob.slice() when a consumer asks for them.
   * @param {Blob} blob
   * @param {PublishOptions} [opts]
   * @returns {Promise<Item>}
   */
  publish(blob, opts = {}) {
    const name = opts.name ?? (/** @type {File} */ (blob).name || 'blob');
    const kind = opts.kind ?? Kind.FILE;
    const it = new Item({ kind, name, type: opts.type ?? blob.type, size: blob.size, blob, text: '' });
    it.modified = Math.floor((/** @type {File} */ (blob).lastModified ?? Date.now()) / 1000);
    it.volunteers = !!opts.volunteers;
    it.swarm = !!opts.swarm;
    if (opts.encrypt ?? true) {
      const key = typeof opts.key === 'string' ? e2e.b64urlDecode(opts.key) : opts.key ?? e2e.newKey();
      if (key.length !== e2e.KEY_SIZE) return Promise.reject(new MeshupError(Status.MALFORMED, `key of ${key.length} bytes, want ${e2e.KEY_SIZE}`));
      it.enc = e2e.VERSION;
      it.key = key;
      it.keyText = e2e.b64urlEncode(key);
      it.size = e2e.sealedSize(blob.size);
    }
    return this._publish(it, opts.id, opts.owner);
  }

  /**
   * Publishes a short text message. It travels whole through the
   * rendezvous and never through a relay.
   * @param {string} text at most maxText bytes of UTF-8
   * @param {{name?: string}} [opts]
   * @returns {Promise<Item>}
   */
  publishText(text, opts = {}) {
    const size = new TextEncoder().encode(text).length;
    if (size > this.maxText) {
      return Promise.reject(new MeshupError(Status.TOO_LARGE, `message of ${size} bytes is over the limit of ${this.maxText}; publish it as a clip`));
    }
    const it = new Item({ kind: Kind.MESSAGE, name: opts.name ?? '', type: '', size, blob: null, text });
    return this._publish(it);
  }

  /**
   * Publishes clipboard content: text short enough for a message goes
   * through the rendezvous (publishText); longer text and images are
   * clips, pushed whole into the memory of up to two relays at once so
   * that they stay readable after the tab closes, until item.expires
   * (issue 12). A clip too large for the rendezvous's --max-clip-size, or
   * for every relay's free memory, is refused (Status.TOO_LARGE,
   * Status.OVER_LIMIT).
   * @param {string|Blob} content
   * @param {{name?: string}} [opts]
   * @returns {Promise<Item>}
   */
  publishClip(content, opts = {}) {
    if (typeof content === 'string') {
      if (new TextEncoder().encode(content).length <= this.maxText) {
        return this.publishText(content, { name: opts.name ?? 'clip.txt' });
      }
      content = new Blob([content], { type: 'text/plain; charset=utf-8' });
    }
    const ext = (content.type.split('/')[1] || 'bin').split(/[;+]/)[0];
    return this.publish(content, { kind: Kind.CLIP, name: opts.name ?? `clip.${ext}` });
  }

  /**
   * Stops serving an item: orders for it are refused as offline (a
   * consumer waits and retries) and parts being pushed are abandoned.
   * @param {string} id
   */
  pause(id) {
    const it = this.items.get(id);
    if (!it || it.kind === Kind.MESSAGE || it.state === 'paused' || it.state === 'cancelled') return;
    for (const part of it.parts.values()) part.abort(Status.CANCELLED, 'paused by the publisher');
    this._setItemState(it, 'paused');
  }

  /**
   * Serves a paused item again.
   * @param {string} id
   */
  resume(id) {
    const it = this.items.get(id);
    if (!it || it.state !== 'paused') return;
    this._setItemState(it, this.state === 'online' ? 'online' : 'offline');
  }

  /**
   * Withdraws an item: unpublishes it and abandons its parts.
   * @param {string} id
   */
  cancel(id) {
    const it = this.items.get(id);
    if (!it) return;
    for (const part of it.parts.values()) part.abort(Status.CANCELLED, 'withdrawn by the publisher');
    this.items.delete(id);
    if (this.state === 'online') this._send({ type: 'unpublish', id });
    else this._dropped.set(id, it);
    this._setItemState(it, 'cancelled');
  }

  // --- control channel ---

  /**
   * @param {Item} it
   * @param {string} [id]
   * @param {string} [owner]
   * @returns {Promise<Item>}
   */
  async _publish(it, id, owner) {
    this._publishing++;
    try {
      return await this._publishItem(it, id, owner);
    } finally {
      this._publishing--;
      // Orders that came before their item was registered: served now,
      // or refused when no publish is left that could register it.
      const early = this._early;
      this._early = [];
      for (const o of early) this._order(o);
    }
  }

  /**
   * What the rendezvous says of a clip's copies: relays holding every
   * byte, copies being pushed, when it expires, and how many holders keep
   * its sealed metadata too (-1 when the rendezvous does not say), as
   * client.ClipState in Go.
   * @param {Item} it a published clip
   * @returns {Promise<{holders: number, storing: number, sealed: number, expires: Date|null}>}
   */
  async clipState(it) {
    const resp = await fetch(`${this.baseURL}/v1/items/${it.id}/meta`, { cache: 'no-store' });
    if (!resp.ok) throw new MeshupError(Status.UNAVAILABLE, `clip ${it.id}: the rendezvous answered ${resp.status}`);
    const m = await resp.json();
    return {
      holders: m.holders ?? 0,
      storing: m.storing ?? 0,
      sealed: typeof m.sealed_holders === 'number' ? m.sealed_holders : -1,
      expires: m.expires ? new Date(m.expires) : null,
    };
  }

  /**
   * Resolves once the tab may close without losing clip it: a relay holds
   * every byte, no copy is still being pushed, and (encrypted clips) a
   * holder keeps the sealed metadata, so that a restart of the rendezvous
   * loses nothing. Holders that predate that never confirm it: after
   * SEALED_WAIT_MS of being stored it resolves anyway, with sealed 0.
   * Rejects when every push failed (no holder, none receiving). Mirrors
   * client.WaitClipStored in Go.
   * @param {Item} it a published clip
   * @param {{pollMs?: number, signal?: AbortSignal}} [opts]
   */
  async waitClipStored(it, opts = {}) {
    const poll = opts.pollMs ?? 250;
    let storedAt = 0;
    for (;;) {
      opts.signal?.throwIfAborted();
      const st = await this.clipState(it);
      if (st.holders > 0 && st.storing === 0) {
        if (st.sealed !== 0) return st;
        if (!storedAt) storedAt = Date.now();
        else if (Date.now() - storedAt >= SEALED_WAIT_MS) return st;
      }
      if (st.holders === 0 && st.storing === 0) {
        throw new MeshupError(Status.UNAVAILABLE, 'no relay holds the clip and none is receiving it: its pushes failed');
      }
      await new Promise((resolve) => setTimeout(resolve, poll));
    }
  }

  /**
   * @param {Item} it
   * @param {string} [id]
   * @param {string} [owner]
   */
  async _publishItem(it, id, owner) {
    if (it.enc && id && owner) await this._seal(it, id);
    let pub = await this._request(this._publishMsg(it, id, owner));
    if (it.enc && !it.meta) {
      // The keys are bound to the item id, which the rendezvous chooses:
      // the metadata is sealed once it is known and sent with a reclaim.
      await this._seal(it, pub.id);
      pub = await this._request(this._publishMsg(it, pub.id, pub.owner));
    }
    it.id = pub.id;
    it.owner = pub.owner;
    it.shareURL = pub.share_url + (it.enc ? `#${e2e.FRAGMENT_KEY}=${it.keyText}` : '');
    it.downloadURL = pub.download_url;
    if (pub.expires_ms) it.expires = new Date(pub.expires_ms); // a clip
    this.items.set(it.id, it);
    this._setItemState(it, 'online');
    return it;
  }

  /**
   * Derives the keys of an encrypted item and seals its metadata.
   * @param {Item} it
   * @param {string} id
   */
  async _seal(it, id) {
    const keys = await e2e.deriveKeys(/** @type {Uint8Array} */ (it.key), id);
    it.sealer = new e2e.Sealer(keys.payload, /** @type {Blob} */ (it.blob));
    it.meta = await e2e.sealMeta(keys.metadata, { name: it.name, type: it.type, modified: it.modified });
  }

  /**
   * The publish message of an item; with id and owner it takes the item
   * back. An encrypted item shows the rendezvous no name and no type.
   * @param {Item} it
   * @param {string} [id]
   * @param {string} [owner]
   */
  _publishMsg(it, id, owner) {
    /** @type {Record<string, any>} */
    const msg = { type: 'publish', kind: it.kind, name: it.name, mime: it.type, size: it.size };
    if (it.enc) Object.assign(msg, { name: '', mime: 'application/octet-stream', enc: it.enc, meta: it.meta || undefined });
    else {
      if (it.volunteers) msg.volunteers = true;
      // The source's time makes the item's ETag the same after a restart
      // of the rendezvous (an encrypted item's is sealed in meta).
      if (it.kind !== Kind.MESSAGE && it.modified > 0) msg.modified = it.modified;
    }
    if (it.kind === Kind.MESSAGE) msg.text = it.text;
    if (id && owner) Object.assign(msg, { id, owner });
    if (it.swarm) msg.swarm = true;
    return msg;
  }

  /**
   * Sends a publish and resolves with its published reply. A request cut
   * by a reconnect is sent again on the new connection.
   * @param {object} msg
   * @returns {Promise<any>}
   */
  _request(msg) {
    const ref = `r${++this._refs}`;
    const m = { ...msg, ref };
    return new Promise((resolve, reject) => {
      this._requests.set(ref, { resolve, reject, msg: m });
      if (this.state === 'online') this._send(m);
      else if (this.state === 'idle') this.connect();
    });
  }

  /**
   * Sends a control message if the connection is up. Nothing is queued
   * while offline: publish requests are re-sent from _requests, items are
   * reclaimed, and orders died with the old session.
   * @param {object} m
   */
  _send(m) {
    if (this.state === 'online' && this._ws?.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(m));
  }

  /** @param {any} w the welcome message */
  _welcome(w) {
    this._setState('online');
    this._ws?.send(JSON.stringify({ type: 'hello', client: this.clientName }));
    this._setRelays((w.relays ?? []).map((r) => r.push_url));
    // Take items back online with their owner secret; an item cancelled
    // while offline must be reclaimed before it can be unpublished.
    for (const it of [...this.items.values(), ...this._dropped.values()]) {
      this._send({ ...this._publishMsg(it, it.id, it.owner), ref: `reclaim-${it.id}` });
      if (this._dropped.has(it.id)) this._send({ type: 'unpublish', id: it.id });
    }
    this._dropped.clear();
    for (const r of this._requests.values()) this._send(r.msg);
  }

  /** @param {any} m a message from the rendezvous */
  _handle(m) {
    switch (m.type) {
      case 'published': {
        const it = this.items.get(m.id);
        if (m.ref?.startsWith('reclaim-') && it) {
          if (it.state === 'offline') this._setItemState(it, 'online');
          return;
        }
        const r = this._requests.get(m.ref);
        if (r) {
          this._requests.delete(m.ref);
          r.resolve(m);
        }
        return;
      }
      case 'error': {
        const r = m.ref && this._requests.get(m.ref);
        if (r) {
          this._requests.delete(m.ref);
          r.reject(new MeshupError(m.status, m.reason));
          return;
        }
        if (m.ref?.startsWith('reclaim-')) {
          const it = this.items.get(m.ref.slice('reclaim-'.length));
          if (it) {
            this.items.delete(it.id);
            this._setItemState(it, 'cancelled');
          }
        }
        this._emit('error', { message: `rendezvous: ${m.reason}`, status: m.status });
        return;
      }
      case 'order':
        this._order(m);
        return;
      case 'cancel':
        for (const it of this.items.values()) it.parts.get(m.order)?.abort(Status.CANCELLED, 'order cancelled');
        return;
    }
  }

  // --- orders and push connections ---

  /**
   * Replaces the set of relays kept connected.
   * @param {string[]} urls push URLs
   */
  _setRelays(urls) {
    this._relayURLs = new Set(urls);
    for (const [url, p] of this._pushers) {
      if (!this._relayURLs.has(url) && p.streams.size === 0) {
        p.close();
        this._pushers.delete(url);
      }
    }
    for (const url of urls) this._pusher(url);
  }

  /**
   * @param {string} url
   * @returns {PushConn}
   */
  _pusher(url) {
    let p = this._pushers.get(url);
    if (!p) {
      p = new PushConn(url, this);
      this._pushers.set(url, p);
    }
    return p;
  }

  /** @param {any} o an order message */
  _order(o) {
    const it = this.items.get(o.item);
    const fail = (status, reason) => this._send({ type: 'order_failed', order: o.order, status, reason });
    if (!it && this._publishing > 0) return void this._early.push(o); // see _publish
    if (!it || !it.blob) return fail(Status.NOT_FOUND, 'item not published by this client');
    if (it.state === 'paused') return fail(Status.OFFLINE, 'paused by the publisher');
    if (!(o.off >= 0 && o.len >= 0 && o.off + o.len <= it.size)) return fail(Status.MALFORMED, 'order outside the item');
    const part = new PartPush(this, it, o);
    it.parts.set(o.order, part);
    part.run().then(
      () => {},
      (err) => {
        const status = err instanceof MeshupError ? err.status : Status.UNAVAILABLE;
        if (status === Status.CANCELLED || status === Status.NOT_WANTED) return;
        fail(status, String(err.message).slice(0, 120));
        this._emit('error', { item: it, message: `${it.name}: ${err.message}`, status });
      },
    ).finally(() => {
      it.parts.delete(o.order);
      this._release(part.conn);
    });
  }

  /**
   * Closes a push connection to a relay that is not in the list once its
   * last part is done.
   * @param {PushConn|null} p
   */
  _release(p) {
    if (!p || this._relayURLs.has(p.url) || p.streams.size > 0) return;
    p.close();
    if (this._pushers.get(p.url) === p) this._pushers.delete(p.url);
  }

  /**
   * @param {Item} it
   * @param {string} relay
   * @param {number} order
   * @param {number} n newly acknowledged bytes
   */
  _progress(it, relay, order, n) {
    it.served += n;
    it.servedByRelay.set(relay, (it.servedByRelay.get(relay) ?? 0) + n);
    this._emit('progress', { item: it, relay, order, served: it.served, size: it.size });
  }

  /**
   * @param {string} state
   * @param {string} [error]
   */
  _setState(state, error) {
    this.state = /** @type {any} */ (state);
    this._emit('state', error ? { state, error } : { state });
  }

  /**
   * @param {Item} it
   * @param {Item['state']} state
   */
  _setItemState(it, state) {
    it.state = state;
    this._emit('item', { item: it });
  }

  /**
   * @param {string} type
   * @param {object} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * One push WebSocket to a relay, shared by every part ordered to it. It
 * reconnects with backoff while the relay is in the client's list; a
 * connection opened for an order to another URL ends with its last use.
 */
class PushConn {
  /**
   * @param {string} url
   * @param {Client} client
   */
  constructor(url, client) {
    this.url = url;
    this.client = client;
    /** @type {Map<number, PartPush>} */
    this.streams = new Map();
    this.nextStream = 0;
    this.closed = false;
    this.backoff = MIN_BACKOFF_MS;
    this.timer = 0;
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {Promise<WebSocket>} resolves when the socket is open */
    this.ready = this._dial();
    this.ready.catch(() => {}); // a failure is seen by whoever awaits it next
  }

  /** @returns {Promise<WebSocket>} */
  _dial() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, SUBPROTOCOL);
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      this.nextStream = 0; // stream ids are per connection
      let opened = 0;
      ws.onopen = () => {
        opened = Date.now();
        resolve(ws);
      };
      ws.onmessage = (ev) => this._frame(new DataView(ev.data));
      ws.onclose = (ev) => {
        if (ev.code === CLOSE_CODE_BASE + Status.TIMEOUT && this.streams.size === 0) {
          // The relay closes a push connection that begins no part in
          // time: not an error; the next order dials again.
          reject(new MeshupError(Status.UNAVAILABLE, 'push connection idle'));
          this.closed = true;
          if (this.client._pushers.get(this.url) === this) this.client._pushers.delete(this.url);
          return;
        }
        const why = ev.code >= CLOSE_CODE_BASE ? `relay closed the push connection: ${ev.reason}` : 'push connection lost';
        reject(new MeshupError(Status.UNAVAILABLE, why));
        if (ev.code >= CLOSE_CODE_BASE) this.client._emit('error', { message: why });
        for (const s of this.streams.values()) s.end(Status.UNAVAILABLE, why);
        this.streams.clear();
        if (this.closed || !this.client._relayURLs.has(this.url)) {
          this.closed = true;
          if (this.client._pushers.get(this.url) === this) this.client._pushers.delete(this.url);
          return;
        }
        if (opened && Date.now() - opened > STABLE_MS) this.backoff = MIN_BACKOFF_MS;
        const wait = this.backoff / 2 + Math.random() * this.backoff / 2;
        this.backoff = Math.min(this.backoff * 2, 30_000);
        this.ready = new Promise((res, rej) => {
          this.timer = setTimeout(() => this._dial().then(res, rej), wait);
        });
        this.ready.catch(() => {}); // a failure is seen by whoever awaits it next
      };
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000, 'bye');
  }

  /**
   * Opens a stream for part and sends its PartBegin. Ids increase on the
   * connection, as the relay requires.
   * @param {PartPush} part
   * @returns {number} the stream id
   */
  begin(part) {
    const id = ++this.nextStream;
    this.streams.set(id, part);
    const tok = new TextEncoder().encode(part.order.token);
    const f = frame(FRAME_PART_BEGIN, 4 + 16 + 8 + 8 + 2 + tok.length);
    f.view.setUint32(HEADER_LEN, id);
    f.bytes.set(decodeItemID(part.order.item), HEADER_LEN + 4);
    f.view.setBigUint64(HEADER_LEN + 20, BigInt(part.order.off));
    f.view.setBigUint64(HEADER_LEN + 28, BigInt(part.order.len));
    f.view.setUint16(HEADER_LEN + 36, tok.length);
    f.bytes.set(tok, HEADER_LEN + 38);
    this.ws?.send(f.bytes);
    return id;
  }

  /**
   * Sends a PartData frame.
   * @param {number} stream
   * @param {ArrayBuffer|Uint8Array} data
   */
  data(stream, data) {
    const f = frame(FRAME_PART_DATA, DATA_PREFIX_LEN + data.byteLength);
    f.view.setUint32(HEADER_LEN, stream);
    f.bytes.set(new Uint8Array(data), HEADER_LEN + DATA_PREFIX_LEN);
    this.ws?.send(f.bytes);
  }

  /**
   * Aborts a stream with a PartEnd frame.
   * @param {number} stream
   * @param {number} status
   * @param {string} reason
   */
  abort(stream, status, reason) {
    this.streams.delete(stream);
    const r = new TextEncoder().encode(reason).slice(0, 120);
    const f = frame(FRAME_PART_END, 6 + r.length);
    f.view.setUint32(HEADER_LEN, stream);
    f.view.setUint16(HEADER_LEN + 4, status);
    f.bytes.set(r, HEADER_LEN + 6);
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(f.bytes);
  }

  /** @param {DataView} v one frame from the relay */
  _frame(v) {
    if (v.byteLength < HEADER_LEN) return;
    const type = v.getUint8(0);
    const len = v.getUint32(1);
    if (v.byteLength !== HEADER_LEN + len) return;
    if (type === FRAME_ACK && len === 20) {
      const s = this.streams.get(v.getUint32(HEADER_LEN));
      s?.ack(Number(v.getBigUint64(HEADER_LEN + 4)), Number(v.getBigUint64(HEADER_LEN + 12)));
    } else if (type === FRAME_PART_END && len >= 6) {
      const id = v.getUint32(HEADER_LEN);
      const s = this.streams.get(id);
      this.streams.delete(id);
      const reason = new TextDecoder().decode(new Uint8Array(v.buffer, v.byteOffset + HEADER_LEN + 6, len - 6));
      s?.end(v.getUint16(HEADER_LEN + 4), reason);
    } // other frame types are skipped: peers may add them
  }
}

/**
 * The pushing of one ordered part: reads slices of the item's Blob and
 * sends them as credit allows, so that no more than the relay's window is
 * ever in flight.
 */
class PartPush {
  /**
   * @param {Client} client
   * @param {Item} item
   * @param {any} order
   */
  constructor(client, item, order) {
    this.client = client;
    this.item = item;
    this.order = order;
    this.limit = 0; // part bytes the relay lets us send
    this.window = 0; // the credit of the first Ack: the relay's window, or the part's length
    this.acked = 0; // part bytes accepted end to end
    /** @type {{status: number, reason: string}|null} */
    this.ended = null;
    /** @type {PushConn|null} */
    this.conn = null;
    this.stream = 0;
    /** @type {(() => void)|null} */
    this._wake = null;
  }

  /**
   * Pushes the part; resolves when the relay accepted every byte. The next
   * frame's slice is read while waiting for credit, so that a frame goes out
   * as soon as the relay allows it.
   */
  async run() {
    const { client, order } = this;
    this.conn = client._pusher(order.push_url);
    await this.conn.ready;
    if (this.ended) throw new MeshupError(this.ended.status, this.ended.reason);
    this.stream = this.conn.begin(this);
    let sent = 0;
    let read = 0; // part bytes read (and sealed) ahead, sent included
    /** @type {{k: number, data: Promise<ArrayBuffer|Uint8Array>}[]} */
    const ahead = [];
    for (;;) {
      if (this.ended) {
        if (this.ended.status === Status.OK) return;
        throw new MeshupError(this.ended.status, this.ended.reason);
      }
      // Read and seal a few frames ahead while earlier ones are in
      // flight, so that sealing overlaps sending.
      while (ahead.length < READ_AHEAD && read < order.len && this.window > 0) {
        // A frame never exceeds the window, or it would never fit.
        const k = Math.min(client.frameSize, this.window, order.len - read);
        const data = this.item.read(order.off + read, k);
        data.catch(() => {}); // seen when awaited below
        ahead.push({ k, data });
        read += k;
      }
      const next = ahead[0];
      if (next && sent + next.k <= this.limit) {
        let buf;
        try {
          buf = await next.data;
        } catch (err) {
          this.abort(Status.SOURCE_ERROR, `read file: ${err.message}`);
          throw new MeshupError(Status.SOURCE_ERROR, `cannot read the file any more (${err.message}); pick it again`);
        }
        if (this.ended) continue;
        this.conn.data(this.stream, buf);
        sent += next.k;
        ahead.shift();
        continue;
      }
      await new Promise((resolve) => { this._wake = resolve; });
    }
  }

  /**
   * Records an acknowledgement.
   * @param {number} acked
   * @param {number} limit
   */
  ack(acked, limit) {
    if (acked > this.acked) {
      this.client._progress(this.item, this.order.relay, this.order.order, acked - this.acked);
      this.acked = acked;
    }
    this.limit = Math.max(this.limit, limit);
    if (!this.window) this.window = limit - acked;
    this._signal();
  }

  /**
   * Ends the part as the relay or the connection said.
   * @param {number} status
   * @param {string} reason
   */
  end(status, reason) {
    if (this.ended) return;
    if (status === Status.OK && this.order.len > this.acked) {
      this.client._progress(this.item, this.order.relay, this.order.order, this.order.len - this.acked);
      this.acked = this.order.len;
    }
    this.ended = { status, reason };
    this._signal();
  }

  /**
   * Abandons the part, telling the relay.
   * @param {number} status
   * @param {string} reason
   */
  abort(status, reason) {
    if (this.ended) return;
    if (this.stream && this.conn) this.conn.abort(this.stream, status, reason);
    this.end(status, reason);
  }

  _signal() {
    const w = this._wake;
    this._wake = null;
    w?.();
  }
}

/**
 * Allocates a frame with its header filled in.
 * @param {number} type
 * @param {number} bodyLen
 */
function frame(type, bodyLen) {
  const bytes = new Uint8Array(HEADER_LEN + bodyLen);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, type);
  view.setUint32(1, bodyLen);
  return { bytes, view };
}

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * Decodes the 26-character text form of an item id (lowercase base32
 * without padding) into its 16 bytes.
 * @param {string} s
 * @returns {Uint8Array}
 */
function decodeItemID(s) {
  const out = new Uint8Array(16);
  let acc = 0, bits = 0, n = 0;
  for (const ch of s.toLowerCase()) {
    const v = ID_ALPHABET.indexOf(ch);
    if (v < 0) throw new MeshupError(Status.MALFORMED, `bad item id ${s}`);
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      if (n < 16) out[n++] = (acc >> bits) & 0xff;
    }
  }
  if (n !== 16) throw new MeshupError(Status.MALFORMED, `bad item id ${s}`);
  return out;
}

// Sealed live channels (format live1, live.js): goLive publishes a camera
// or a growing byte stream, readLive reads one from its link.
export { goLive, readLive, LiveChannel, LiveError } from './live.js';
export * as live from './live.js';
