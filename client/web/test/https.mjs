// Browser test of the web app over https (issue 13), started by
// cmd/internal/browser (TestBrowserHTTPS), which serves the rendezvous on
// https://test.meshup.test:PORT with a certificate of its own and relays
// that have http URLs only:
//
//	node https.mjs BASE SPKI_SHA256_BASE64 SIZE
//
// Chromium resolves test.meshup.test to 127.0.0.1 (--host-resolver-rules)
// and trusts exactly the server's key (--ignore-certificate-errors-spki-
// list), so the page is a secure context off localhost. Page A publishes
// a random file; page B opens the share link and downloads it through the
// Service Worker. The file must arrive intact (SHA-256), and no request or
// WebSocket of either page or the worker may use http: or ws: (an https
// page cannot reach an http relay: the rendezvous hands out its tunnel).
// It prints "https: ok" when all holds.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, spki, sizeArg] = process.argv.slice(2);
if (!base?.startsWith('https://') || !spki || !sizeArg) {
  console.error('usage: node https.mjs https://HOST:PORT SPKI_SHA256_BASE64 SIZE');
  process.exit(2);
}
const size = Number(sizeArg);
const host = new URL(base).hostname;

/** SHA-256 of a file, streamed. @param {string} path */
async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}

const work = await mkdtemp(join(tmpdir(), 'meshup-https-'));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--host-resolver-rules=MAP ${host} 127.0.0.1`,
    `--ignore-certificate-errors-spki-list=${spki}`],
});
try {
  const data = randomBytes(size);
  const file = join(work, 'https-test.bin');
  await writeFile(file, data);
  const want = createHash('sha256').update(data).digest('hex');

  /** every URL requested, by pages and workers, and every WebSocket */
  const urls = [];
  const errors = [];
  async function open() {
    const ctx = await browser.newContext({ acceptDownloads: true });
    ctx.on('request', (r) => urls.push(r.url()));
    ctx.setDefaultTimeout(120_000); // Playwright's 30 s is short on a loaded machine
    const page = await ctx.newPage();
    page.on('websocket', (ws) => urls.push(ws.url()));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    return { ctx, page };
  }

  const a = await open();
  await a.page.goto(base);
  assert.equal(await a.page.evaluate(() => window.isSecureContext), true, 'page A is a secure context');
  await a.page.waitForSelector('[data-testid="connection"][data-state="online"]');
  await a.page.setInputFiles('[data-testid="file-input"]', file);
  await a.page.waitForSelector('#item-list [data-testid="item"]');
  const link = await a.page.locator('#item-list [data-testid="item"]').nth(0).locator('[data-testid="share-link"]').inputValue();
  assert.ok(link.startsWith(`${base}/i/`), `share link ${link} on ${base}`);

  const b = await open();
  await b.page.goto(link);
  await b.page.waitForSelector('[data-testid="download-button"]');
  const t0 = performance.now();
  const [dl] = await Promise.all([b.page.waitForEvent('download'), b.page.click('[data-testid="download-button"]')]);
  const path = await dl.path();
  const secs = (performance.now() - t0) / 1000;
  assert.equal(await dl.failure(), null, 'the download failed');
  assert.equal(await sha256File(path), want, 'SHA-256 of the download');
  await b.page.waitForSelector('[data-testid="status"][data-state="done"]');
  const worker = await b.page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).length);
  assert.ok(worker > 0, 'page B has no Service Worker');

  const insecure = urls.filter((u) => /^(http|ws):/.test(u));
  const pushes = urls.filter((u) => u.startsWith('wss:') && u.includes('/v1/push'));
  console.log(`figure: https: ${size} bytes published on ${base} and downloaded through the Service Worker in ${secs.toFixed(1)} s; ${urls.length} requests, ${pushes.length} pushes over wss, ${insecure.length} over http or ws`);
  assert.deepEqual(insecure, [], 'requests over http: or ws: from an https page');
  assert.ok(pushes.length > 0, 'page A pushed over no wss:// URL');
  assert.deepEqual(errors, [], 'console errors or uncaught exceptions');
  console.log('https: ok');
} finally {
  await browser.close();
  await rm(work, { recursive: true, force: true });
}
