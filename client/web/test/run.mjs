// Browser tests of the meshup web app, in Debian's headless Chromium driven
// by playwright-core. Started by cmd/internal/browser against a running mesh:
//
//	node run.mjs http://127.0.0.1:PORT [--only 1,3] [--screenshots DIR]
//	             [--bigfile PATH] [--vectors PATH] [--harness]
//
// Files are published end-to-end encrypted, as the web app does by default.
//
// 1. A publishes a 200 MiB file (--bigfile, or a generated one); B shows it
//    as end-to-end encrypted with its decrypted name and downloads it;
//    SHA-256 equal. (The Go harness checks, with a tap on the relays, that
//    no plaintext and not the name crossed a relay.)
// 2. A publishes a 20-minute ffmpeg video; B plays it through the Service
//    Worker, which decrypts, and seeks to 75%: playback resumes there,
//    relays saw Range requests, and served under 15% of the file.
// 3. Text pasted on A and a short message from A reach B; relay counters
//    show no relay carried them.
// 4. A closes its tab during B's download: B shows the waiting message; A
//    is reopened and the file re-picked; B's download completes intact.
// 5. A pauses an item: B's download waits; A resumes: it completes intact;
//    A stops sharing: the item is gone.
// 6. The library publishes plaintext with {encrypt: false}: B shows "not
//    encrypted" and downloads it intact.
// 7. e2e.js in Chromium passes every golden vector (--vectors).
// 8. A link with a wrong, a damaged or no key: B says so clearly, offers no
//    download, and nothing is downloaded.
// 9. Interop (needs --harness, the Go test): a file the browser encrypted is
//    downloaded and decrypted by the Go client (client.DownloadTo);
//    SHA-256 and name equal.
// 10. Integrity (needs --harness): the Go side makes a relay flip one byte of
//    an item once; B's Service Worker reports the chunk, reads it again
//    through another relay, and the download completes intact.
// 11. Interop (needs --harness): a Go client publishes an encrypted file
//    (client.Publish); page B shows its decrypted name and downloads it
//    through the Service Worker; SHA-256 equal. (The tap checks that its
//    plaintext and name crossed no relay either.)
//
// With --harness, run.mjs asks the Go test for things on stdout ("harness:
// REQUEST") and reads the answer from stdin, one line each.
//
// Every page fails its test on a console error or an uncaught exception.
// Figures are printed as "figure: ..." lines.

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { checkVectors } from './vectors.mjs';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    only: { type: 'string' },
    screenshots: { type: 'string' },
    bigfile: { type: 'string' },
    vectors: { type: 'string', default: '../../../proto/testdata/e2e1-vectors.json' },
    harness: { type: 'boolean', default: false },
  },
});
const base = positionals[0];
if (!base) {
  console.error('usage: node run.mjs RENDEZVOUS_URL [--only 1,2] [--screenshots DIR]');
  process.exit(2);
}
const only = new Set((opts.only ?? '1,2,3,4,5,6,7,8,9,10,11').split(','));
const FILE_SIZE = 200 << 20;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** @type {import('playwright-core').Browser} */
let browser;
let work = '';
/** @type {{path: string, sha256: string}} */
let bigFile;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'meshup-browser-'));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  if (only.has('1') || only.has('4')) {
    bigFile = opts.bigfile
      ? { path: opts.bigfile, sha256: await sha256File(opts.bigfile) }
      : await writeRandomFile(join(work, 'random-200MiB.bin'), FILE_SIZE);
  }
  if (opts.screenshots) await mkdir(opts.screenshots, { recursive: true });
});

