// Browser test of a download whose exit relay dies (issue 10), started by
// cmd/internal/browser (TestBrowserExitRelayFails), which runs the mesh,
// publishes the item and kills the exit relay once it has served some
// bytes:
//
//	node exitfail.mjs worker|memory SHARE_LINK SHA256 SIZE
//
// Page B opens the share link and downloads: through the Service Worker
// (mode worker), or with Service Workers blocked, into memory (mode
// memory: the item must be plaintext and at most 64 MiB).
// The download must complete intact (SHA-256), end in state done with no
// console error, and the page must have shown a pause ("resuming"), whose
// message names the relay the Go side killed: it asks for its id on
// stdout ("harness: killed") and reads it from stdin. It prints
// "exitfail: ok" when all holds.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [mode, link, want, sizeArg] = process.argv.slice(2);
if (!['worker', 'memory'].includes(mode) || !link || !want || !sizeArg) {
  console.error('usage: node exitfail.mjs worker|memory SHARE_LINK SHA256 SIZE');
  process.exit(2);
}
const size = Number(sizeArg);

/** SHA-256 of a file, streamed. @param {string} path */
async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
/** @param {string} request */
async function ask(request) {
  console.log(`harness: ${request}`);
  const { value, done } = await lines.next();
  if (done) throw new Error(`harness gave no answer to ${request}`);
  return value;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const ctx = await browser.newContext({ acceptDownloads: true, serviceWorkers: mode === 'memory' ? 'block' : 'allow' });
  ctx.setDefaultTimeout(120_000); // Playwright's 30 s is short on a loaded machine
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  /** @type {string[]} every state the page shows, in order */
  const states = [];
  await page.exposeFunction('noteState', (s) => states.push(s));
  await page.addInitScript(() => {
    new MutationObserver(() => {
      const s = document.querySelector('[data-testid="status"]');
      if (s && s.dataset.state !== window.lastState) {
        window.lastState = s.dataset.state;
        window.noteState(s.dataset.state);
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });

  await page.goto(link);
  await page.waitForSelector('[data-testid="download-button"]');
  const t0 = performance.now();
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="download-button"]')]);
  const path = await dl.path();
  const secs = (performance.now() - t0) / 1000;
  assert.equal(await dl.failure(), null, 'the download failed');
  const got = await sha256File(path);
  assert.equal(got, want, 'SHA-256 of the download');
  await page.waitForSelector('[data-testid="status"][data-state="done"]');
  const status = page.locator('[data-testid="status"]');
  const resumed = Number(await status.getAttribute('data-resumed') ?? 0);
  const message = await status.getAttribute('data-resume-message') ?? '';
  const killed = await ask('killed');
  console.log(`figure: ${mode}: exit relay killed mid-download; ${size} bytes in ${secs.toFixed(1)} s, resumed ${resumed} time(s): ${message}; states ${states.join(' > ')}`);
  assert.ok(resumed >= 1, 'the page showed no resume');
  assert.ok(message.includes(killed), `the resume message does not name the killed relay ${killed}: ${message}`);
  assert.ok(!states.includes('failed'), `the page showed a failure: ${states.join(' > ')}`);
  // Chromium logs the page's own fetch of the dead exit (in memory mode)
  // as a failed resource: that is the failure under test, not the page's.
  const own = errors.filter((e) => !/^console: Failed to load resource: net::ERR_[A-Z_]+ \(http:\/\/[^)]*\/v1\/items\/[a-z2-7]{26}[?)]/.test(e));
  assert.deepEqual(own, [], 'console errors or uncaught exceptions');
  console.log('exitfail: ok');
} finally {
  input.close();
  process.stdin.destroy();
  await browser.close();
}
