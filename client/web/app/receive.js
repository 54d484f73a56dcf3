// The page of an item (/i/{id}): preview, download that streams to disk and
// survives the sender going away, copy of texts.
//
// Downloads go through the Service Worker (/sw.js): the page navigates a
// hidden frame to /dl/{id}, the worker streams the item to disk, resuming
// with Range when the sender comes back, and reports on the BroadcastChannel
// "meshup-downloads". Without a worker, small items are fetched into memory
// with the same resumption, and larger ones use the browser's plain
// download (which cannot resume).
//
// An encrypted item (data-enc="e2e1") is read with the key in the link's
// fragment (#k=...), which no server sees: the page decrypts the name, type
// and modification time, hands the key to the worker with postMessage, and
// the worker decrypts downloads and previews (/sw/plain/{id}). Without a
// key, or with a wrong one, the page says so and downloads nothing.

import * as e2e from '/web/e2e.js';
import { copyText, formatBytes } from './common.js';

const MAX_IN_MEMORY = 64 << 20; // bytes: the largest item downloaded without the worker
const POLL_MS = 2000; // how often the sender's state is checked while it is away
const KEEPALIVE_MS = 10_000;
const MAX_TEXT_PREVIEW = 1 << 20; // bytes: text clips shown inline up to this size
const SW_READY_MS = 3000;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = $('item');
const item = {
  id: el.dataset.id ?? '',
  kind: el.dataset.kind ?? '',
  name: el.dataset.name ?? '',
  size: Number(el.dataset.size),
  mime: el.dataset.mime ?? '',
  online: el.dataset.online === 'true',
  enc: el.dataset.enc ?? '',
  modified: 0,
};
/** @type {string} the key K in base64url, for the worker; '' for plaintext items */
let keyText = '';
const itemURL = `/v1/items/${item.id}`;
const statusEl = $('status');
const onlinePill = $('online');

/**
 * Shows a status line; state is running, waiting, done or failed.
 * @param {string} state
 * @param {string} text
 */
function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
  statusEl.hidden = !text;
}

/** @param {boolean} online */
function setOnline(online) {
  item.online = online;
  if (item.kind === 'message') {
    onlinePill.textContent = 'message';
    return;
  }
  onlinePill.dataset.state = online ? 'online' : 'offline';
  onlinePill.textContent = online ? 'sender online' : 'sender offline';
}

/**
 * Asks the rendezvous whether the sender is online.
 * @returns {Promise<boolean>}
 */
async function checkOnline() {
  try {
    const res = await fetch(`${itemURL}/meta`, { cache: 'no-store' });
    if (res.ok) setOnline((await res.json()).online);
  } catch {
    // The rendezvous is unreachable: keep the last known state.
  }
  return item.online;
}

/** Polls until the sender is online. */
async function waitOnline() {
  while (!(await checkOnline())) await new Promise((r) => setTimeout(r, POLL_MS));
}

// --- preview ---

function renderPreview() {
  const box = $('preview');
  const [major] = item.mime.split('/');
  // An encrypted item's plaintext comes from the worker.
  const src = item.enc ? `/sw/plain/${item.id}` : itemURL;
  /** @type {HTMLMediaElement|HTMLImageElement|null} */
  let media = null;
  if (major === 'video' || major === 'audio') {
    const m = document.createElement(major);
    m.controls = true;
    m.preload = 'metadata';
    if (m instanceof HTMLVideoElement) m.playsInline = true;
    m.dataset.testid = `preview-${major}`;
    m.addEventListener('error', () => resumeMedia(m));
    media = m;
  } else if (major === 'image') {
    const img = document.createElement('img');
    img.alt = item.name;
    img.dataset.testid = 'preview-image';
    img.addEventListener('error', () => waitOnline().then(() => { img.src = `${src}?retry=${Date.now()}`; }), { once: true });
    media = img;
  } else if (major === 'text' && item.size <= MAX_TEXT_PREVIEW) {
    renderTextPreview(box);
    return;
  }
  if (!media) return;
  box.append(media);
  box.hidden = false;
  // Loading while the sender is away would fail: wait for it.
  const ready = item.enc ? worker().then((sw) => {
    if (!sw) throw new Error('this browser has no Service Worker here, which previews of encrypted items need');
  }) : Promise.resolve();
  Promise.all([ready, waitOnline()]).then(() => { media.src = src; }, (err) => setStatus('failed', err.message));
}

/**
 * Picks up a player where it stopped after the sender went away.
 * @param {HTMLMediaElement} m
 */
async function resumeMedia(m) {
  const at = m.currentTime;
  const wasPlaying = !m.paused;
  setStatus('waiting', 'Waiting for the sender to come back…');
  await new Promise((r) => setTimeout(r, POLL_MS));
  await waitOnline();
  setStatus('running', '');
  m.src = `${item.enc ? `/sw/plain/${item.id}` : itemURL}?resume=${Date.now()}`;
  m.currentTime = at;
  if (wasPlaying) m.play().catch(() => {});
}

