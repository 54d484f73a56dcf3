// Browser test of sealed live channels (format live1, issue 12) in headless
// Chromium with a fake camera. Started by cmd/internal/browser
// (TestBrowserLive), which runs a rendezvous and two relays that are both
// volunteers, so that sealing is what lets them carry the channels:
//
//	node live.mjs RENDEZVOUS_URL [--vectors proto/testdata/live1-vectors.json] [--screenshots DIR]
//
//  1. File: page A streams a file ("Stream a file live"); pages B and C
//     (each its own browser profile) open the link, get the channel head
//     and press Save before A presses Start; A streams at its pace and
//     ends; B and C say "The live channel ended." and saved exactly the
//     file's bytes (SHA-256).
//  2. Camera: A goes live with the (fake) camera; B opens the link and its
//     <video> plays (currentTime advances); C opens it later, joins
//     mid-stream at a sync record (a WebM Cluster) and plays too; a page
//     with a wrong key says so; A stops; B and C end cleanly.
//     2b. With ffmpeg: A streams a 4 s WebM file at its playback speed
//     ("auto"), cut at its Clusters; W plays it from its first Cluster.
//  3. A streams a file slowly to E and its tab closes mid-stream: E says
//     the channel ended without its end mark.
//  4. With --harness (the Go test), a Go reader (proto.LiveReader) reads the
//     file of 1. too, and page F saves a channel a Go publisher
//     (proto.LiveWriter over PUT) streams: both SHA-256 equal.
//  5. live.js passes the live1 golden vectors in Chromium (--vectors).
//  6. Ticks: a quiet channel goLive publishes (a source that sends
//     nothing, tick 300 ms) carries ticks through the relays: a page's
//     readLive gets them as empty data records around the data, and the
//     channel ends cleanly.
//
// It prints "live: ok" when all holds, and "figure:" lines.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { checkLiveVectors } from './livevectors.mjs';

const { positionals, values: opts } = parseArgs({ allowPositionals: true, options: { vectors: { type: 'string' }, screenshots: { type: 'string' }, harness: { type: 'boolean' } } });
const [rv] = positionals;
if (!rv) {
  console.error('usage: node live.mjs RENDEZVOUS_URL [--vectors PATH]');
  process.exit(2);
}
const FILE_SIZE = (3 << 20) + 12345;
const RATE = '4194304'; // the pace option A picks: 4 MiB/s

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'],
});
/** @type {string[]} */
const errors = [];
// Playwright waits at most 30 s by default; on a loaded machine (CI runs
// the whole suite on two cores) that is short. A wait that fails still
// fails, later.
const WAIT_MS = 120_000;

/** @param {string} who */
async function newPage(who) {
  const ctx = await browser.newContext({ acceptDownloads: true, permissions: ['camera', 'microphone'] });
  ctx.setDefaultTimeout(WAIT_MS);
  const page = await ctx.newPage();
  page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') console.log(`${who} console: ${m.text()}`); });
  return page;
}
if (opts.screenshots) await mkdir(opts.screenshots, { recursive: true });
// With --harness, the Go test answers requests on stdin: it reads a
// channel with proto.LiveReader and publishes one with proto.LiveWriter.
const rl = opts.harness ? createInterface({ input: process.stdin }) : null;
const answers = rl ? rl[Symbol.asyncIterator]() : null;
/** @param {string} req */
async function ask(req) {
  console.log(`harness: ${req}`);
  const { value } = await /** @type {AsyncIterator<string>} */ (answers).next();
  assert.ok(!String(value).startsWith('error'), `harness ${req}: ${value}`);
  return String(value);
}
/** @param {import('playwright-core').Page} page @param {string} name */
async function screenshot(page, name) {
  if (opts.screenshots) await page.screenshot({ path: join(opts.screenshots, name), fullPage: true });
}
const sha = (/** @type {Buffer|Uint8Array} */ b) => createHash('sha256').update(b).digest('hex');
const status = async (/** @type {import('playwright-core').Page} */ p) => p.locator('[data-testid="status"]').evaluate((e) => ({ reason: e.dataset.reason, text: e.textContent }));

