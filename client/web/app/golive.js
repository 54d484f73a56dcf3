// "Go live" on the sender's page (/): streams the camera (MediaRecorder,
// WebM) or a file read progressively into a sealed live channel (format
// live1, /web/live.js), and shows its link (with a QR code), its viewers
// and a Stop button. A file waits for "Start streaming", so that viewers
// can open the link first and get it from its first byte; it streams at
// the chosen pace ("auto": a video or audio file at about its playback
// speed, from its size and duration; anything else at 1 MiB/s).

import { goLive } from '/web/live.js';
import { copyText, formatBytes, renderQR, showError } from './common.js';

const DEFAULT_RATE = 1 << 20; // bytes/s of "auto" for files that are not media
const PROBE_MS = 3000; // how long to wait for a media file's duration

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const errorEl = $('error');

/**
 * The pace of a file: the selected rate, or for "auto" about the file's
 * playback speed when it is audio or video with a known duration.
 * @param {File} file
 * @returns {Promise<number>} bytes/s, 0 for unpaced
 */
async function paceOf(file) {
  const v = /** @type {HTMLSelectElement} */ ($('live-rate')).value;
  if (v !== 'auto') return Number(v);
  if (!/^(video|audio)\//.test(file.type)) return DEFAULT_RATE;
  const url = URL.createObjectURL(file);
  const m = document.createElement('video');
  m.preload = 'metadata';
  try {
    const d = await new Promise((resolve) => {
      m.addEventListener('loadedmetadata', () => resolve(m.duration), { once: true });
      m.addEventListener('error', () => resolve(NaN), { once: true });
      setTimeout(() => resolve(NaN), PROBE_MS);
      m.src = url;
    });
    // A little faster than playback, so viewers never starve.
    return Number.isFinite(d) && d > 0 ? Math.ceil((1.1 * file.size) / d) : DEFAULT_RATE;
  } finally {
    m.removeAttribute('src');
    URL.revokeObjectURL(url);
  }
}

/**
 * Starts a channel and draws its card.
 * @param {{source: MediaStream|File, camera: boolean}} what
 */
async function start(what) {
  const tpl = /** @type {HTMLTemplateElement} */ ($('live-template'));
  const card = /** @type {HTMLElement} */ (tpl.content.firstElementChild.cloneNode(true));
  const field = (/** @type {string} */ f) => /** @type {HTMLElement} */ (card.querySelector(`[data-field="${f}"]`));
  const state = field('state');
  const setState = (/** @type {string} */ s, /** @type {string} */ text) => {
    state.dataset.state = { live: 'online', streaming: 'online', ended: 'offline', failed: 'failed' }[s] ?? s;
    state.dataset.live = s;
    state.textContent = text;
  };
  setState('connecting', 'connecting…');
  const file = what.camera ? null : /** @type {File} */ (what.source);
  field('name').textContent = file ? file.name : 'Camera';
  $('live-list').prepend(card);
  const rate = file ? await paceOf(file) : 0;
  if (what.camera) {
    const v = document.createElement('video');
    v.muted = true;
    v.autoplay = true;
    v.playsInline = true;
    v.srcObject = /** @type {MediaStream} */ (what.source);
    field('preview').append(v);
    field('preview').hidden = false;
  }
  let ch;
  try {
    ch = await goLive({
      source: what.source,
      rate,
      wait: !!file,
      onViewers: (n) => {
        const el = field('viewers');
        el.dataset.viewers = String(n);
        el.textContent = n === 0 ? 'no viewers yet' : `${n} viewer${n === 1 ? '' : 's'}`;
      },
      onState: (s, detail) => {
        if (s === 'streaming' && card.dataset.id) setState(s, 'live'); // (before the link shows, below)
        if (s === 'ended') setState(s, 'ended');
        if (s === 'failed') {
          setState(s, 'failed');
          showError(errorEl, `The live channel failed: ${detail?.message ?? detail}`);
        }
        if (s === 'ended' || s === 'failed') {
          for (const b of card.querySelectorAll('[data-action="start"], [data-action="stop"]')) /** @type {HTMLElement} */ (b).hidden = true;
          if (what.camera) for (const t of /** @type {MediaStream} */ (what.source).getTracks()) t.stop();
        }
      },
    });
  } catch (err) {
    setState('failed', 'failed');
    showError(errorEl, `Could not go live: ${err.message}`);
    if (what.camera) for (const t of /** @type {MediaStream} */ (what.source).getTracks()) t.stop();
    return;
  }
  card.dataset.id = ch.id;
  ch.addEventListener('record', (ev) => {
    const d = /** @type {CustomEvent} */ (ev).detail;
    card.dataset.seq = String(d.seq); // for the browser test's latency figure
    card.dataset.sentAt = String(d.at);
  });
  field('meta').textContent = `${file ? `${formatBytes(file.size)} · ${file.type || 'application/octet-stream'} · ${rate ? `${formatBytes(rate)}/s` : 'unpaced'}` : 'camera, WebM'} · end-to-end encrypted`;
  /** @type {HTMLInputElement} */ (card.querySelector('[data-testid="live-link"]')).value = ch.link;
  renderQR(field('qr'), ch.link);
  // The link is usable.
  if (ch.state === 'live') setState('live', file ? 'ready' : 'live');
  if (ch.state === 'streaming') setState('streaming', 'live');
  const startButton = /** @type {HTMLElement} */ (card.querySelector('[data-action="start"]'));
  startButton.hidden = !file;
  const sent = field('sent');
  const tick = setInterval(() => {
    sent.dataset.bytes = String(ch.sent);
    sent.textContent = ch.sent ? `· sent ${formatBytes(ch.sent)}${file ? ` of ${formatBytes(file.size)}` : ''}` : '';
  }, 250);
  ch.done.finally(() => {
    clearInterval(tick);
    sent.dataset.bytes = String(ch.sent);
    sent.textContent = `· sent ${formatBytes(ch.sent)}`;
  }).catch(() => {});
  card.addEventListener('click', (ev) => {
    const action = /** @type {HTMLElement} */ (ev.target).closest('[data-action]')?.getAttribute('data-action');
    if (action === 'copy') copyText(ch.link, /** @type {HTMLButtonElement} */ (ev.target));
    if (action === 'start') {
      startButton.hidden = true;
      ch.start();
    }
    if (action === 'stop') {
      setState('stopping', 'stopping…');
      ch.stop();
    }
  });
}

$('live-camera').addEventListener('click', async () => {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true }).catch(() => navigator.mediaDevices.getUserMedia({ video: true }));
  } catch (err) {
    showError(errorEl, `No camera: ${err.message}`);
    return;
  }
  start({ source: stream, camera: true });
});

const fileInput = /** @type {HTMLInputElement} */ ($('live-file-input'));
fileInput.addEventListener('change', () => {
  const f = fileInput.files?.[0];
  fileInput.value = '';
  if (f) start({ source: f, camera: false });
});