after(async () => {
  harnessInput?.close(); // stdin would keep node running
  process.stdin.destroy();
  await browser?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

// --- helpers ---

/** @type {AsyncIterator<string>|null} */
let harnessLines = null;
/** @type {import('node:readline').Interface|null} */
let harnessInput = null;

/**
 * Asks the Go test harness for something and returns its one-line answer.
 * @param {string} request
 */
async function ask(request) {
  harnessInput ??= createInterface({ input: process.stdin });
  harnessLines ??= harnessInput[Symbol.asyncIterator]();
  console.log(`harness: ${request}`);
  const { value, done } = await harnessLines.next();
  if (done) throw new Error(`harness gave no answer to ${request}`);
  return value;
}

/**
 * Writes size random bytes to path, hashing them on the way.
 * @param {string} path
 * @param {number} size
 */
async function writeRandomFile(path, size) {
  const hash = createHash('sha256');
  const out = createWriteStream(path);
  for (let left = size; left > 0;) {
    const chunk = randomBytes(Math.min(left, 4 << 20));
    hash.update(chunk);
    if (!out.write(chunk)) await new Promise((r) => out.once('drain', r));
    left -= chunk.length;
  }
  await new Promise((resolve, reject) => out.end((err) => (err ? reject(err) : resolve())));
  return { path, sha256: hash.digest('hex') };
}

/** SHA-256 of a file, streamed. @param {string} path */
async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}

// Playwright waits at most 30 s by default; on a loaded machine (CI runs
// the whole suite on two cores) a 200 MiB transfer or a page's first
// connection may take longer. A wait that fails still fails, later.
const WAIT_MS = 120_000;

/** A new browser context and page that record console errors. */
async function open(context) {
  const ctx = context ?? await browser.newContext({ acceptDownloads: true, viewport: { width: 900, height: 900 } });
  ctx.setDefaultTimeout(WAIT_MS);
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  return { ctx, page, errors };
}

/** Fails on any error a page collected. */
function assertNoErrors(name, errors) {
  assert.deepEqual(errors, [], `${name}: console errors or uncaught exceptions`);
}

/**
 * Publishes files from the sender page and returns the share link of the
 * newest item card.
 * @param {import('playwright-core').Page} page
 * @param {string} path
 */
async function publishFile(page, path) {
  const before = await page.locator('#item-list [data-testid="item"]').count();
  await page.setInputFiles('[data-testid="file-input"]', path);
  const card = page.locator('#item-list [data-testid="item"]').nth(0);
  await page.waitForFunction((n) => document.querySelectorAll('#item-list [data-testid="item"]').length > n, before);
  const link = await card.locator('[data-testid="share-link"]').inputValue();
  assert.match(link, /^http:\/\/.+\/i\/[a-z2-7]{26}#k=[A-Za-z0-9_-]{43}$/, 'an encrypted item\'s link carries its key');
  return link;
}

/**
 * Waits until an item page decrypted the item's metadata and checks that
 * it says the item is end-to-end encrypted and shows its name.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
async function assertEncryptedPage(page, name) {
  await page.waitForFunction((n) => document.querySelector('[data-testid="item-name"]')?.textContent === n, name);
  const enc = page.locator('[data-testid="encryption"]');
  assert.equal(await enc.getAttribute('data-state'), 'encrypted');
  assert.equal((await enc.textContent()).trim(), 'end-to-end encrypted');
}

/**
 * Fails when the page's downloads saw an integrity error (the Service
 * Worker reports the chunk).
 * @param {import('playwright-core').Page} page
 */
async function integrityChunk(page) {
  return page.locator('[data-testid="status"]').getAttribute('data-integrity-chunk');
}

/** Sums the counters of every live relay (GET /v1/status on each). */
async function relayCounters() {
  const rv = await (await fetch(`${base}/v1/status`)).json();
  const sum = { relays: rv.relays.length, bytes_in: 0, bytes_out: 0, requests: 0, range_requests: 0, needs: 0, parts_begun: 0 };
  for (const r of rv.relays) {
    const s = (await (await fetch(`${r.http_url}/v1/status`)).json()).stats;
    for (const k of Object.keys(sum)) if (k !== 'relays') sum[k] += s[k];
  }
  return sum;
}

/** @param {Record<string, number>} a @param {Record<string, number>} b */
function diff(a, b) {
  return Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - a[k]]));
}

async function screenshot(page, name) {
  if (opts.screenshots) await page.screenshot({ path: join(opts.screenshots, name), fullPage: true });
}

function figure(text) {
  console.log(`figure: ${text}`);
}

// --- tests ---

