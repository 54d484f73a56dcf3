// Unit checks of the WebM walker (webm.js) and the live1 records
// (live.js), in Node (WebCrypto is Node's). Run by cmd/internal/browser
// (TestLiveUnit):
//
//	node liveunit.mjs [--vectors ../../../proto/testdata/live1-vectors.json]
//
// It prints "liveunit: ok" when every check holds.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { EBMLWalker, WebMSplitter, ID, webmCodecs } from '../webm.js';
import * as live from '../live.js';
import { checkLiveVectors } from './livevectors.mjs';

const hex = (/** @type {string} */ h) => Uint8Array.from(h.replace(/\s+/g, '').match(/../g) ?? [], (x) => parseInt(x, 16));
const cat = (/** @type {Uint8Array[]} */ ps) => Uint8Array.from(ps.flatMap((p) => [...p]));
/** an element with a known size (1-byte or 8-byte size field) */
const el = (/** @type {number} */ id, /** @type {Uint8Array} */ body) => {
  const idb = hex(id.toString(16));
  const size = body.length < 127 ? Uint8Array.of(0x80 | body.length) : Uint8Array.of(0x01, 0, 0, 0, 0, (body.length >> 16) & 0xff, (body.length >> 8) & 0xff, body.length & 0xff);
  return cat([idb, size, body]);
};
const unknown = (/** @type {number} */ id) => cat([hex(id.toString(16)), hex('01ffffffffffffff')]);

// A WebM as MediaRecorder writes it (unknown-size Segment and Clusters),
// with frame data holding the Cluster id, then a known-size Cluster, Cues,
// and a last unknown-size Cluster.
const trap = cat([hex('1f43b675 01ffffffffffffff'), new Uint8Array(300).fill(0x1f)]); // a false Cluster inside frame data
const header = el(ID.EBML, hex('4286810142f7810142f2810442f381084282847765626d'));
const info = el(ID.INFO, hex('2ad7b1830f4240'));
const tracks = el(ID.TRACKS, new Uint8Array(40).fill(0x55));
const block1 = el(0xa3, cat([hex('810000'), trap]));
const block2 = el(0xa3, new Uint8Array(200).fill(0x1f));
const parts = [
  header,
  unknown(ID.SEGMENT),
  info,
  tracks,
  unknown(ID.CLUSTER), el(0xe7, hex('00')), block1, block2,        // cluster A
  el(ID.CLUSTER, cat([el(0xe7, hex('03e8')), block1])),           // cluster B, known size
  el(ID.CUES, new Uint8Array(20).fill(0xbb)),
  unknown(ID.CLUSTER), el(0xe7, hex('07d0')), block2, el(0xec, hex('0000')), // cluster C, a Void inside
  unknown(ID.CLUSTER), el(0xe7, hex('0bb8')),                      // cluster D at the very end
];
const file = cat(parts);
let off = 0;
const want = [];
for (const [i, p] of parts.entries()) {
  if (p[0] === 0x1f && p[1] === 0x43 && p[2] === 0xb6 && p[3] === 0x75) want.push(off);
  off += p.length;
  void i;
}
assert.equal(want.length, 4, 'the synthetic file has 4 Clusters');

// Whole, byte by byte, and in random pieces: the same Clusters, never the trap.
const feeds = [[file], Array.from(file, (b) => Uint8Array.of(b))];
for (let k = 0; k < 20; k++) {
  const pieces = [];
  for (let at = 0; at < file.length;) {
    const n = 1 + Math.floor(Math.random() * 97);
    pieces.push(file.subarray(at, at + n));
    at += n;
  }
  feeds.push(pieces);
}
for (const [k, pieces] of feeds.entries()) {
  const w = new EBMLWalker();
  const got = pieces.flatMap((p) => w.push(p));
  assert.deepEqual(got, want, `feed ${k}: Cluster offsets`);
  const s = new WebMSplitter();
  /** @type {Uint8Array|null} */
  let init = null;
  const out = [];
  for (const p of pieces) {
    const r = s.push(p);
    if (r.init) {
      assert.equal(init, null, 'init once');
      init = r.init;
    }
    out.push(...r.parts);
  }
  assert.deepEqual(init, file.subarray(0, want[0]), `feed ${k}: init is everything before the first Cluster`);
  assert.deepEqual(cat([init, ...out.map((p) => p.bytes)]), file, `feed ${k}: init and parts are the stream`);
  let at = want[0];
  const syncAt = [];
  for (const p of out) {
    if (p.sync) syncAt.push(at);
    at += p.bytes.length;
  }
  assert.deepEqual(syncAt, want, `feed ${k}: a sync part begins at each Cluster, nowhere else`);
}