try {
  // --- 1. a file, from its first byte ---
  const a = await newPage('A');
  await a.goto(rv + '/');
  const file = randomBytes(FILE_SIZE);
  await a.selectOption('[data-testid="live-rate"]', RATE);
  await a.setInputFiles('[data-testid="live-file-input"]', { name: 'live-test.bin', mimeType: 'application/octet-stream', buffer: file });
  const card = a.locator('[data-testid="live-channel"]').first();
  await card.locator('[data-testid="live-state"][data-live="live"]').waitFor();
  const link = await card.locator('[data-testid="live-link"]').inputValue();
  assert.match(link, /\/l\/[a-z2-7]{26}#k=[A-Za-z0-9_-]{43}$/, 'the channel link');

  const viewers = [];
  for (const who of ['B', 'C']) {
    const p = await newPage(who);
    await p.goto(link);
    await p.locator('[data-testid="live-state"][data-live="live"]').waitFor(); // the head came: subscribed
    assert.equal(await p.locator('[data-testid="live-name"]').textContent(), 'live-test.bin', `${who}: name from the sealed head`);
    const dl = p.waitForEvent('download');
    await p.click('[data-testid="save-button"]');
    viewers.push({ who, p, dl: await dl });
  }
  if (answers) assert.equal(await ask(`live-read ${link}`), 'subscribed', 'a Go reader (proto.LiveReader) subscribed too');
  const t0 = performance.now();
  await card.locator('[data-testid="live-start"]').click();
  await card.locator('[data-testid="live-state"][data-live="ended"]').waitFor({ timeout: WAIT_MS });
  const secs = (performance.now() - t0) / 1000;
  for (const { who, p, dl } of viewers) {
    await p.locator('[data-testid="status"][data-state="done"]').waitFor({ timeout: WAIT_MS });
    assert.equal((await status(p)).text, 'The live channel ended.', `${who}: clean end`);
    if (who === 'B') await screenshot(p, 'receiver-live-saved.png');
    assert.equal(await dl.failure(), null, `${who}: the download did not fail`);
    const got = await readFile(await dl.path());
    assert.equal(got.length, file.length, `${who}: saved ${got.length} bytes, want ${file.length}`);
    assert.equal(sha(got), sha(file), `${who}: SHA-256 of the saved file`);
    assert.equal(await p.locator('[data-testid="save-button"]').getAttribute('data-via'), 'worker', `${who}: saved through the Service Worker`);
    await p.context().close();
  }
  if (answers) {
    const [sum, n] = (await ask('live-sum')).split(' ');
    assert.equal(Number(n), file.length, 'the Go reader got the whole file');
    assert.equal(sum, sha(file), 'SHA-256 of what the Go reader got');
  }
  const sentViewers = await card.locator('[data-testid="live-viewers"]').getAttribute('data-viewers');
  console.log(`figure: live file: ${FILE_SIZE} bytes at ${Number(RATE) >> 10} KiB/s to 2 readers in ${secs.toFixed(1)} s (${(FILE_SIZE / secs / 1048576).toFixed(2)} MiB/s), both SHA-256 equal; viewers shown by A: ${sentViewers}`);

  // --- 2. the camera, with a mid-stream join ---
  await a.click('[data-testid="live-camera"]');
  await a.waitForFunction(() => document.querySelectorAll('[data-testid="live-channel"]').length === 2);
  const cam = a.locator('[data-testid="live-channel"]').first();
  // The link shows once the relay took the channel (the camera may be
  // streaming by then).
  await cam.locator('[data-testid="live-state"][data-live="live"], [data-testid="live-state"][data-live="streaming"]').waitFor();
  const camLink = await cam.locator('[data-testid="live-link"]').inputValue();
  assert.notEqual(camLink, link);
  const b = await newPage('B');
  const tb = performance.now();
  await b.goto(camLink);
  const playing = (/** @type {import('playwright-core').Page} */ p, /** @type {number} */ t) => p.waitForFunction((t) => {
    const v = /** @type {HTMLVideoElement} */ (document.querySelector('[data-testid="live-video"]'));
    return v && v.currentTime > t;
  }, t, { timeout: WAIT_MS }).catch(async (err) => {
    const why = await p.evaluate(() => {
      const v = /** @type {HTMLVideoElement} */ (document.querySelector('[data-testid="live-video"]'));
      const b = v.buffered.length ? `${v.buffered.start(0)}-${v.buffered.end(v.buffered.length - 1)}` : 'nothing';
      return `status "${document.querySelector('[data-testid="status"]')?.textContent}", currentTime ${v.currentTime}, buffered ${b}, paused ${v.paused}, error ${v.error?.message}, readyState ${v.readyState}`;
    });
    throw new Error(`${err.message}: ${why}`);
  });
  await playing(b, 0.5);
  const firstFrame = (performance.now() - tb) / 1000;
  await playing(b, 1.5); // it goes on playing
  const c = await newPage('C');
  await c.goto(camLink);
  await playing(c, 1);
  // Transport latency: from A handing a record to its WebSocket to B
  // having opened it (both pages and this process share the clock).
  const lat = [];
  for (let i = 0; i < 8; i++) {
    const sent = await cam.evaluate((e) => ({ seq: Number(e.dataset.seq), at: Number(e.dataset.sentAt) }));
    await b.waitForFunction((seq) => Number(document.getElementById('channel')?.dataset.lastSeq) >= seq, sent.seq, { polling: 5 });
    const got = await b.locator('#channel').evaluate((e) => ({ seq: Number(e.dataset.lastSeq), at: Number(e.dataset.lastAt) }));
    if (got.seq === sent.seq) lat.push(got.at - sent.at);
    await b.waitForTimeout(100);
  }
  lat.sort((x, y) => x - y);
  const behind = await c.locator('[data-testid="live-video"]').evaluate((v) => v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : -1);
  await screenshot(a, 'sender-live.png');
  await screenshot(c, 'receiver-live-video.png');
  const joined = await c.locator('#channel').evaluate((e) => ({ seq: Number(e.dataset.firstSeq), kind: e.dataset.firstKind, type: e.dataset.type }));
  assert.equal(joined.kind, 'sync', 'C joined at a sync record');
  assert.ok(joined.seq > 0, `C joined mid-stream (first record ${joined.seq})`);
  assert.match(joined.type, /^video\/webm/, 'the head says WebM');
  const bt = await b.locator('#channel').evaluate((e) => ({ first: Number(e.dataset.firstSeq), head: Number(e.dataset.headMs), data: Number(e.dataset.firstDataMs), playing: Number(e.dataset.playingMs) }));
  const ct = await c.locator('#channel').evaluate((e) => ({ head: Number(e.dataset.headMs), data: Number(e.dataset.firstDataMs), playing: Number(e.dataset.playingMs) }));

  // A page with another key learns nothing and says the key is wrong.
  const d = await newPage('D');
  await d.goto(camLink.replace(/#k=.*/, '#k=' + Buffer.from(randomBytes(32)).toString('base64url')));
  await d.locator('[data-testid="status"][data-state="failed"]').waitFor();
  assert.equal((await status(d)).reason, 'key', 'wrong key worded as such');
  await screenshot(d, 'receiver-live-wrong-key.png');
  await d.context().close();

  const bytesBefore = Number(await b.locator('[data-testid="received"]').getAttribute('data-bytes'));
  await cam.locator('[data-testid="live-stop"]').click();
  await cam.locator('[data-testid="live-state"][data-live="ended"]').waitFor({ timeout: WAIT_MS });
  for (const [who, p] of [['B', b], ['C', c]]) {
    await p.locator('[data-testid="status"][data-state="done"]').waitFor({ timeout: WAIT_MS });
    assert.equal((await status(p)).text, 'The live channel ended.', `${who}: clean end`);
    await p.context().close();
  }
  console.log(`figure: live camera: B's page (ms since its navigation): head ${bt.head}, first data ${bt.data} (record ${bt.first}), playing ${bt.playing}, currentTime > 0.5 s after ${firstFrame.toFixed(1)} s; ` +
    `C joined mid-stream at sync record ${joined.seq}: head ${ct.head}, first data ${ct.data}, playing ${ct.playing}; B received ${bytesBefore} bytes before the stop`);
  console.log(`figure: live latency: A's WebSocket send to B's decrypted record: ${lat.join(', ')} ms (${lat.length} samples); C's player ${behind.toFixed(2)} s behind its newest media`);

  // --- 2b. a WebM file, at its playback speed, played by a viewer ---
  let webm = null;
  try {
    // To a file, not a pipe: ffmpeg then writes the duration, which the
    // page's "auto" pace reads.
    const path = join(await mkdtemp(join(tmpdir(), 'meshup-live-')), 'clip.webm');
    execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=15', '-t', '4', '-c:v', 'libvpx', '-b:v', '300k', '-g', '15', '-y', path]);
    webm = await readFile(path);
    await rm(dirname(path), { recursive: true });
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  if (webm) {
    await a.selectOption('[data-testid="live-rate"]', 'auto');
    await a.setInputFiles('[data-testid="live-file-input"]', { name: 'clip.webm', mimeType: 'video/webm', buffer: webm });
    await a.waitForFunction(() => document.querySelectorAll('[data-testid="live-channel"]').length === 3);
    const wcard = a.locator('[data-testid="live-channel"]').first();
    await wcard.locator('[data-testid="live-state"][data-live="live"]').waitFor();
    const wlink = await wcard.locator('[data-testid="live-link"]').inputValue();
    const meta = await wcard.locator('[data-field="meta"]').textContent();
    const w = await newPage('W');
    await w.goto(wlink);
    await w.locator('[data-testid="live-state"][data-live="live"]').waitFor();
    const tw = performance.now();
    await wcard.locator('[data-testid="live-start"]').click();
    await playing(w, 1);
    await wcard.locator('[data-testid="live-state"][data-live="ended"]').waitFor({ timeout: WAIT_MS });
    const streamed = (performance.now() - tw) / 1000;
    await w.locator('[data-testid="status"][data-state="done"]').waitFor({ timeout: WAIT_MS });
    const wt = await w.locator('#channel').evaluate((e) => ({ first: Number(e.dataset.firstSeq), kind: e.dataset.firstKind }));
    assert.deepEqual(wt, { first: 0, kind: 'sync' }, 'W got the WebM file from its first Cluster, a sync record');
    assert.ok(streamed > 2, `a 4 s WebM streamed at its playback speed took ${streamed.toFixed(1)} s`);
    await w.context().close();
    console.log(`figure: live WebM file: ${webm.length} bytes of a 4 s clip (${meta}) streamed in ${streamed.toFixed(1)} s, played by W, clean end`);
  }

  // --- 3. an end without the end mark: A's tab goes away mid-stream ---
  await a.selectOption('[data-testid="live-rate"]', '262144');
  await a.setInputFiles('[data-testid="live-file-input"]', { name: 'cut.bin', mimeType: 'application/octet-stream', buffer: randomBytes(4 << 20) });
  await a.waitForFunction((n) => document.querySelectorAll('[data-testid="live-channel"]').length === n, webm ? 4 : 3);
  const cut = a.locator('[data-testid="live-channel"]').first();
  await cut.locator('[data-testid="live-state"][data-live="live"]').waitFor();
  const cutLink = await cut.locator('[data-testid="live-link"]').inputValue();
  const e = await newPage('E');
  await e.goto(cutLink);
  await e.locator('[data-testid="live-state"][data-live="live"]').waitFor();
  await cut.locator('[data-testid="live-start"]').click();
  await e.waitForFunction(() => Number(document.querySelector('[data-testid="received"]')?.getAttribute('data-bytes')) > 0);
  let vectors = null;
  if (opts.vectors) {
    // (checked in A's page, before it goes)
    const v = JSON.parse(await readFile(opts.vectors, 'utf8'));
    vectors = await a.evaluate(`(${checkLiveVectors.toString()})(${JSON.stringify(v)}, '/web/live.js')`);
  }
  await a.context().close();
  await e.locator('[data-testid="status"][data-state="failed"]').waitFor({ timeout: WAIT_MS });
  const cutStatus = await status(e);
  assert.equal(cutStatus.reason, 'cut', `E: an end without the end mark, worded as such: ${cutStatus.text}`);
  await screenshot(e, 'receiver-live-cut.png');
  const cutBytes = Number(await e.locator('[data-testid="received"]').getAttribute('data-bytes'));
  assert.ok(cutBytes < 4 << 20, `E got ${cutBytes} bytes, less than the file`);
  console.log(`figure: live cut: A's tab closed after E received ${cutBytes} bytes; E says: ${cutStatus.text}`);

  // --- 4. a channel published from Go (proto.LiveWriter), read by a page ---
  if (answers) {
    const [goLink, goSum] = (await ask('live-publish')).split(' ');
    const f = await newPage('F');
    await f.goto(goLink);
    await f.locator('[data-testid="live-state"][data-live="live"]').waitFor();
    assert.equal(await f.locator('[data-testid="live-name"]').textContent(), 'from-go.bin', 'F: name from the Go head');
    const dl = f.waitForEvent('download');
    await f.click('[data-testid="save-button"]');
    const download = await dl;
    assert.equal(await ask('live-publish-start'), 'started');
    await f.locator('[data-testid="status"][data-state="done"]').waitFor({ timeout: WAIT_MS });
    const got = await readFile(await download.path());
    assert.equal(sha(got), goSum, `F: SHA-256 of the Go channel (${got.length} bytes)`);
    assert.equal(await ask('live-published'), 'ok', 'the Go publisher ended cleanly');
    await f.context().close();
    console.log(`figure: live interop: the Go reader got the browser's file (SHA-256 equal), page F saved the Go publisher's ${got.length} bytes (SHA-256 equal)`);
  }

  // --- 6. ticks keep a quiet channel fresh ---
  {
    const tp = await newPage('T');
    await tp.goto(rv + '/');
    const r = await tp.evaluate(async () => {
      const live = await import('/web/live.js');
      /** @type {ReadableStreamDefaultController<Uint8Array>} */
      let src;
      const ch = await live.goLive({ source: new ReadableStream({ start(c) { src = c; } }), type: 'text/plain', tick: 300 });
      let sentTicks = 0;
      ch.addEventListener('record', (/** @type {any} */ e) => { if (e.detail.tick) sentTicks++; });
      const rd = await live.readLive(ch.link);
      const noTicks = setTimeout(() => rd.cancel(), 30_000); // ticks that never come fail the read, not hang it
      const got = [];
      let ending = false;
      for await (const rec of rd.records) {
        got.push({ kind: rec.kind, size: rec.kind === 'head' ? -1 : rec.data.length, lag: Date.now() - rec.time, text: rec.kind === 'head' ? '' : new TextDecoder().decode(rec.data) });
        const ticks = got.filter((x) => x.kind === 'data' && x.size === 0).length;
        if (ticks === 3 && !got.some((x) => x.text)) src.enqueue(new TextEncoder().encode('between ticks;'));
        if (got.some((x) => x.text) && ticks === 5 && !ending) {
          ending = true;
          src.close(); // the source ends: the last record follows
        }
      }
      clearTimeout(noTicks);
      await ch.done;
      return { got, sentTicks, state: ch.state };
    });
    const ticks = r.got.filter((x) => x.kind === 'data' && x.size === 0);
    assert.equal(r.state, 'ended', 'T: the quiet channel ended cleanly');
    assert.ok(ticks.length >= 5, `T: ${ticks.length} ticks read, want >= 5`);
    assert.ok(r.sentTicks >= ticks.length, `T: ${r.sentTicks} ticks sent, ${ticks.length} read`);
    assert.equal(r.got.map((x) => x.text).join(''), 'between ticks;', 'T: the data between the ticks');
    assert.equal(r.got.at(-1)?.kind, 'last', 'T: ends with the last record');
    const maxLag = Math.max(...ticks.map((x) => x.lag));
    await tp.context().close();
    console.log(`figure: live ticks: a quiet channel (tick 300 ms) gave its reader ${ticks.length} ticks through the relays, each read at most ${maxLag} ms after it was stamped`);
  }

  // --- 5. golden vectors in Chromium ---
  if (vectors) {
    const r = vectors;
    assert.deepEqual(r.failures, [], 'live1 golden vectors in Chromium');
    console.log(`figure: live1: ${r.checks} golden-vector checks pass in Chromium`);
  }
  assert.deepEqual(errors, [], 'page errors');
  console.log('live: ok');
} finally {
  await browser.close();
  rl?.close(); // stdin stays open while the Go side waits for our end
  process.stdin.destroy();
}
