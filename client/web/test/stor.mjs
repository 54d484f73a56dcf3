// Browser test of the STOR/DATA upload protocol over WebSocket (issue 11,
// protocol 1), as WebSocketFileTransfer speaks it, in headless Chromium.
// Started by cmd/internal/browser (TestBrowserStor), which runs a
// rendezvous with an auth webhook that accepts the login alice only, and
// a relay whose STOR blocks are limited to 256 KiB:
//
//	node stor.mjs RENDEZVOUS_URL RELAY_URL
//
// The page (on the rendezvous's origin, which relays accept) uploads with
// base64 text frames (no type, as older clients) and with binary frames,
// each while a fetch of the item's download URL streams it, and compares
// SHA-256; then AUTH accepted and refused, a malformed STOR, a block over
// the limit, and a dropped connection. It prints "stor: ok" when all holds.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const [rv, relay] = process.argv.slice(2);
if (!rv || !relay) {
  console.error('usage: node stor.mjs RENDEZVOUS_URL RELAY_URL');
  process.exit(2);
}
const stor = relay.replace(/^http/, 'ws') + '/v1/stor';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`pageerror: ${e.message}`));
  await page.goto(rv + '/v1/info');

  // The client, in the page: a WebSocketFileTransfer-style uploader that
  // reports every reply, and a reader that streams the item.
  await page.evaluate(() => {
    /** One reply; each must be a text frame of exactly one JSON object. */
    function parse(ev) {
      if (typeof ev.data !== 'string') throw new Error('reply in a binary frame');
      return JSON.parse(ev.data);
    }
    window.connect = (url) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
        const queue = [];
        const waiters = [];
        let closed = null;
        ws.onmessage = (ev) => {
          const m = parse(ev);
          if (waiters.length) waiters.shift()(m);
          else queue.push(m);
        };
        ws.onclose = (ev) => {
          closed = { code: ev.code, reason: ev.reason };
          while (waiters.length) waiters.shift()(null);
        };
        ws.onopen = () =>
          resolve({
            ws,
            next: () => (queue.length ? Promise.resolve(queue.shift()) : closed ? Promise.resolve(null) : new Promise((r) => waiters.push(r))),
            closed: () =>
              closed
                ? Promise.resolve(closed)
                : new Promise((r) => {
                    const prev = ws.onclose;
                    ws.onclose = (ev) => {
                      prev(ev);
                      r(closed);
                    };
                  }),
          });
        ws.onerror = () => reject(new Error('websocket error'));
      });
    window.randomBytes = (n) => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, Math.min(n, i + 65536)));
      return b;
    };
    window.hex = async (buf) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', buf))].map((x) => x.toString(16).padStart(2, '0')).join('');
    window.b64 = (bytes) => {
      let s = '';
      for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(s);
    };
    /** Reads url to its end; resolves {status, bytes} or {error}. */
    window.read = async (url) => {
      try {
        const resp = await fetch(url);
        const buf = await resp.arrayBuffer();
        return { status: resp.status, length: resp.headers.get('Content-Length'), bytes: new Uint8Array(buf), text: resp.status >= 400 ? new TextDecoder().decode(buf) : '' };
      } catch (e) {
        return { error: String(e) };
      }
    };
  });

  // 1, 2: base64 without type, and binary; a reader streams meanwhile.
  for (const type of ['', 'binary']) {
    const r = await page.evaluate(
      async ({ stor, type }) => {
        const data = randomBytes(3 * 1024 * 1024 + 4321);
        const c = await connect(stor);
        c.ws.send('AUTH: ' + JSON.stringify({ login: 'alice', password: 's3cret' }));
        const au = await c.next();
        if (au.code !== 200) return { st: au };
        const req = { filename: 'photo.jpg', size: data.length, parameters: { album: 'x' } };
        if (type) req.type = type;
        c.ws.send('STOR: ' + JSON.stringify(req));
        const st = await c.next();
        if (st.code !== 200) return { st };
        const reading = read(st.url);
        const acks = [];
        for (let off = 0; off < data.length; ) {
          const n = Math.min(data.length - off, 100000);
          const blk = data.subarray(off, off + n);
          c.ws.send(type === 'binary' ? blk : b64(blk));
          const a = await c.next();
          acks.push(a);
          if (a.type !== 'DATA' || a.code !== 200 || a.bytesRead !== n) return { st, bad: a };
          off += n;
        }
        const got = await reading;
        c.ws.close();
        return { st, acks: acks.length, want: await hex(data), got: got.bytes ? await hex(got.bytes) : got.error, status: got.status, length: got.length };
      },
      { stor, type },
    );
    assert.equal(r.st.type, 'STOR', JSON.stringify(r.st));
    assert.equal(r.st.code, 200);
    assert.ok(r.st.share && r.st.url && r.st.expires, 'STOR answer has share, url, expires');
    assert.equal(r.bad, undefined, JSON.stringify(r.bad));
    assert.equal(r.status, 200);
    assert.equal(r.length, String(3 * 1024 * 1024 + 4321), 'final Content-Length from the start');
    assert.equal(r.got, r.want, `SHA-256 of what the reader got (type ${type || 'none'})`);
    console.log(`stor: ${type || 'base64 (no type)'} upload of ${r.acks} blocks streamed to a reader, SHA-256 equal`);
  }

  // 3: AUTH refused, then accepted (the rendezvous's auth webhook).
  const auth = await page.evaluate(async (stor) => {
    const out = {};
    let c = await connect(stor);
    c.ws.send('AUTH: ' + JSON.stringify({ login: 'mallory', password: 'x' }));
    out.refused = await c.next();
    out.refusedClose = await c.closed();
    c = await connect(stor);
    c.ws.send('AUTH: ' + JSON.stringify({ login: 'alice', password: 's3cret' }));
    out.accepted = await c.next();
    c.ws.send('STOR: ' + JSON.stringify({ filename: 'a.txt', size: 5 }));
    out.st = await c.next();
    c.ws.send(btoa('hello'));
    out.data = await c.next();
    const got = await read(out.st.url);
    out.text = new TextDecoder().decode(got.bytes);
    return out;
  }, stor);
  assert.equal(auth.refused.type, 'AUTH');
  assert.equal(auth.refused.code, 403, JSON.stringify(auth.refused));
  assert.equal(auth.refusedClose.code, 4103);
  assert.deepEqual([auth.accepted.type, auth.accepted.code], ['AUTH', 200]);
  assert.equal(auth.st.code, 200);
  assert.deepEqual([auth.data.code, auth.data.bytesRead], [200, 5]);
  assert.equal(auth.text, 'hello');
  console.log('stor: AUTH refused (403, close 4103) and accepted');

  // 4: malformed STOR.
  const bad = await page.evaluate(async (stor) => {
    const c = await connect(stor);
    c.ws.send('STOR: {"filename": "a", "size": ');
    return { reply: await c.next(), close: await c.closed() };
  }, stor);
  assert.deepEqual([bad.reply.type, bad.reply.code], ['STOR', 400], JSON.stringify(bad.reply));
  assert.ok(bad.reply.message);
  assert.equal(bad.close.code, 4200);
  console.log('stor: malformed STOR refused (400, close 4200)');

  // 5: a block over the relay's limit (256 KiB).
  const big = await page.evaluate(async (stor) => {
    const c = await connect(stor);
    c.ws.send('AUTH: ' + JSON.stringify({ login: 'alice', password: 's3cret' }));
    await c.next();
    c.ws.send('STOR: ' + JSON.stringify({ filename: 'b.bin', size: 1 << 20, type: 'binary' }));
    const st = await c.next();
    c.ws.send(randomBytes(256 * 1024 + 1));
    return { st, reply: await c.next(), close: await c.closed() };
  }, stor);
  assert.equal(big.st.code, 200);
  assert.deepEqual([big.reply.type, big.reply.code], ['DATA', 413], JSON.stringify(big.reply));
  assert.equal(big.close.code, 1009);
  console.log('stor: block over the limit refused (413, close 1009)');

  // 6: the uploader's connection drops mid-upload: the reader streaming
  // the item fails rather than taking a part for the whole, and a later
  // read is refused with the reason.
  const drop = await page.evaluate(async (stor) => {
    const data = randomBytes(1 << 20);
    const c = await connect(stor);
    c.ws.send('AUTH: ' + JSON.stringify({ login: 'alice', password: 's3cret' }));
    await c.next();
    c.ws.send('STOR: ' + JSON.stringify({ filename: 'c.bin', size: data.length, type: 'binary' }));
    const st = await c.next();
    // The reader has its headers (200, the final length) before any byte.
    const resp = await fetch(st.url);
    c.ws.send(data.subarray(0, 200000));
    const ack = await c.next();
    c.ws.close();
    const got = await resp.arrayBuffer().then((b) => ({ n: b.byteLength }), (e) => ({ error: String(e) }));
    const later = await read(st.url);
    return { ack, status: resp.status, got, later: { status: later.status, text: later.text } };
  }, stor);
  assert.equal(drop.ack.bytesRead, 200000, JSON.stringify(drop));
  assert.equal(drop.status, 200);
  assert.ok(drop.got.error, `the streaming reader must fail, got ${JSON.stringify(drop.got)}`);
  assert.equal(drop.later.status, 410, JSON.stringify(drop.later));
  assert.match(drop.later.text, /interrupted/);
  console.log('stor: dropped connection: the streaming reader failed, a later read is 410 "interrupted"');

  console.log('stor: ok');
} finally {
  await browser.close();
}