// Codecs from the tracks of init bytes (TrackEntry > CodecID).
const entry = (/** @type {string} */ codec) => el(0xae, cat([el(0xd7, hex('01')), el(0x86, new TextEncoder().encode(codec))]));
const tracksInit = cat([header, unknown(ID.SEGMENT), info, el(ID.TRACKS, cat([entry('V_VP9'), entry('A_OPUS'), entry('S_TEXT/UTF8')]))]);
assert.deepEqual(webmCodecs(tracksInit), ['vp9', 'opus'], 'codecs of the tracks');
assert.deepEqual(webmCodecs(tracksInit.subarray(0, tracksInit.length - 5)), ['vp9', 'opus'], 'codecs of init bytes cut short');
assert.deepEqual(webmCodecs(hex('00 01 02')), [], 'no codecs in garbage');

// Malformed input fails with WebMError, never silently.
assert.throws(() => new EBMLWalker().push(hex('00 00 00')), /webm: bad element id/);
assert.throws(() => new EBMLWalker().push(cat([header, unknown(ID.INFO)])), /webm: .*top-level|unknown size/);

// A real WebM from ffmpeg, when there is one: every offset found is a Cluster id.
let real = 0;
try {
  const webm = execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=96x64:rate=10', '-t', '3', '-c:v', 'libvpx', '-b:v', '200k', '-cluster_time_limit', '500', '-live', '1', '-f', 'webm', '-'], { maxBuffer: 64 << 20 });
  const b = new Uint8Array(webm.buffer, webm.byteOffset, webm.length);
  const offs = new EBMLWalker().push(b);
  assert.ok(offs.length >= 3, `ffmpeg's 3 s WebM has ${offs.length} Clusters, want >= 3`);
  for (const o of offs) assert.deepEqual([...b.subarray(o, o + 4)], [0x1f, 0x43, 0xb6, 0x75], `Cluster id at ${o}`);
  real = offs.length;
  assert.deepEqual(webmCodecs(b.subarray(0, offs[0])), ['vp8'], 'codecs of the ffmpeg WebM\'s tracks');
} catch (err) {
  if (err.code !== 'ENOENT') throw err;
}

// Records: seal and read back, with the reader rules.
const key = crypto.getRandomValues(new Uint8Array(32));
const id = await live.channelID(live.newSecret());
assert.match(id, /^[a-z2-7]{26}$/);
const kl = await live.deriveKey(key, id);
const head = await live.sealRecord(kl, live.Kind.HEAD, 0, 0, live.headPlain({ type: 'video/webm', name: 'a.webm' }, hex('0102')));
const recs = [];
for (let i = 0; i < 5; i++) recs.push(await live.sealRecord(kl, i === 4 ? live.Kind.LAST : i === 2 ? live.Kind.SYNC : live.Kind.DATA, 7 + i, 0, Uint8Array.of(i, i)));
/** @param {Uint8Array[]} rs @param {CryptoKey} [k] */
const readAll = async (rs, k = kl) => {
  const body = new Blob(rs).stream();
  const got = [];
  try {
    for await (const r of live.openRecords(k, body)) got.push(r);
  } catch (err) {
    return { got, err };
  }
  return { got, err: null };
};
let r = await readAll([head, ...recs]);
assert.equal(r.err, null);
assert.deepEqual(r.got.map((x) => x.kind), ['head', 'data', 'data', 'sync', 'data', 'last']);
assert.deepEqual(r.got[0].meta, { type: 'video/webm', name: 'a.webm' });
r = await readAll([head, ...recs.slice(0, 4)]);
assert.equal(r.err?.kind, 'cut', 'EOF without the last record');
r = await readAll([head, recs[0], recs[2]]);
assert.equal(r.err?.kind, 'missing', 'a dropped record');
assert.equal(r.got.length, 2, 'nothing after the gap');
r = await readAll([recs[0]]);
assert.equal(r.err?.kind, 'nohead');
r = await readAll([head, ...recs], await live.deriveKey(crypto.getRandomValues(new Uint8Array(32)), id));
assert.equal(r.err?.kind, 'key', 'another key');
const flipped = recs[1].slice();
flipped[flipped.length - 3] ^= 1;
r = await readAll([head, recs[0], flipped]);
assert.equal(r.err?.kind, 'integrity');
assert.equal(r.err?.seq, 8);
const rekind = recs[1].slice();
rekind[4] = live.Kind.SYNC; // a relay marks a data record as a sync point
r = await readAll([head, recs[0], rekind]);
assert.equal(r.err?.kind, 'integrity', 'a changed kind byte');
r = await readAll([head, ...recs, recs[0]]);
assert.equal(r.err, null, 'the reader stops at the last record');