/** @param {HTMLElement} box */
async function renderTextPreview(box) {
  await waitOnline();
  if (item.enc && !(await worker())) return;
  const res = await fetch(item.enc ? `/sw/plain/${item.id}` : itemURL, { cache: 'no-store' });
  if (!res.ok) return;
  const pre = document.createElement('pre');
  pre.className = 'text';
  pre.dataset.testid = 'item-text';
  pre.textContent = await res.text();
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.textContent = 'Copy text';
  copy.addEventListener('click', () => copyText(pre.textContent ?? '', copy));
  box.append(pre, copy);
  box.hidden = false;
}

// --- download ---

const progressRow = $('progress-row');
const bar = /** @type {HTMLProgressElement} */ ($('progress'));
const progressText = $('progress-text');
let started = 0; // performance.now() at the start of the download, 0 before

/** @param {number} received */
function showProgress(received) {
  progressRow.hidden = false;
  bar.max = Math.max(item.size, 1);
  bar.value = received;
  bar.dataset.received = String(received);
  const secs = (performance.now() - started) / 1000;
  const rate = secs > 0.5 ? ` · ${formatBytes(received / secs)}/s` : '';
  progressText.textContent = `${formatBytes(received)} of ${formatBytes(item.size)}${rate}`;
}

/**
 * Reflects a download state reported by the worker or the in-memory path.
 * @param {{state: string, received: number, message?: string}} m
 */
function onDownload(m) {
  showProgress(m.received);
  bar.dataset.state = m.state;
  switch (m.state) {
    case 'running':
      setStatus('running', 'Downloading…');
      if (!item.online) setOnline(true);
      break;
    case 'waiting':
      setStatus('waiting', 'Waiting for the sender to come back… The download continues by itself.');
      checkOnline();
      break;
    case 'resuming':
      // The exit relay failed (issue 10): the download goes on through
      // another relay by itself.
      setStatus('resuming', 'A relay dropped out; continuing through another… The download continues by itself.');
      statusEl.dataset.resumed = String(Number(statusEl.dataset.resumed ?? 0) + 1);
      statusEl.dataset.resumeMessage = m.message ?? '';
      break;
    case 'done':
      setStatus('done', 'Download complete.');
      break;
    case 'integrity':
      setStatus('integrity', `Integrity error in chunk ${m.chunk}: ${m.message}`);
      statusEl.dataset.integrityChunk = String(m.chunk);
      break;
    case 'failed':
      setStatus('failed', `Download failed: ${m.message}`);
      break;
  }
}

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
    // A fresh worker claims this page when it activates.
    await new Promise((resolve) => {
      navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true });
      setTimeout(resolve, SW_READY_MS);
    });
  }
  const sw = navigator.serviceWorker.controller;
  if (sw && keyText) sw.postMessage({ type: 'key', id: item.id, key: keyText });
  return sw;
}

/**
 * Downloads through the worker.
 * @param {ServiceWorker} sw
 */
function downloadWithWorker(sw) {
  const key = crypto.randomUUID();
  const channel = new BroadcastChannel('meshup-downloads');
  const keepalive = setInterval(() => (navigator.serviceWorker.controller ?? sw).postMessage({ type: 'keepalive' }), KEEPALIVE_MS);
  channel.addEventListener('message', (ev) => {
    if (ev.data?.key !== key) return;
    onDownload(ev.data);
    if (ev.data.state === 'done' || ev.data.state === 'failed') {
      clearInterval(keepalive);
      channel.close();
    }
  });
  const frame = document.createElement('iframe');
  frame.hidden = true;
  frame.src = `/dl/${item.id}?key=${key}`;
  document.body.append(frame);
}

/**
 * Downloads a small item into memory, resuming with Range when the sender
 * goes away or the exit relay fails (then through another exit: the
 * rendezvous is asked to avoid the relays that failed, named by their
 * Meshup-Relay header), then saves it.
 */
async function downloadInMemory() {
  /** @type {Uint8Array[]} */
  const chunks = [];
  let received = 0;
  /** @type {string[]} exits that failed */
  const avoid = [];
  let etag = ''; // validator of the first response: never mix two versions
  let moved = true; // bytes arrived since the last failure
  while (received < item.size) {
    let res = null;
    const url = avoid.length ? `${itemURL}?avoid=${avoid.map(encodeURIComponent).join(',')}` : itemURL;
    try {
      res = await fetch(url, { headers: received ? { Range: `bytes=${received}-` } : {}, cache: 'no-store' });
    } catch {
      // unreachable: wait below
    }
    if (res?.status === 404) return onDownload({ state: 'failed', received, message: 'the item is gone' });
    const exit = res?.headers.get('Meshup-Relay') ?? '';
    if (!res || !res.body || (res.status !== 200 && res.status !== 206)) {
      res?.body?.cancel();
      if (exit && !avoid.includes(exit)) avoid.push(exit); // that exit refused
      onDownload({ state: 'waiting', received });
      await new Promise((r) => setTimeout(r, POLL_MS));
      await waitOnline();
      continue;
    }
    const start = res.status === 206 ? Number(/^bytes (\d+)-/.exec(res.headers.get('Content-Range') ?? '')?.[1]) : 0;
    const tag = res.headers.get('ETag') ?? '';
    if (start !== received || (etag && tag !== etag)) {
      res.body.cancel();
      return onDownload({ state: 'failed', received, message: `the item changed during the download (answer from byte ${start}, version ${tag})` });
    }
    etag ||= tag;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        received += value.byteLength;
        moved = true;
        onDownload({ state: 'running', received });
      }
    } catch {
      // cut short: resume from received
    }
    if (received < item.size) {
      // The exit failed (or the sender went away): resume through
      // another exit, at once the first time.
      if (exit) avoid.splice(0, avoid.length, ...avoid.filter((id) => id !== exit), exit);
      if (avoid.length > 8) avoid.shift();
      onDownload({ state: 'resuming', received, message: `relay ${exit || '(unknown)'} stopped at byte ${received}; resuming through another relay` });
      if (!moved) await new Promise((r) => setTimeout(r, POLL_MS));
      moved = false;
    }
  }
  const url = URL.createObjectURL(new Blob(chunks, { type: item.mime }));
  const a = document.createElement('a');
  a.href = url;
  a.download = item.name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  onDownload({ state: 'done', received });
}

