// One evsocket-client sender broadcasts a file to N evsocket-client
// receivers through meshup's /v1/evsocket/{channel}, the way
// binary-streaming does: "start" with {type}, binary "streaming" chunks of
// 10240 bytes every 10 ms with no acknowledgement, then "complete".
//
// usage: node broadcast.mjs WS_URL FILE RECEIVERS
//
// Prints "ready" once every receiver is open (has its __evsock__::sync),
// waits for a line on stdin, then sends; prints one JSON line per receiver
// ({receiver, type, bytes, sha256, events}) when it has "complete", and
// exits 0 when all have.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
globalThis.WebSocket = require('ws'); // evsocket-client uses the global WebSocket
const EvSocket = require('evsocket-client');

const [url, file, nStr] = process.argv.slice(2);
const data = readFileSync(file);
const n = Number(nStr);

function open(sock) {
	return new Promise((resolve, reject) => {
		sock.on('open', resolve);
		sock.on('error', (e) => reject(new Error('evsocket error: ' + (e && e.message))));
		sock.on('close', (code) => reject(new Error('closed before open: ' + JSON.stringify(code && code.code))));
	});
}

const done = [];
const receivers = [];
for (let i = 0; i < n; i++) {
	const sock = new EvSocket(url);
	const st = { type: null, chunks: [], events: [] };
	sock.on('start', (d) => { st.type = d && d.type; st.events.push('start'); });
	sock.on('streaming', (buf) => { st.chunks.push(Buffer.from(buf)); });
	done.push(new Promise((resolve) => {
		sock.on('complete', () => {
			st.events.push('complete');
			const all = Buffer.concat(st.chunks);
			console.log(JSON.stringify({
				receiver: i, type: st.type, bytes: all.length,
				sha256: createHash('sha256').update(all).digest('hex'), events: st.events,
			}));
			resolve();
		});
	}));
	receivers.push(sock);
}
await Promise.all(receivers.map(open));
console.log('ready');
const rl = createInterface({ input: process.stdin });
await new Promise((resolve) => rl.once('line', resolve));

const sender = new EvSocket(url);
await open(sender);
sender.send('start', { type: 'application/octet-stream' });
const chunk = 10240;
for (let off = 0; off < data.length; off += chunk) {
	const part = data.subarray(off, Math.min(off + chunk, data.length));
	// sendBinary sends the whole ArrayBuffer of a view: pass an exact copy.
	sender.sendBinary('streaming', part.buffer.slice(part.byteOffset, part.byteOffset + part.byteLength));
	await new Promise((r) => setTimeout(r, 10));
}
sender.send('complete', {});
await Promise.all(done);
sender.close();
for (const r of receivers) r.close();
rl.close();
process.exit(0);