// Head binding: records sealed after head 1 open under head 1 only. A
// relay that withholds head 1 and passes on what follows fails the reader
// at the first record after it, none of whose bytes is handed out.
{
  const head1 = await live.sealRecord(kl, live.Kind.HEAD, 1, 0, live.headPlain({ type: 'video/webm', name: 'b.webm' }, hex('0304')));
  const under1 = [];
  for (let i = 0; i < 2; i++) under1.push(await live.sealRecord(kl, i === 0 ? live.Kind.SYNC : live.Kind.LAST, 11 + i, 1, Uint8Array.of(0x40 + i)));
  r = await readAll([head, ...recs.slice(0, 4), head1, ...under1]);
  assert.equal(r.err, null, `a head change read whole: ${r.err?.message}`);
  assert.deepEqual(r.got.map((x) => `${x.kind} ${x.seq}`), ['head 0', 'data 7', 'data 8', 'sync 9', 'data 10', 'head 1', 'sync 11', 'last 12']);
  assert.deepEqual(r.got[5].init, hex('0304'), 'the new head\'s init');
  r = await readAll([head, ...recs.slice(0, 4), ...under1]);
  assert.equal(r.err?.kind, 'integrity', 'head 1 withheld');
  assert.equal(r.err?.seq, 11);
  assert.equal(r.err?.head, 0);
  assert.equal(r.err?.message, 'sync record 11 does not open under head 0: a relay changed it or withheld a newer channel head, or it is of another channel or key');
  assert.deepEqual(r.got.map((x) => `${x.kind} ${x.seq}`), ['head 0', 'data 7', 'data 8', 'sync 9', 'data 10'], 'nothing of the record after the withheld head');
  await assert.rejects(live.sealRecord(kl, live.Kind.DATA, 0, -1, Uint8Array.of(1)), /before any channel head/, 'no record sealed without a head');
}

