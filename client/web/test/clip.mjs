// Browser test of clips (issue 12) in headless Chromium. Started by
// cmd/internal/browser (TestBrowserClip), which runs a rendezvous and two
// relays:
//
//	node clip.mjs RENDEZVOUS_URL
//
// Page A, the web app's sender page, is pasted an image and a text longer
// than a message: each becomes a clip, end-to-end encrypted, that the
// relays store whole (the item's meta says so). Then A's tab is closed,
// and the clips are fetched (ciphertext, with an Expires header) and
// decrypted here with the share link's key: they are intact. It prints
// "clip: ok" when all holds.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import * as e2e from '../e2e.js';

const [rv] = process.argv.slice(2);
if (!rv) {
  console.error('usage: node clip.mjs RENDEZVOUS_URL');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const ctx = await browser.newContext();
  ctx.setDefaultTimeout(120_000); // Playwright's 30 s is short on a loaded machine
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(rv + '/');
  await page.waitForSelector('[data-testid="connection"][data-state="online"]');

  const image = randomBytes(300 * 1024 + 7);
  const text = 'pasted clip ✓ '.repeat(2000); // over the 16 KiB of a message
  await page.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'shot.png', { type: 'image/png' }));
    document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  }, [...image]);
  await page.evaluate((t) => {
    const dt = new DataTransfer();
    dt.setData('text/plain', t);
    document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
  }, text);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="item"][data-kind="clip"]').length === 2);
  const cards = page.locator('[data-testid="item"][data-kind="clip"]');
  const links = [];
  for (let i = 0; i < 2; i++) {
    links.push(await cards.nth(i).locator('[data-testid="share-link"]').inputValue());
  }
  // The page says a clip outlives the tab only once the rendezvous says a
  // relay holds it whole with its sealed metadata (waitClipStored).
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="item"][data-kind="clip"]')].every((c) => /** @type {HTMLElement} */ (c).dataset.stored === 'true'));
  for (let i = 0; i < 2; i++) {
    const meta = await cards.nth(i).locator('[data-field="meta"]').textContent();
    assert.match(meta, /clip: kept by .* until .*, readable after this tab closes/, `card ${i} says how long the clip is kept`);
  }

  // Stored: every copy pushed, and held by both relays.
  const ids = links.map((l) => new URL(l).pathname.split('/').pop());
  for (const id of ids) {
    for (let i = 0; ; i++) {
      const m = await (await fetch(`${rv}/v1/items/${id}/meta`)).json();
      if (m.holders === 2 && !m.storing) {
        assert.ok(m.sealed_holders >= 1, `clip ${id}: a holder keeps the sealed metadata: ${JSON.stringify(m)}`);
        break;
      }
      assert.ok(i < 600, `clip ${id} stored on 2 relays: ${JSON.stringify(m)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  assert.deepEqual(errors, [], 'page errors');
  await ctx.close(); // the sender's tab is gone

  const want = new Map([['image/png', image], ['text/plain; charset=utf-8', Buffer.from(text)]]);
  const seen = new Set();
  for (const [i, link] of links.entries()) {
    const key = e2e.parseFragment(new URL(link).hash);
    const resp = await fetch(`${rv}/v1/items/${ids[i]}`);
    assert.equal(resp.status, 200, `GET clip ${ids[i]} after the tab closed`);
    assert.ok(resp.headers.get('expires'), 'an Expires header');
    const sealed = new Uint8Array(await resp.arrayBuffer());
    const keys = await e2e.deriveKeys(key, ids[i]);
    const plain = await e2e.openAll(keys.payload, sealed);
    const m = await (await fetch(`${rv}/v1/items/${ids[i]}/meta`)).json();
    const meta = await e2e.openMeta(keys.metadata, m.meta);
    assert.ok(want.has(meta.type), `clip type ${meta.type}`);
    assert.ok(Buffer.from(plain).equals(want.get(meta.type)), `clip ${meta.type} intact`);
    seen.add(meta.type);
  }
  assert.equal(seen.size, 2, 'both clips read');
  console.log('clip: ok');
} finally {
  await browser.close();
}
