// The page of a live channel (/l/{id}#k=KEY): plays a sealed live channel
// (format live1, /web/live.js) or saves it to a file, decrypting in this
// browser with the key in the link's fragment, which no server sees.
//
// The page reads the channel from where the relay lets it join (the
// latest sync point, else the live edge). A channel whose head names a
// type MediaSource plays (WebM from a camera) goes to a <video>; any other
// is offered for saving: what arrives is held in a stream (from the
// join) until "Save" is pressed, then the stream goes to the Service
// Worker (transferred with postMessage), which answers a hidden frame's
// navigation to /dl/live/TAG with it, so the browser writes it to disk as
// it comes. Without a worker the bytes are gathered in memory and saved at
// the end. The status line says in clear words why a channel could not be
// read: wrong key, a missing or altered record, an end without the
// publisher's end mark; "The live channel ended." on a clean end.

import * as live from '/web/live.js';
import { webmCodecs } from '/web/webm.js';
import { formatBytes } from './common.js';

const MAX_HELD = 256 << 20; // bytes held for saving before Save is pressed
const MAX_IN_MEMORY = 512 << 20; // bytes saved without a Service Worker
const KEEPALIVE_MS = 10_000;
const SW_READY_MS = 3000;
const EVICT_KEEP_S = 30; // seconds of played video kept in the SourceBuffer
const MAX_LAG_S = 2; // seconds behind the newest media before the player jumps ahead
const LAG_S = 0.5; // seconds behind the newest media it jumps to

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const statusEl = $('status');
const statePill = $('live-state');
const receivedEl = $('received');
const saveButton = /** @type {HTMLButtonElement} */ ($('save'));
let received = 0;
let started = 0;

/**
 * @param {string} state running, done or failed
 * @param {string} text
 * @param {string} [reason]
 */
function setStatus(state, text, reason = '') {
  statusEl.dataset.state = state;
  statusEl.dataset.reason = reason;
  statusEl.textContent = text;
  statusEl.hidden = !text;
}

/** @param {string} state connecting, live, ended, failed */
function setPill(state) {
  statePill.dataset.state = { live: 'online', ended: 'offline', failed: 'failed' }[state] ?? state;
  statePill.dataset.live = state;
  statePill.textContent = { connecting: 'connecting…', live: 'live', ended: 'ended', failed: 'failed' }[state] ?? state;
}

/** @param {number} n */
function addReceived(n) {
  received += n;
  receivedEl.dataset.bytes = String(received);
  const secs = (performance.now() - started) / 1000;
  receivedEl.textContent = `received ${formatBytes(received)}${secs > 1 ? ` · ${formatBytes(received / secs)}/s` : ''}`;
}

/**
 * Words for a failure of the channel.
 * @param {any} err
 * @returns {[string, string]} text and reason
 */
function explain(err) {
  if (!(err instanceof live.LiveError)) return [`The channel failed: ${err?.message ?? err}`, 'other'];
  switch (err.kind) {
    case 'key':
      return [location.hash.includes('k=')
        ? 'The key in this link is wrong: this channel cannot be decrypted. Ask the sender for the link again, complete with the part after #.'
        : 'This channel is encrypted end to end and this link has no key. Ask the sender for the whole link, including the part after #k=.', 'key'];
    case 'missing':
      return [`Record ${err.seq} is missing: a relay dropped or reordered data, so the channel stopped here. What came before is intact.`, 'missing'];
    case 'integrity':
    case 'head':
      return [`Record ${err.seq} was altered on the way, or a relay withheld the newer channel head it belongs to (it does not decrypt), so the channel stopped here. What came before is intact.`, 'integrity'];
    case 'cut':
    case 'nohead':
      return ['The channel ended without its end mark: the sender or a relay went away. What came before is intact.', 'cut'];
    case 'http':
      if (err.status === 404) return ['There is no live channel here: it has ended, or it never started.', 'notfound'];
      return [`The channel could not be read: ${err.message}`, 'http'];
  }
  return [`The channel could not be read: ${err.message}`, err.kind];
}

/** @param {any} err */
function fail(err) {
  const [text, reason] = explain(err);
  const type = /** @type {HTMLElement} */ (document.querySelector('[data-testid="live-type"]'));
  if (!$('channel').dataset.type) type.textContent = 'nothing decrypted';
  setStatus('failed', text, reason);
  statusEl.title = err?.message ?? ''; // the library's words, for the curious
  // What arrived cannot be saved now: the held stream failed with the channel.
  if (!saveButton.dataset.via) saveButton.hidden = true;
  setPill('failed');
}

