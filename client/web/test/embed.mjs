// Browser test of the library embedded in another site (issue 13), started
// by cmd/internal/browser (TestBrowserEmbed), which runs a mesh and a
// second HTTP server on another port serving the page below:
//
//	node embed.mjs PAGE_URL
//
// The page, on the other origin, imports the library from the rendezvous
// with import() at its versioned path /web/v1/meshup.js, publishes a
// plaintext item and fetches it back with fetch(), across origins: the
// rendezvous's redirect, the relay's bytes (also a Range request, reading
// Content-Range and Meshup-Relay), the item's /meta and /v1/info. The
// bytes must be equal. Prints "embed: ok ID SHA256" and keeps the page
// (the publisher) open until a line arrives on stdin, so that the Go side
// can download the item too.

import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [pageURL] = process.argv.slice(2);
if (!pageURL) {
  console.error('usage: node embed.mjs PAGE_URL');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url})`);
    else console.log(`page: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  await page.goto(pageURL);
  const handle = await page.waitForFunction(() => window.result, null, { timeout: 120_000 });
  const r = await handle.jsonValue();
  if (r.error) throw new Error(`page: ${r.error}`);
  assert.notEqual(new URL(r.libraryURL).origin, new URL(pageURL).origin, 'the library came from another origin');
  assert.match(r.libraryURL, /\/web\/v1\/meshup\.js$/);
  assert.equal(r.equal, true, 'the bytes fetched back equal those published');
  assert.equal(r.size, r.published);
  assert.equal(r.status, 200);
  assert.ok(r.relay, 'Meshup-Relay readable across origins');
  assert.ok(r.etag, 'ETag readable across origins');
  assert.equal(r.rangeStatus, 206);
  assert.equal(r.contentRange, `bytes 10-19/${r.published}`);
  assert.equal(r.rangeEqual, true, 'the range bytes');
  assert.equal(r.metaSize, r.published);
  assert.equal(r.infoVersion, 1);
  assert.deepEqual(errors, [], 'no console error');
  console.log(`embed: ok ${r.id} ${r.sha256}`);
  // Keep the publisher online until the Go side is done.
  const input = createInterface({ input: process.stdin });
  await input[Symbol.asyncIterator]().next();
} finally {
  await browser.close();
}