test('1: a 200 MiB file from page A downloads intact on page B', { skip: !only.has('1') }, async () => {
  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, bigFile.path);

  const b = await open();
  await b.page.goto(link);
  await assertEncryptedPage(b.page, basename(bigFile.path));
  await b.page.waitForSelector('[data-testid="download-button"]');
  const t0 = performance.now();
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const path = await dl.path();
  const secs = (performance.now() - t0) / 1000;
  assert.equal((await stat(path)).size, FILE_SIZE);
  const got = await sha256File(path);
  assert.equal(got, bigFile.sha256, 'SHA-256 of the download');
  await b.page.waitForSelector('[data-testid="status"][data-state="done"]');
  await a.page.waitForFunction((n) => Number(document.querySelector('#item-list progress')?.dataset.served) >= n, FILE_SIZE);
  assert.equal(await integrityChunk(b.page), null, 'integrity errors');
  figure(`test 1: 200 MiB end-to-end encrypted in ${secs.toFixed(1)} s (${(FILE_SIZE / 1048576 / secs).toFixed(0)} MiB/s), sha256 ${got} equal`);
  await screenshot(a.page, 'sender.png');
  await screenshot(b.page, 'receiver-download.png');
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('2: an encrypted video plays on page B and seeks to 75% with Range requests', { skip: !only.has('2') }, async () => {
  const video = join(work, 'testsrc.mp4');
  // 20 minutes of 640x360 at 2 Mbit/s (about 310 MB), H.264 with the index
  // first, so that a player can seek before it has the whole file. The
  // player reads ahead and relays keep a window in flight per request, so
  // a few tens of MB move whatever the length: the file is long enough for
  // that to stay far below its size.
  await promisify(execFile)('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=25',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '1200', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p',
    '-b:v', '2M', '-minrate', '2M', '-maxrate', '2M', '-bufsize', '1M', '-g', '50',
    '-c:a', 'aac', '-b:a', '64k', '-movflags', '+faststart', video,
  ]);
  const size = (await stat(video)).size;

  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, video);

  const before = await relayCounters();
  const b = await open();
  await b.page.goto(link);
  await assertEncryptedPage(b.page, 'testsrc.mp4');
  const v = b.page.locator('[data-testid="preview-video"]');
  await v.waitFor();
  await b.page.waitForFunction(() => document.querySelector('video')?.readyState >= 1, null, { timeout: WAIT_MS });
  const duration = await v.evaluate((el) => el.duration);
  assert.ok(duration > 1190, `duration ${duration}`);
  await v.evaluate((el) => { el.muted = true; return el.play(); });
  await b.page.waitForFunction(() => document.querySelector('video').currentTime > 1, null, { timeout: WAIT_MS });

  const target = duration * 0.75;
  await v.evaluate((el, t) => new Promise((resolve) => {
    el.addEventListener('seeked', resolve, { once: true });
    el.currentTime = t;
  }), target);
  // Playback resumes at the new position: time moves on from there.
  await b.page.waitForFunction((t) => {
    const el = document.querySelector('video');
    return !el.paused && el.currentTime > t + 1;
  }, target, { timeout: WAIT_MS });
  const position = await v.evaluate((el) => el.currentTime);
  await v.evaluate((el) => el.pause());
  await screenshot(b.page, 'receiver-video.png');
  const moved = diff(before, await relayCounters());

  figure(`test 2: encrypted video ${size} bytes, ${duration.toFixed(1)} s; relays served ${moved.bytes_out} bytes (${(100 * moved.bytes_out / size).toFixed(1)}%), ` +
    `pushed ${moved.bytes_in}, ${moved.requests} requests of which ${moved.range_requests} with Range; ` +
    `seek to ${target.toFixed(2)} s, playing at ${position.toFixed(2)} s`);
  assert.ok(position >= target && position < target + 10, `position ${position}, seek target ${target}`);
  assert.ok(moved.range_requests >= 1, `relays saw ${moved.range_requests} Range requests`);
  assert.ok(moved.bytes_out < size * 0.15, `relays served ${moved.bytes_out} of ${size} bytes`);
  assert.equal(await v.evaluate((el) => el.currentSrc.replace(location.origin, '').split('?')[0]), `/sw/plain/${link.split('/').pop().split('#')[0]}`, 'the video plays through the Service Worker');
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('3: pasted text and a short message reach page B through the rendezvous only', { skip: !only.has('3') }, async () => {
  // Parts the relays took in for an earlier test may still be arriving.
  let before = await relayCounters();
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await relayCounters();
    if (JSON.stringify(now) === JSON.stringify(before)) break;
    before = now;
  }
  const a = await open();
  await a.page.goto(base);
  await a.page.waitForSelector('[data-testid="connection"][data-state="online"]');

  const pasted = `pasted at ${new Date().toISOString()}\nsecond line ✓`;
  await a.page.evaluate((text) => {
    const dt = new DataTransfer();
    dt.setData('text/plain', text);
    document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  }, pasted);
  const message = `hello from A, ${Math.random().toString(36).slice(2)}`;
  await a.page.fill('[data-testid="message-input"]', message);
  await a.page.click('[data-testid="message-send"]');
  await a.page.waitForFunction(() => document.querySelectorAll('[data-testid="message-list"] [data-testid="item"]').length === 2);
  const cards = a.page.locator('[data-testid="message-list"] [data-testid="item"]');
  // Newest first: the message, then the pasted text.
  const links = [await cards.nth(1).locator('[data-testid="share-link"]').inputValue(), await cards.nth(0).locator('[data-testid="share-link"]').inputValue()];
  await screenshot(a.page, 'sender-messages.png');

  const b = await open();
  for (const [i, want] of [pasted, message].entries()) {
    await b.page.goto(links[i]);
    const got = await b.page.locator('[data-testid="item-text"]').textContent();
    assert.equal(got, want);
  }
  await screenshot(b.page, 'receiver-message.png');
  const after = await relayCounters();
  figure(`test 3: relay counters before ${JSON.stringify(before)}`);
  figure(`test 3: relay counters after  ${JSON.stringify(after)}`);
  assert.deepEqual(after, before, 'no relay carried the texts');
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('4: B\'s download waits while A\'s tab is closed and completes when A re-picks the file', { skip: !only.has('4') }, async () => {
  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, bigFile.path);

  const b = await open();
  await b.page.goto(link);
  await b.page.waitForSelector('[data-testid="download-button"]');
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const downloaded = dl.path();
  // Close A's tab once a tenth of the file has arrived.
  await b.page.waitForFunction((n) => Number(document.querySelector('[data-testid="progress"]')?.dataset.received) >= n, FILE_SIZE / 10, { polling: 20 });
  await a.page.close();
  const status = b.page.locator('[data-testid="status"][data-state="waiting"]');
  await status.waitFor({ timeout: 60_000 });
  const shown = await status.textContent();
  assert.match(shown, /waiting for the sender to come back/i);
  const receivedWhenWaiting = Number(await b.page.locator('[data-testid="progress"]').getAttribute('data-received'));
  assert.ok(receivedWhenWaiting < FILE_SIZE, `B had ${receivedWhenWaiting} bytes when A closed`);
  await screenshot(b.page, 'receiver-waiting.png');

  // A comes back: a new tab of the same browser, the same file picked.
  const a2 = await open(a.ctx);
  await a2.page.goto(base);
  await a2.page.waitForSelector('#previous-list [data-testid="item"], #previous-list li');
  const link2 = await publishFile(a2.page, bigFile.path);
  assert.equal(link2, link, 'the re-picked file keeps its share link');

  const path = await downloaded;
  assert.equal((await stat(path)).size, FILE_SIZE);
  const got = await sha256File(path);
  assert.equal(got, bigFile.sha256, 'SHA-256 of the resumed download');
  await b.page.waitForSelector('[data-testid="status"][data-state="done"]');
  figure(`test 4: B showed "${shown.trim()}" with ${receivedWhenWaiting} of ${FILE_SIZE} bytes; after A re-picked the file the download completed, sha256 ${got} equal`);
  assertNoErrors('page A', a.errors);
  assertNoErrors('page A reopened', a2.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('5: pause holds B\'s download, resume completes it, stop sharing withdraws the item', { skip: !only.has('5') }, async () => {
  const small = await writeRandomFile(join(work, 'random-24MiB.bin'), 24 << 20);
  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, small.path);
  const card = a.page.locator('#item-list [data-testid="item"]').nth(0);
  await card.locator('[data-testid="pause-button"]').click();
  await card.locator('[data-field="state"][data-state="paused"]').waitFor();

  const b = await open();
  await b.page.goto(link);
  await b.page.waitForSelector('[data-testid="download-button"]');
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const downloaded = dl.path();
  await b.page.locator('[data-testid="status"][data-state="waiting"]').waitFor({ timeout: 60_000 });
  const held = Number(await b.page.locator('[data-testid="progress"]').getAttribute('data-received'));
  assert.equal(held, 0, 'bytes received while paused');

  await card.locator('[data-testid="pause-button"]').click();
  await card.locator('[data-field="state"][data-state="online"]').waitFor();
  const got = await sha256File(await downloaded);
  assert.equal(got, small.sha256, 'SHA-256 after resume');
  await b.page.waitForSelector('[data-testid="status"][data-state="done"]');

  await card.locator('[data-testid="remove-button"]').click();
  await card.waitFor({ state: 'detached' });
  const id = link.split('/').pop();
  let status = 0;
  for (let i = 0; i < 50 && status !== 404; i++) {
    status = (await fetch(`${base}/v1/items/${id}/meta`)).status;
    if (status !== 404) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(status, 404, 'the withdrawn item is gone');
  figure(`test 5: paused item held B at 0 bytes ("waiting"), resume completed it (sha256 equal), stop sharing made it 404`);
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('6: the library publishes plaintext with {encrypt: false}', { skip: !only.has('6') }, async () => {
  const size = (8 << 20) + 12345;
  const pattern = (/** @type {number} */ n) => Uint8Array.from({ length: n }, (_, j) => (j * 7 + (j >>> 13)) & 255);
  const want = createHash('sha256').update(pattern(size)).digest('hex');
  const a = await open();
  await a.page.goto(base);
  const { link, download } = await a.page.evaluate(async (n) => {
    const { Client } = await import('/web/meshup.js');
    const c = new Client();
    const data = Uint8Array.from({ length: n }, (_, j) => (j * 7 + (j >>> 13)) & 255);
    const it = await c.publish(new File([data], 'plain-pattern.bin', { type: 'application/octet-stream' }), { encrypt: false });
    /** @type {any} */ (window).plainClient = c;
    return { link: it.shareURL, download: it.downloadURL };
  }, size);
  assert.match(link, /^http:\/\/.+\/i\/[a-z2-7]{26}$/, 'a plaintext item\'s link has no key');
  const id = link.split('/').pop();
  const meta = await (await fetch(`${base}/v1/items/${id}/meta`)).json();
  assert.equal(meta.encrypted, false);
  assert.equal(meta.name, 'plain-pattern.bin');
  assert.equal(meta.size, size);

  const b = await open();
  await b.page.goto(link);
  const enc = b.page.locator('[data-testid="encryption"]');
  assert.equal(await enc.getAttribute('data-state'), 'plain');
  assert.equal((await enc.textContent()).trim(), 'not encrypted');
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const got = await sha256File(await dl.path());
  assert.equal(got, want, 'SHA-256 of the plaintext download');
  // And plain HTTP (curl) gets the same bytes.
  const direct = createHash('sha256').update(new Uint8Array(await (await fetch(download)).arrayBuffer())).digest('hex');
  assert.equal(direct, want, 'SHA-256 over plain HTTP');
  figure(`test 6: plaintext item of ${size} bytes ({encrypt: false}) downloaded intact by page and by plain HTTP`);
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('7: e2e.js passes the golden vectors in Chromium', { skip: !only.has('7') }, async () => {
  const vectors = JSON.parse(await readFile(opts.vectors, 'utf8'));
  const a = await open();
  await a.page.goto(base);
  const r = await a.page.evaluate(`(${checkVectors.toString()})(${JSON.stringify(vectors)}, '/web/e2e.js')`);
  assert.deepEqual(r.failures, [], 'golden vectors');
  assert.ok(r.checks >= 50, `only ${r.checks} checks`);
  figure(`test 7: ${r.checks} golden-vector checks pass in Chromium (${vectors.payloads.length} payloads, ${vectors.negative.length} tampered payloads, ${vectors.fragments.length} fragments)`);
  assertNoErrors('page A', a.errors);
  await a.ctx.close();
});

test('8: a wrong, damaged or missing key: a clear message and nothing downloaded', { skip: !only.has('8') }, async () => {
  const small = await writeRandomFile(join(work, 'secret-notes.bin'), 3 << 20);
  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, small.path);
  const [noKey, key] = link.split('#k=');
  const wrong = `${noKey}#k=${key.startsWith('A') ? 'B' : 'A'}${key.slice(1)}`;
  const cases = [
    { name: 'wrong key', url: wrong, want: /key in this link is wrong/i },
    { name: 'damaged key', url: `${noKey}#k=${key.slice(0, 20)}`, want: /key is damaged/i },
    { name: 'no key', url: noKey, want: /has no key/i },
  ];
  const b = await open();
  let downloads = 0;
  b.page.on('download', () => downloads++);
  const shown = [];
  for (const c of cases) {
    await b.page.goto('about:blank'); // links differing in the fragment only would not reload
    await b.page.goto(c.url);
    const status = b.page.locator('[data-testid="status"][data-state="failed"]');
    await status.waitFor();
    const text = (await status.textContent()).trim();
    assert.match(text, c.want, c.name);
    assert.equal(await b.page.locator('[data-testid="download-button"]').count(), 0, `${c.name}: no download button`);
    assert.equal(await b.page.locator('[data-testid="item-name"]').textContent(), '', `${c.name}: no name shown`);
    shown.push(`${c.name}: "${text}"`);
    if (c.name === 'wrong key') await screenshot(b.page, 'receiver-wrong-key.png');
  }
  // The worker refuses too, though it was never given a key.
  const id = noKey.split('/').pop();
  const res = await b.page.evaluate(async (i) => (await fetch(`/sw/plain/${i}`)).status, id);
  assert.ok(res === 403 || res === 404, `worker answered ${res} without a key`);
  assert.equal(downloads, 0, 'downloads started');
  figure(`test 8: ${shown.join('; ')}; nothing downloaded`);
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors.filter((e) => !/status of 40[34]/.test(e)));
  await a.ctx.close();
  await b.ctx.close();
});

test('9: interop: a file the browser encrypted decrypts in the Go client', { skip: !only.has('9') || !opts.harness }, async () => {
  const file = await writeRandomFile(join(work, 'interop.bin'), (5 << 20) + 777);
  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, file.path);
  const answer = await ask(`decrypt ${link}`);
  const [got, name] = answer.split(' ');
  assert.equal(got, file.sha256, `Go decrypted: ${answer}`);
  assert.equal(name, 'interop.bin', 'name Go decrypted from the sealed metadata');
  figure(`test 9: the Go client (client.DownloadTo) decrypted the browser's item (${(5 << 20) + 777} bytes, name ${name}), sha256 equal`);
  assertNoErrors('page A', a.errors);
  await a.ctx.close();
});

test('10: a relay flips a byte: the worker names the chunk, reads it through another relay, the file is intact', { skip: !only.has('10') || !opts.harness }, async () => {
  const file = await writeRandomFile(join(work, 'tampered.bin'), 24 << 20);
  const a = await open();
  await a.page.goto(base);
  const link = await publishFile(a.page, file.path);
  const id = link.split('/').pop().split('#')[0];
  const armed = await ask(`tamper ${id}`);
  assert.match(armed, /^armed/);

  const b = await open();
  await b.page.goto(link);
  await assertEncryptedPage(b.page, 'tampered.bin');
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const got = await sha256File(await dl.path());
  await b.page.waitForSelector('[data-testid="status"][data-state="done"]');
  const chunk = await integrityChunk(b.page);
  const flipped = await ask(`tampered ${id}`);
  assert.equal(got, file.sha256, 'SHA-256 after the retry');
  assert.notEqual(chunk, null, 'the worker reported an integrity error');
  figure(`test 10: relay flipped ${flipped}; the worker reported chunk ${chunk}, retried through another relay, sha256 equal`);
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('11: interop: a file a Go client encrypted decrypts on page B', { skip: !only.has('11') || !opts.harness }, async () => {
  const answer = await ask('publish');
  assert.doesNotMatch(answer, /^error/, `Go client publish: ${answer}`);
  const [link, want, name] = answer.split(' ');
  assert.match(link, /^http:\/\/.+\/i\/[a-z2-7]{26}#k=[A-Za-z0-9_-]{43}$/, 'the Go client\'s link carries its key');
  const id = link.split('/').pop().split('#')[0];
  const meta = await (await fetch(`${base}/v1/items/${id}/meta`)).json();
  assert.equal(meta.encrypted, true, 'the rendezvous says the item is encrypted');
  assert.equal(meta.name ?? '', '', 'the rendezvous does not know the name');

  const b = await open();
  await b.page.goto(link);
  await assertEncryptedPage(b.page, name);
  await b.page.waitForSelector('[data-testid="download-button"]');
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const path = await dl.path();
  const size = (await stat(path)).size;
  const got = await sha256File(path);
  await b.page.waitForSelector('[data-testid="status"][data-state="done"]');
  assert.equal(got, want, 'SHA-256 of the plaintext the Go client published');
  assert.equal(dl.suggestedFilename(), name, 'the download is saved under the decrypted name');
  assert.equal(await integrityChunk(b.page), null, 'integrity errors');
  figure(`test 11: page B decrypted the Go client's item (${size} bytes, name ${name}), sha256 equal`);
  assertNoErrors('page B', b.errors);
  await b.ctx.close();
});