function ended() {
  setStatus('done', 'The live channel ended.', 'end');
  setPill('ended');
}

// --- playing ---

/**
 * The type to give MediaSource for a channel of type, or '' when it
 * cannot play it. A WebM type without codecs (a file's "video/webm") gets
 * them from the init bytes' tracks.
 * @param {string} type
 * @param {Uint8Array} init
 */
function mediaType(type, init) {
  if (!/^(video|audio)\//.test(type) || !globalThis.MediaSource) return '';
  if (MediaSource.isTypeSupported(type)) return type;
  const codecs = /^(video|audio)\/webm\s*$/i.test(type) ? webmCodecs(init) : [];
  const t = codecs.length ? `${type.trim()};codecs="${codecs.join(',')}"` : '';
  return t && MediaSource.isTypeSupported(t) ? t : '';
}

/**
 * Plays the channel's WebM in the video element with MediaSource.
 * @param {live.LiveRead} ch
 * @param {string} playType the type for MediaSource (mediaType)
 */
async function play(ch, playType) {
  const video = /** @type {HTMLVideoElement} */ ($('video'));
  $('player').hidden = false;
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise((r) => ms.addEventListener('sourceopen', r, { once: true }));
  let type = ch.meta.type;
  const sb = ms.addSourceBuffer(playType);
  // Sequence mode lays the media out from 0 whatever the Cluster
  // timestamps: a reader who joins mid-stream starts playing at once.
  sb.mode = 'sequence';
  const append = async (/** @type {Uint8Array} */ b) => {
    if (!b.length) return;
    if (sb.updating) await new Promise((r) => sb.addEventListener('updateend', r, { once: true }));
    const t = video.currentTime;
    if (sb.buffered.length && t - sb.buffered.start(0) > 2 * EVICT_KEEP_S) {
      sb.remove(0, t - EVICT_KEEP_S);
      await new Promise((r) => sb.addEventListener('updateend', r, { once: true }));
    }
    sb.appendBuffer(b);
    await new Promise((resolve, reject) => {
      sb.addEventListener('updateend', resolve, { once: true });
      sb.addEventListener('error', () => reject(new Error('the browser could not decode the video')), { once: true });
    });
    if (sb.buffered.length) {
      // Stay near the live edge: a player that fell behind (joined at an
      // old Cluster, or stalled) jumps ahead.
      const end = sb.buffered.end(sb.buffered.length - 1);
      if (video.currentTime < sb.buffered.start(0) || end - video.currentTime > MAX_LAG_S) video.currentTime = Math.max(sb.buffered.start(0), end - LAG_S);
    }
    if (video.paused && !video.dataset.userPaused) video.play().catch(() => {});
  };
  video.addEventListener('pause', () => { if (!video.ended) video.dataset.userPaused = '1'; });
  video.addEventListener('play', () => { delete video.dataset.userPaused; });
  video.addEventListener('playing', () => { $('channel').dataset.playingMs ??= String(Math.round(performance.now())); });
  await append(ch.init);
  for await (const rec of ch.records) {
    if (rec.kind === 'head') {
      // A new recorder: a new init segment (and perhaps another type).
      if (rec.meta.type !== type && 'changeType' in sb) {
        const t = mediaType(rec.meta.type, rec.init);
        if (!t) throw new Error(`the channel changed to ${rec.meta.type}, which this browser cannot play`);
        sb.changeType(t);
        type = rec.meta.type;
      }
      await append(rec.init);
      continue;
    }
    if (!$('channel').dataset.firstSeq) {
      // Where this reader joined: a sync record past 0 is a mid-stream join.
      $('channel').dataset.firstSeq = String(rec.seq);
      $('channel').dataset.firstKind = rec.kind;
      $('channel').dataset.firstDataMs = String(Math.round(performance.now()));
    }
    addReceived(rec.data.length);
    $('channel').dataset.lastSeq = String(rec.seq);
    $('channel').dataset.lastAt = String(Date.now());
    await append(rec.data);
    if (rec.kind === 'last') {
      if (sb.updating) await new Promise((r) => sb.addEventListener('updateend', r, { once: true }));
      ms.endOfStream();
      return;
    }
  }
}

// --- saving ---

/**
 * Returns the Service Worker controlling this page, registering it first
 * if needed, or null when there is none.
 * @returns {Promise<ServiceWorker|null>}
 */
async function worker() {
  if (!('serviceWorker' in navigator)) return null;
  try {
    await navigator.serviceWorker.register('/sw.js', { scope: '/', type: 'module' });
  } catch {
    return null;
  }
  if (!navigator.serviceWorker.controller) {
    await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true });
      setTimeout(resolve, SW_READY_MS);
    });
  }
  return navigator.serviceWorker.controller;
}

