// Checks the e2e1 golden vectors (proto/testdata/e2e1-vectors.json) against
// the browser library's e2e.js. checkVectors runs wherever e2e.js runs: the
// browser test passes it to page.evaluate, so WebCrypto is Chromium's.
// It returns a list of failures (empty when every vector passes) and the
// number of checks made.

/**
 * @param {any} v the parsed vectors file
 * @param {string} moduleURL where to import e2e.js from
 * @returns {Promise<{checks: number, failures: string[]}>}
 */
export async function checkVectors(v, moduleURL) {
  const e2e = await import(moduleURL);
  const failures = [];
  let checks = 0;
  const check = (ok, what) => {
    checks++;
    if (!ok) failures.push(what);
  };
  const hex = (/** @type {string} */ h) => new Uint8Array((h.match(/../g) ?? []).map((x) => parseInt(x, 16)));
  const toHex = (/** @type {Uint8Array} */ b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const sha256 = async (/** @type {Uint8Array} */ b) => toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', b)));
  const plaintext = (/** @type {number} */ n) => Uint8Array.from({ length: n }, (_, j) => j % 251);

  check(v.format === e2e.VERSION && v.chunk_size === e2e.CHUNK_SIZE && v.tag_size === e2e.TAG_SIZE, 'format constants');
  const key = hex(v.key_hex);
  check(toHex(e2e.itemIDBytes(v.item_id)) === v.item_id_hex, 'item id bytes');
  check(e2e.formatFragment(key) === v.key_fragment, `fragment: got ${e2e.formatFragment(key)}`);
  const raw = await e2e.deriveRaw(key, v.item_id);
  check(toHex(raw.payload) === v.payload_key_hex, 'payload key');
  check(toHex(raw.metadata) === v.metadata_key_hex, 'metadata key');
  const keys = await e2e.deriveKeys(key, v.item_id);

  /** @type {Map<number, Uint8Array>} */
  const sealedBySize = new Map();
  for (const p of v.payloads) {
    const sealed = await e2e.sealAll(keys.payload, plaintext(p.plain_size));
    sealedBySize.set(p.plain_size, sealed);
    check(sealed.length === p.cipher_size && e2e.sealedSize(p.plain_size) === p.cipher_size, `payload ${p.plain_size}: size ${sealed.length}`);
    check(e2e.chunkCount(p.cipher_size) === p.chunks, `payload ${p.plain_size}: chunks`);
    check(await sha256(sealed) === p.cipher_sha256, `payload ${p.plain_size}: sha256`);
    if (p.cipher_hex) check(toHex(sealed) === p.cipher_hex, `payload ${p.plain_size}: bytes`);
    const tags = p.chunk_tags_hex.map((/** @type {string} */ _t, /** @type {number} */ i) => {
      const end = Math.min(sealed.length, (i + 1) * e2e.SEALED_CHUNK_SIZE);
      return toHex(sealed.subarray(end - e2e.TAG_SIZE, end));
    });
    check(JSON.stringify(tags) === JSON.stringify(p.chunk_tags_hex), `payload ${p.plain_size}: tags`);
    // The ciphertext as Go sealed it (same bytes) opens to the plaintext.
    const opened = await e2e.openAll(keys.payload, sealed);
    check(toHex(opened) === toHex(plaintext(p.plain_size)), `payload ${p.plain_size}: open`);
  }

  const m = v.metadata;
  const opened = await e2e.openMeta(keys.metadata, m.meta);
  const want = JSON.parse(m.plaintext);
  check(opened.name === want.name && opened.type === want.type && opened.modified === want.modified, `metadata: got ${JSON.stringify(opened)}`);
  for (const n of m.negative) {
    const ks = await e2e.deriveKeys(hex(n.key_hex || v.key_hex), v.item_id);
    let failed = false;
    try {
      await e2e.openMeta(ks.metadata, n.meta);
    } catch (err) {
      failed = err instanceof e2e.E2EError;
    }
    check(failed, `metadata negative "${n.name}" opened`);
  }

  for (const s of v.sizes) {
    let got = -1;
    try {
      got = e2e.plainSize(s.cipher_size);
    } catch {
      got = -1;
    }
    check(s.valid ? got === s.plain_size : got === -1, `size ${s.cipher_size}: got ${got}`);
  }
  for (const r of v.ranges) {
    const cr = e2e.cipherRange(r.first, r.last, r.cipher_size);
    const skip = r.first - cr.first * e2e.CHUNK_SIZE;
    check(cr.start === r.cipher_off && cr.end === r.cipher_end && cr.first === r.chunk && skip === r.skip, `range [${r.first}, ${r.last}] of ${r.cipher_size}: got ${JSON.stringify(cr)}`);
  }
  for (const f of v.fragments) {
    let found = false, valid = false, got = '';
    try {
      const k = e2e.parseFragment(f.fragment);
      found = k !== null;
      valid = found;
      got = k ? toHex(k) : '';
    } catch {
      found = true;
    }
    check(found === f.found && valid === f.valid && (!valid || got === f.key_hex), `fragment ${JSON.stringify(f.fragment)}: found ${found} valid ${valid}`);
  }

  for (const n of v.negative) {
    const base = v.payloads.find((/** @type {any} */ p) => p.plain_size === n.payload);
    let ct = /** @type {Uint8Array} */ (sealedBySize.get(n.payload)).slice();
    const op = n.op ?? {};
    const sc = e2e.SEALED_CHUNK_SIZE;
    const chunkOf = (/** @type {Uint8Array} */ b, /** @type {number} */ i) => b.slice(i * sc, Math.min(b.length, (i + 1) * sc));
    if (op.flip !== undefined) ct[op.flip] ^= 1;
    if (op.drop_chunk !== undefined) ct = e2e.concat([ct.subarray(0, op.drop_chunk * sc), ct.subarray(Math.min(ct.length, (op.drop_chunk + 1) * sc))]);
    if (op.swap_chunks) {
      const [i, j] = op.swap_chunks;
      const ci = chunkOf(ct, i), cj = chunkOf(ct, j);
      ct.set(cj, i * sc);
      ct.set(ci, j * sc);
    }
    if (op.truncate !== undefined) ct = ct.slice(0, op.truncate);
    if (op.append_hex) ct = e2e.concat([ct, hex(op.append_hex)]);
    if (op.other_item_hex) {
      const ks = await e2e.deriveKeys(key, hex(op.other_item_hex));
      ct = await e2e.sealAll(ks.payload, plaintext(n.payload));
    }
    const size = n.claimed_size || base.cipher_size;
    const ks = n.key_hex ? await e2e.deriveKeys(hex(n.key_hex), v.item_id) : keys;
    const want = plaintext(n.payload);
    let ok = 0, kind = 'none', chunk = -1, correct = true;
    try {
      const stream = new Blob([ct]).stream().pipeThrough(e2e.decryptStream(ks.payload, size));
      for await (const b of /** @type {any} */ (stream)) {
        for (let j = 0; j < b.length; j++) if (b[j] !== want[ok + j]) correct = false;
        ok += b.length;
      }
    } catch (err) {
      kind = err instanceof e2e.E2EError ? err.kind : `exception ${err}`;
      chunk = err.chunk;
    }
    check(kind === n.error && chunk === n.chunk && ok === n.plain_ok && correct,
      `negative "${n.name}": got ${kind} at chunk ${chunk} after ${ok} bytes (correct ${correct}), want ${n.error} at ${n.chunk} after ${n.plain_ok}`);
  }
  return { checks, failures };
}
