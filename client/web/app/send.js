// The sender's page (/): share files, pasted clips and short messages from
// this tab with the meshup library, and show what has been served.
//
// Shared files are remembered in localStorage as {id, owner, key, name,
// size, lastModified, type, shareURL}: when the tab is reopened and the same
// file picked again, it is published with its id, owner secret and item key,
// so its share link stays the same and consumers waiting for it continue.
// Files are encrypted end to end; the key is kept next to the owner secret
// (both only in this browser).

import { Client, Kind, MeshupError, Status } from '/web/meshup.js';
import { copyText, formatBytes, renderQR, showError } from './common.js';

const STORE_KEY = 'meshup.shared';
const MAX_REMEMBERED = 100;

/**
 * @typedef {object} Remembered
 * @property {string} id
 * @property {string} owner
 * @property {string} [key] the item key K in base64url; absent for plaintext items
 * @property {string} name
 * @property {number} size
 * @property {number} lastModified
 * @property {string} type
 * @property {string} shareURL
 */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const errorEl = $('error');
const client = new Client();
/** @type {Map<string, HTMLElement>} item cards by item id */
const cards = new Map();

/** @returns {Remembered[]} */
function remembered() {
  try {
    const v = JSON.parse(localStorage.getItem(STORE_KEY) ?? '[]');
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

/** @param {Remembered[]} list */
function saveRemembered(list) {
  localStorage.setItem(STORE_KEY, JSON.stringify(list.slice(-MAX_REMEMBERED)));
}

/**
 * Shares a file, taking back its earlier item when this file was shared
 * before.
 * @param {File} file
 */
async function shareFile(file) {
  const same = (/** @type {Remembered} */ r) => r.name === file.name && r.size === file.size && r.lastModified === file.lastModified;
  const prev = remembered().find(same);
  if (prev && client.items.has(prev.id)) return; // already shared from this tab
  let item = null;
  if (prev) {
    try {
      item = await client.publish(file, prev.key ? { id: prev.id, owner: prev.owner, key: prev.key } : { id: prev.id, owner: prev.owner, encrypt: false });
    } catch (err) {
      // Expired or refused: share it anew, under a new link.
      if (!(err instanceof MeshupError) || ![Status.NOT_FOUND, Status.FORBIDDEN].includes(err.status)) throw err;
    }
  }
  item ??= await client.publish(file);
  const list = remembered().filter((r) => !same(r) && r.id !== item.id);
  list.push({ id: item.id, owner: item.owner, key: item.keyText || undefined, name: file.name, size: file.size, lastModified: file.lastModified, type: file.type, shareURL: item.shareURL });
  saveRemembered(list);
  renderPrevious();
}

/**
 * Runs a sharing action, showing its failure to the user.
 * @param {Promise<unknown>} p
 */
async function report(p) {
  try {
    await p;
    showError(errorEl, '');
  } catch (err) {
    showError(errorEl, `Could not share: ${err.message}`);
  }
}

/** @param {FileList|File[]} files */
function shareFiles(files) {
  for (const f of files) report(shareFile(f));
}

/**
 * Creates or updates the card of an item.
 * @param {import('/web/meshup.js').Item} item
 */
function renderItem(item) {
  let card = cards.get(item.id);
  if (!card) {
    if (item.state === 'cancelled') return;
    const tpl = /** @type {HTMLTemplateElement} */ ($('item-template'));
    card = /** @type {HTMLElement} */ (tpl.content.firstElementChild.cloneNode(true));
    card.dataset.id = item.id;
    card.dataset.kind = item.kind;
    const field = (/** @type {string} */ f) => /** @type {HTMLElement} */ (card.querySelector(`[data-field="${f}"]`));
    field('name').textContent = item.name || 'Message';
    const about = item.kind === Kind.MESSAGE
      ? 'message · through the rendezvous only'
      : `${formatBytes(item.plainSize)} · ${item.type || 'unknown type'} · ${item.enc ? 'end-to-end encrypted' : 'not encrypted'}`;
    field('meta').textContent = about + (item.kind === Kind.CLIP ? ' · clip: storing on relays…' : '');
    if (item.kind === Kind.CLIP) {
      // Say "readable after this tab closes" only once it is true: a
      // relay holds every byte (and the sealed metadata, so that a
      // restart of the rendezvous loses nothing).
      client.waitClipStored(item).then((st) => {
        const until = (st.expires ?? item.expires)?.toLocaleString() ?? 'it expires';
        const copies = st.holders === 1 ? 'one relay' : `${st.holders} relays`;
        field('meta').textContent = `${about} · clip: kept by ${copies} until ${until}, readable after this tab closes`;
        card.dataset.stored = 'true';
      }, (err) => {
        field('meta').textContent = `${about} · clip not stored: ${err.message}`;
      });
    }
    /** @type {HTMLInputElement} */ (card.querySelector('[data-testid="share-link"]')).value = item.shareURL;
    renderQR(field('qr'), item.shareURL);
    if (item.kind === Kind.MESSAGE) {
      field('text').textContent = item.text;
      field('text').hidden = false;
      field('progress-row').hidden = true;
      /** @type {HTMLElement} */ (card.querySelector('[data-action="pause"]')).hidden = true;
    }
    card.addEventListener('click', (ev) => {
      const action = /** @type {HTMLElement} */ (ev.target).closest('[data-action]')?.getAttribute('data-action');
      const it = client.items.get(item.id);
      if (action === 'copy') copyText(item.shareURL, /** @type {HTMLButtonElement} */ (ev.target));
      if (action === 'pause' && it) it.state === 'paused' ? client.resume(it.id) : client.pause(it.id);
      if (action === 'remove') client.cancel(item.id);
    });
    const list = item.kind === Kind.FILE ? $('item-list') : $('message-list');
    list.prepend(card);
    list.parentElement.hidden = false;
    cards.set(item.id, card);
  }
  if (item.state === 'cancelled') {
    card.remove();
    cards.delete(item.id);
    return;
  }
  const state = /** @type {HTMLElement} */ (card.querySelector('[data-field="state"]'));
  state.dataset.state = item.state;
  state.textContent = item.state === 'online' ? 'sharing' : item.state;
  card.querySelector('[data-action="pause"]').textContent = item.state === 'paused' ? 'Resume' : 'Pause';
  renderProgress(item);
}

/** @param {import('/web/meshup.js').Item} item */
function renderProgress(item) {
  const card = cards.get(item.id);
  if (!card || item.kind === Kind.MESSAGE) return;
  const bar = /** @type {HTMLProgressElement} */ (card.querySelector('progress'));
  bar.max = Math.max(item.size, 1);
  bar.value = Math.min(item.served, item.size);
  bar.dataset.served = String(item.served);
  const relays = item.servedByRelay.size;
  const served = /** @type {HTMLElement} */ (card.querySelector('[data-field="served"]'));
  served.textContent = item.served === 0
    ? 'nothing served yet'
    : `served ${formatBytes(item.served)} (${(100 * item.served / Math.max(item.size, 1)).toFixed(0)}% of the size) through ${relays} relay${relays === 1 ? '' : 's'}`;
}

/** Lists files shared before that this tab does not serve now. */
function renderPrevious() {
  const list = $('previous-list');
  list.replaceChildren();
  for (const r of remembered().toReversed()) {
    if (client.items.has(r.id)) continue;
    const li = document.createElement('li');
    li.className = 'item card';
    li.dataset.id = r.id;
    const name = document.createElement('div');
    name.className = 'name';
    name.textContent = r.name;
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = `${formatBytes(r.size)} · ${r.shareURL}`;
    const forget = document.createElement('button');
    forget.type = 'button';
    forget.textContent = 'Forget';
    forget.addEventListener('click', () => {
      saveRemembered(remembered().filter((x) => x.id !== r.id));
      renderPrevious();
    });
    const row = document.createElement('div');
    row.className = 'row';
    const text = document.createElement('div');
    text.className = 'grow';
    text.append(name, meta);
    row.append(text, forget);
    li.append(row);
    list.append(li);
  }
  list.parentElement.hidden = list.childElementCount === 0;
}

// --- wiring ---

client.addEventListener('state', (ev) => {
  const { state, error } = /** @type {CustomEvent} */ (ev).detail;
  const pill = $('conn');
  pill.dataset.state = state;
  pill.textContent = { connecting: 'connecting…', online: 'online', offline: 'offline, reconnecting…', closed: 'closed' }[state] ?? state;
  pill.title = error ?? '';
});
client.addEventListener('item', (ev) => renderItem(/** @type {CustomEvent} */ (ev).detail.item));

let progressQueued = new Set();
client.addEventListener('progress', (ev) => {
  // Acks come many times a second: draw once per frame.
  if (progressQueued.size === 0) {
    requestAnimationFrame(() => {
      const items = progressQueued;
      progressQueued = new Set();
      for (const it of items) renderProgress(it);
    });
  }
  progressQueued.add(/** @type {CustomEvent} */ (ev).detail.item);
});
client.addEventListener('error', (ev) => showError(errorEl, /** @type {CustomEvent} */ (ev).detail.message));

const input = /** @type {HTMLInputElement} */ ($('file-input'));
input.addEventListener('change', () => {
  shareFiles([...(input.files ?? [])]);
  input.value = '';
});

const drop = $('drop');
for (const t of ['dragenter', 'dragover']) {
  document.addEventListener(t, (ev) => {
    ev.preventDefault();
    drop.classList.add('over');
  });
}
for (const t of ['dragleave', 'dragend']) document.addEventListener(t, () => drop.classList.remove('over'));
document.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  if (ev.dataTransfer?.files.length) shareFiles(ev.dataTransfer.files);
});

const message = /** @type {HTMLTextAreaElement} */ ($('message-input'));
$('compose').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = message.value.trim();
  if (!text) return;
  report(client.publishText(text).then(() => { message.value = ''; }));
});
message.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) $('compose').requestSubmit();
});

// Pasting anywhere but the message box shares the clipboard: images and
// files as clips, text as a clip (a message when it is short).
document.addEventListener('paste', (ev) => {
  if (ev.target === message) return;
  const data = ev.clipboardData;
  if (!data) return;
  ev.preventDefault();
  if (data.files.length) {
    for (const f of data.files) report(client.publishClip(f, { name: f.name || undefined }));
    return;
  }
  const text = data.getData('text/plain');
  if (text) report(client.publishClip(text, { name: 'Pasted text' }));
});

renderPrevious();
client.connect();
