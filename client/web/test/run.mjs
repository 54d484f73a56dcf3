// Browser tests of the meshup web app, in Debian's headless Chromium driven
// by playwright-core. Started by cmd/internal/browser against a running mesh:
//
//	node run.mjs http://127.0.0.1:PORT [--only 1,3] [--screenshots DIR]
//
// 1. A publishes a 200 MiB generated file; B downloads it; SHA-256 equal.
// 2. A publishes a 20-minute ffmpeg video; B plays it and seeks to 75%:
//    playback resumes there, relays saw Range requests, far fewer bytes than
//    the file moved (under 30%).
// 3. Text pasted on A and a short message from A reach B; relay counters
//    show no relay carried them.
// 4. A closes its tab during B's download: B shows the waiting message; A
//    is reopened and the file re-picked; B's download completes intact.
// 5. A pauses an item: B's download waits; A resumes: it completes intact;
//    A stops sharing: the item is gone.
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
import { chromium } from 'playwright-core';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { only: { type: 'string' }, screenshots: { type: 'string' } },
});
const base = positionals[0];
if (!base) {
  console.error('usage: node run.mjs RENDEZVOUS_URL [--only 1,2] [--screenshots DIR]');
  process.exit(2);
}
const only = new Set((opts.only ?? '1,2,3,4,5').split(','));
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
  if (only.has('1') || only.has('4')) bigFile = await writeRandomFile(join(work, 'random-200MiB.bin'), FILE_SIZE);
  if (opts.screenshots) await mkdir(opts.screenshots, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

// --- helpers ---

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

/** A new browser context and page that record console errors. */
async function open(context) {
  const ctx = context ?? await browser.newContext({ acceptDownloads: true, viewport: { width: 900, height: 900 } });
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
  assert.match(link, /^http:\/\/.+\/i\/[a-z2-7]{26}$/);
  return link;
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
  figure(`test 1: 200 MiB in ${secs.toFixed(1)} s (${(FILE_SIZE / 1048576 / secs).toFixed(0)} MiB/s), sha256 ${got} equal`);
  await screenshot(a.page, 'sender.png');
  await screenshot(b.page, 'receiver-download.png');
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('2: a video plays on page B and seeks to 75% with Range requests', { skip: !only.has('2') }, async () => {
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
  const v = b.page.locator('[data-testid="preview-video"]');
  await v.waitFor();
  await b.page.waitForFunction(() => document.querySelector('video')?.readyState >= 1, null, { timeout: 30_000 });
  const duration = await v.evaluate((el) => el.duration);
  assert.ok(duration > 1190, `duration ${duration}`);
  await v.evaluate((el) => { el.muted = true; return el.play(); });
  await b.page.waitForFunction(() => document.querySelector('video').currentTime > 1, null, { timeout: 30_000 });

  const target = duration * 0.75;
  await v.evaluate((el, t) => new Promise((resolve) => {
    el.addEventListener('seeked', resolve, { once: true });
    el.currentTime = t;
  }), target);
  // Playback resumes at the new position: time moves on from there.
  await b.page.waitForFunction((t) => {
    const el = document.querySelector('video');
    return !el.paused && el.currentTime > t + 1;
  }, target, { timeout: 30_000 });
  const position = await v.evaluate((el) => el.currentTime);
  await v.evaluate((el) => el.pause());
  await screenshot(b.page, 'receiver-video.png');
  const moved = diff(before, await relayCounters());

  figure(`test 2: video ${size} bytes, ${duration.toFixed(1)} s; relays served ${moved.bytes_out} bytes (${(100 * moved.bytes_out / size).toFixed(1)}%), ` +
    `pushed ${moved.bytes_in}, ${moved.requests} requests of which ${moved.range_requests} with Range; ` +
    `seek to ${target.toFixed(2)} s, playing at ${position.toFixed(2)} s`);
  assert.ok(position >= target && position < target + 10, `position ${position}, seek target ${target}`);
  assert.ok(moved.range_requests >= 1, `relays saw ${moved.range_requests} Range requests`);
  assert.ok(moved.bytes_out < size * 0.3, `relays served ${moved.bytes_out} of ${size} bytes`);
  assertNoErrors('page A', a.errors);
  assertNoErrors('page B', b.errors);
  await a.ctx.close();
  await b.ctx.close();
});

test('3: pasted text and a short message reach page B through the rendezvous only', { skip: !only.has('3') }, async () => {
  const before = await relayCounters();
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
