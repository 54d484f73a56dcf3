// wsacks.mjs is the floor under socket.io uploads from Node, for the
// upload benchmark (cmd/internal/e2e BenchmarkUploadProtocols): the `ws`
// package that socket.io-client itself uses in Node, with no socket.io on
// top, sending FILE in CHUNK-byte binary messages, each after the server's
// answer to the previous one (the acknowledged chunks of upload-streams).
// It prints {"event":"done","n":messages,"ms":...}.
//
//	node wsacks.mjs WSURL FILE CHUNK
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'

const [url, file, chunkArg] = process.argv.slice(2)
const data = readFileSync(file)
const chunkSize = Number(chunkArg)
const ws = new WebSocket(url)
ws.on('error', (err) => { console.log(JSON.stringify({ event: 'error', message: err.message })); process.exit(0) })
ws.on('open', async () => {
  const t0 = Date.now()
  let off = 0
  let n = 0
  while (off < data.length) {
    const end = Math.min(off + chunkSize, data.length)
    const answered = new Promise((resolve) => ws.once('message', resolve))
    ws.send(data.subarray(off, end))
    await answered
    off = end
    n++
  }
  console.log(JSON.stringify({ event: 'done', n, ms: Date.now() - t0 }))
  ws.close()
})
