// socketio.mjs drives socket.io-client 4.x (unmodified) against a relay's
// /v1/socket.io/ with the upload-streams protocol, for the relay's Go tests
// (relay/protocols_node_test.go). It prints one JSON object a line on
// stdout: {"event": ...}.
//
//	node socketio.mjs BASEURL PATH FILE CHUNK MODE
//
// MODE:
//	upload     begin_upload, then FILE in CHUNK-byte chunks, each after the
//	           previous one's ack, the last one empty when FILE divides evenly
//	oversize   one chunk of CHUNK bytes (over the relay's limit)
//	malformed  one chunk that is a string, not binary
//	conns      CHUNK connections one after another, each kept open once
//	           connected and upgraded to WebSocket: {"event":"held",n}
//	           for each, {"event":"refused",status,body} for the first one
//	           refused, then {"event":"done",held}
import { readFileSync } from 'node:fs'
import { io } from 'socket.io-client'

const [base, path, file, chunkArg, mode] = process.argv.slice(2)
const data = readFileSync(file)
const chunkSize = Number(chunkArg)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const fail = (message) => { out({ event: 'error', message }); process.exit(0) }

if (mode === 'conns') {
  const held = []
  for (let i = 0; i < chunkSize; i++) {
    const s = io(base, { path, reconnection: false, timeout: 20000, forceNew: true })
    const r = await new Promise((resolve) => {
      s.on('connect_error', (err) => resolve({ err }))
      s.on('connect', () => {
        if (s.io.engine.transport.name === 'websocket') resolve({})
        else s.io.engine.once('upgrade', () => resolve({}))
      })
    })
    if (r.err) {
      const xhr = r.err.context
      out({ event: 'refused', message: r.err.message, status: r.err.description, body: xhr && xhr.responseText })
      s.close()
      break
    }
    held.push(s)
    out({ event: 'held', n: held.length, transport: s.io.engine.transport.name })
  }
  out({ event: 'done', held: held.length })
  held.forEach((s) => s.close())
  process.exit(0)
}

const socket = io(base, { path, reconnection: false, timeout: 20000 })
let upgraded = false
let acks = 0
const t0 = Date.now()
socket.on('connect_error', (err) => fail('connect: ' + err.message))
// The Engine.IO handshake: over long-polling, which a WebSocket-only
// server never answers; the upgrade to WebSocket follows.
socket.io.on('open', () => out({ event: 'open', transport: socket.io.engine.transport.name }))
socket.io.engine.on('upgrade', (t) => { upgraded = true; out({ event: 'upgrade', transport: t.name, acks, ms: Date.now() - t0 }) })

socket.on('connect', async () => {
  out({ event: 'connect', transport: socket.io.engine.transport.name })
  const sessionID = 'sess-' + process.pid
  const uploadError = new Promise((resolve) => socket.on('upload_error_' + sessionID, resolve))
  const success = new Promise((resolve) => socket.on('upload_success_' + sessionID, resolve))
  const begin = await socket.timeout(20000).emitWithAck('begin_upload', { sessionID, fileName: 'data.bin' })
  out({ event: 'begin', ...begin })
  if (begin.error) { socket.close(); return }
  const send = (chunk, last) => socket.timeout(60000).emitWithAck('upload_chunk_' + sessionID, { chunk, last })
  if (mode === 'oversize' || mode === 'malformed') {
    const chunk = mode === 'oversize' ? data.subarray(0, chunkSize) : 'not binary'
    const ack = await send(chunk, false)
    out({ event: 'refused', ...ack })
    // The upload_error event follows the ack on the same connection.
    out({ event: 'upload_error', ...(await uploadError) })
    socket.close()
    return
  }
  let off = 0
  while (off < data.length) {
    const end = Math.min(off + chunkSize, data.length)
    const last = end === data.length && data.length % chunkSize !== 0
    const ack = await send(data.subarray(off, end), last)
    if (ack.error) fail('chunk at ' + off + ': ' + ack.error)
    acks++
    off = end
    if (last) break
  }
  if (data.length % chunkSize === 0) {
    const ack = await send(Buffer.alloc(0), true)
    if (ack.error) fail('last chunk: ' + ack.error)
    acks++
  }
  const ok = await success
  out({ event: 'success', ...ok, acks, ms: Date.now() - t0, upgraded, transport: socket.io.engine.transport.name })
  socket.close()
})