// Time: a changed time does not open; times never go back; a reader
// must catch up with the live edge (clock injected as opts.now).
{
  const t0 = Date.UTC(2026, 0, 1);
  const h = await live.sealRecord(kl, live.Kind.HEAD, 0, 0, live.headPlain({ type: 'text/plain' }), t0);
  const d = [];
  for (let i = 0; i < 5; i++) d.push(await live.sealRecord(kl, live.Kind.DATA, i, 0, Uint8Array.of(0x61 + i), t0 + i * 1000));
  const last = await live.sealRecord(kl, live.Kind.LAST, 5, 0, new Uint8Array(0), t0 + 5000);
  // One record per read, the reader's clock moved on by step(i) as
  // record i is asked for (highWaterMark 0: nothing is read ahead).
  const paced = (/** @type {Uint8Array[]} */ rs, /** @type {{t: number}} */ clock, /** @type {(i: number) => number} */ step, stall = false) => {
    let i = 0;
    return new ReadableStream({
      pull(c) {
        if (i === rs.length) {
          if (stall) return new Promise(() => {}); // a relay that sends nothing more
          c.close();
          return;
        }
        clock.t += step(i);
        c.enqueue(rs[i++]);
      },
    }, { highWaterMark: 0 });
  };
  const readWith = async (/** @type {ReadableStream} */ body, /** @type {any} */ opts) => {
    const got = [];
    try {
      for await (const x of live.openRecords(kl, body, opts)) got.push(x);
    } catch (err) {
      return { got, err };
    }
    return { got, err: null };
  };
  const text = (/** @type {any[]} */ got) => got.filter((x) => x.kind !== 'head').map((x) => String.fromCharCode(...x.data)).join('');

  let clock = { t: t0 + 10 * 60_000 };
  r = await readWith(paced([h, ...d, last], clock, () => 10_000), { now: () => clock.t });
  assert.equal(r.err?.kind, 'stale', `replayed 10 minutes later at real-time pace: ${r.err?.message}`);
  assert.equal(text(r.got), 'abc', 'the replay fails 40 s after its first record');
  assert.equal(r.err?.message, 'the channel is 10m47s behind its publisher: a relay is replaying or delaying it (or the publisher\'s clock is off; max lag 1m0s)');
  assert.deepEqual(r.got.map((x) => x.time), [t0, t0, t0 + 1000, t0 + 2000], 'record times');

  clock = { t: t0 + 60 * 60_000 };
  r = await readWith(paced([h, ...d, last], clock, () => 0), { now: () => clock.t });
  assert.equal(r.err?.kind, 'stale', 'a whole channel replayed at once fails at its last record');
  assert.equal(text(r.got), 'abcde');
  r = await readWith(paced([h, ...d, last], clock, () => 0), { now: () => clock.t, maxLag: -1 });
  assert.equal(r.err, null, 'maxLag -1: no check');

  clock = { t: t0 - 60_000 }; // the reader's clock a minute behind: the channel is in its future
  r = await readWith(paced([h, ...d, last], clock, (i) => i < 2 ? 1000 : 5 * 60_000), { now: () => clock.t });
  assert.equal(r.err, null, `caught up at once, then slow: ${r.err?.message}`);

  clock = { t: t0 + 3 * 60_000 };
  r = await readWith(paced([h, d[0], d[1], d[2]], clock, () => 0, true), { now: () => clock.t, catchUp: 50 });
  assert.equal(r.err?.kind, 'stale', `a stalled replay fails when catchUp passes: ${r.err?.message}`);
  assert.equal(text(r.got), 'abc');

  const timeFlipped = d[1].slice();
  timeFlipped[20] ^= 1;
  r = await readWith(paced([h, d[0], timeFlipped], clock = { t: t0 }, () => 0), { now: () => clock.t });
  assert.equal(r.err?.kind, 'integrity', 'a changed time');
  assert.equal(r.err?.seq, 1);
  const back = await live.sealRecord(kl, live.Kind.DATA, 2, 0, Uint8Array.of(0x63), t0);
  r = await readWith(paced([h, d[0], d[1], back], clock = { t: t0 }, () => 0), { now: () => clock.t });
  assert.equal(r.err?.kind, 'time', 'a record going back in time');
  assert.equal(r.err?.seq, 2);
  assert.equal(text(r.got), 'ab');
}

// Links.
const l = live.formatLink('http://127.0.0.1:8080/l/' + id, key);
const p = live.parseLink(l);
assert.equal(p.base, 'http://127.0.0.1:8080');
assert.equal(p.id, id);
assert.deepEqual(p.key, key);
assert.equal(live.parseLink('http://x/l/' + id).key, null);
assert.throws(() => live.parseLink('http://x/l/' + id + '#k=abc'), /key/);

// The golden vectors of proto/testdata/live1-vectors.json, when present.
let vchecks = 0;
const vi = process.argv.indexOf('--vectors');
const vpath = vi > 0 ? process.argv[vi + 1] : new URL('../../../proto/testdata/live1-vectors.json', import.meta.url).pathname;
if (existsSync(vpath)) {
  const res = await checkLiveVectors(JSON.parse(readFileSync(vpath, 'utf8')), new URL('../live.js', import.meta.url).href);
  assert.deepEqual(res.failures, [], 'live1 golden vectors');
  vchecks = res.checks;
} else if (vi > 0) {
  throw new Error(`no vectors at ${vpath}`);
}
console.log(`figure: webm walker: ${feeds.length} feeds of a synthetic WebM with a false Cluster id in frame data, ${real} Clusters of an ffmpeg WebM; live1: ${vchecks} golden-vector checks`);
console.log('liveunit: ok');