/**
 * Reads the channel's bytes into a stream that holds them until Save is
 * pressed, then saves them.
 * @param {live.LiveRead} ch
 */
async function offerSave(ch) {
  const name = ch.meta.name || `live-${ch.id}`;
  /** @type {ReadableStreamDefaultController<Uint8Array>} */
  let sink;
  const held = new ReadableStream({ start(c) { sink = c; } }, new ByteLengthQueuingStrategy({ highWaterMark: MAX_HELD }));
  let saving = false;
  saveButton.hidden = false;
  const sw = worker();
  saveButton.addEventListener('click', async () => {
    if (saving) return;
    saving = true;
    saveButton.textContent = 'Saving…';
    saveButton.setAttribute('aria-disabled', 'true');
    const w = await sw;
    if (w) {
      const tag = crypto.randomUUID();
      const keepalive = setInterval(() => (navigator.serviceWorker.controller ?? w).postMessage({ type: 'keepalive' }), KEEPALIVE_MS);
      done.finally(() => clearInterval(keepalive));
      try {
        w.postMessage({ type: 'live-save', tag, name, stream: held }, [held]);
        const frame = document.createElement('iframe');
        frame.hidden = true;
        frame.src = `/dl/live/${tag}`;
        document.body.append(frame);
        saveButton.dataset.via = 'worker';
        return;
      } catch {
        clearInterval(keepalive);
        // This browser cannot transfer streams: gather in memory below.
      }
    }
    saveButton.dataset.via = 'memory';
    /** @type {Uint8Array[]} */
    const parts = [];
    let n = 0;
    const r = held.getReader();
    for (;;) {
      let v;
      try {
        v = await r.read();
      } catch {
        return; // the channel failed: the status says why
      }
      if (v.done) break;
      n += v.value.length;
      if (n > MAX_IN_MEMORY) return fail(new Error(`over ${formatBytes(MAX_IN_MEMORY)}: too much to save without a Service Worker`));
      parts.push(v.value);
    }
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob(parts, { type: 'application/octet-stream' }));
    a.download = name;
    a.click();
  });
  const done = (async () => {
    const r = ch.stream.getReader();
    try {
      for (;;) {
        const v = await r.read();
        if (v.done) break;
        addReceived(v.value.length);
        if (!saving && /** @type {number} */ (sink.desiredSize) < 0) throw new Error(`over ${formatBytes(MAX_HELD)} arrived before Save was pressed; open the link again and save sooner`);
        sink.enqueue(v.value);
      }
      sink.close();
    } catch (err) {
      sink.error(err);
      throw err;
    }
  })();
  await done;
}

// --- start ---

async function main() {
  let link;
  try {
    link = live.parseLink(location.href);
  } catch (err) {
    fail(err);
    return;
  }
  if (!link.key) {
    fail(new live.LiveError('no key', 'key'));
    return;
  }
  started = performance.now();
  let ch;
  try {
    ch = await live.readLive(location.href);
  } catch (err) {
    fail(err);
    return;
  }
  setPill('live');
  $('channel').dataset.headMs = String(Math.round(performance.now())); // ms since the page's navigation
  const name = ch.meta.name || 'Live channel';
  /** @type {HTMLElement} */ (document.querySelector('[data-testid="live-name"]')).textContent = name;
  /** @type {HTMLElement} */ (document.querySelector('[data-testid="live-type"]')).textContent = ch.meta.type;
  document.title = `${name} · live · meshup`;
  $('channel').dataset.type = ch.meta.type;
  const playType = mediaType(ch.meta.type, ch.init);
  const playable = playType !== '';
  setStatus('running', playable ? 'Playing live…' : 'Receiving… Press Save to write it to a file.', 'running');
  try {
    if (playable) await play(ch, playType);
    else await offerSave(ch);
    ended();
  } catch (err) {
    fail(err);
  }
}

main();