/** @param {MouseEvent} ev */
async function onDownloadClick(ev) {
  ev.preventDefault();
  if (started) return; // one download per page
  started = performance.now();
  const button = /** @type {HTMLElement} */ (ev.currentTarget);
  button.textContent = 'Downloading…';
  button.setAttribute('aria-disabled', 'true');
  setStatus('running', 'Starting…');
  const sw = await worker();
  if (sw) return downloadWithWorker(sw);
  if (item.enc) return setStatus('failed', 'Download failed: this browser has no Service Worker here, which encrypted items need.');
  if (item.size <= MAX_IN_MEMORY) return downloadInMemory();
  // The browser's own download streams to disk but cannot resume.
  setStatus('running', 'Downloading with the browser. If the sender goes away, start again once it is back.');
  const a = document.createElement('a');
  a.href = itemURL;
  a.download = item.name;
  a.click();
}

// --- encryption ---

/**
 * Shows why an encrypted item cannot be read and takes away what would
 * download it.
 * @param {string} text
 */
function refuse(text) {
  setStatus('failed', text);
  statusEl.dataset.reason = 'key';
  onlinePill.hidden = true;
  $('download').remove();
  $('preview').remove();
}

/**
 * Reads the key from the fragment and opens the item's metadata with it.
 * @returns {Promise<boolean>} whether the item can be read
 */
async function openItem() {
  const encEl = $('encryption');
  if (!item.enc) return true;
  if (item.enc !== e2e.VERSION) {
    refuse(`This item is encrypted with ${item.enc}, which this page cannot read.`);
    return false;
  }
  let key;
  try {
    key = e2e.parseFragment(location.hash);
  } catch (err) {
    refuse(`This link's key is damaged (${err.message}). Ask the sender for the link again, complete with the part after #.`);
    return false;
  }
  if (!key) {
    refuse('This item is encrypted end to end and this link has no key. Ask the sender for the whole link, including the part after #k=.');
    return false;
  }
  let sealed = '';
  try {
    const res = await fetch(`${itemURL}/meta`, { cache: 'no-store' });
    if (res.ok) sealed = (await res.json()).meta ?? '';
  } catch {
    // unreachable: fails below
  }
  let meta;
  try {
    const keys = await e2e.deriveKeys(key, item.id);
    meta = await e2e.openMeta(keys.metadata, sealed);
  } catch {
    refuse('The key in this link is wrong: this item cannot be decrypted. Nothing was downloaded. Ask the sender for the link again.');
    return false;
  }
  keyText = e2e.b64urlEncode(key);
  item.name = meta.name;
  item.mime = meta.type || 'application/octet-stream';
  item.modified = meta.modified;
  item.size = e2e.plainSize(item.size);
  /** @type {HTMLElement} */ (document.querySelector('[data-testid="item-name"]')).textContent = item.name;
  /** @type {HTMLElement} */ (document.querySelector('[data-testid="item-type"]')).textContent = item.mime;
  /** @type {HTMLElement} */ (document.querySelector('[data-testid="item-size"]')).textContent = formatBytes(item.size);
  document.title = `${item.name} · meshup`;
  encEl.title = 'Decrypted in this browser with the key in the link, which no server sees.';
  // A worker restarted by the browser asks the pages for keys.
  navigator.serviceWorker?.addEventListener('message', (ev) => {
    if (ev.data?.type === 'need-key' && ev.data.id === item.id) ev.ports[0]?.postMessage({ key: keyText });
  });
  navigator.serviceWorker?.startMessages();
  return true;
}

// --- start ---

setOnline(item.online || item.kind === 'message');
if (item.kind === 'message') {
  const copy = /** @type {HTMLButtonElement} */ ($('copy-text'));
  copy.addEventListener('click', () => copyText($('text').textContent ?? '', copy));
} else if (await openItem()) {
  $('download').addEventListener('click', onDownloadClick);
  renderPreview();
  if (!item.online) waitOnline();
  // Install the worker early so that the first download need not wait.
  worker();
}
