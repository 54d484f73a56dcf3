// tus.mjs drives tus-js-client (unmodified) against a relay's /v1/files/
// for the relay's Go tests (relay/protocols_node_test.go). It prints one
// JSON object a line on stdout: {"event": ...}.
//
//	node tus.mjs ENDPOINT FILE MODE [STORE]
//
// MODE:
//	upload     upload FILE whole, retrying after errors (a forced disconnect)
//	stop:N     upload with 256 KiB PATCHes, storing the upload URL in STORE,
//	           and exit at once when N bytes were accepted
//	resume     find the upload of FILE in STORE (a new process) and finish it
//	terminate  upload 256 KiB PATCHes, then terminate (DELETE) after the first
//	checksum   send a PATCH with a wrong Upload-Checksum (sha1)
import { readFileSync } from 'node:fs'
import { Upload, FileUrlStorage } from 'tus-js-client'

const [endpoint, file, mode, store] = process.argv.slice(2)
const data = readFileSync(file)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const opts = {
  endpoint,
  metadata: { filename: 'data.bin', filetype: 'application/x-test' },
  retryDelays: [0, 100, 300, 1000, 2000],
  onAfterResponse (req, res) {
    const m = req.getMethod()
    if (m === 'POST') {
      out({ event: 'created', status: res.getStatus(), url: req.getURL(), location: res.getHeader('Location'), item: res.getHeader('Meshup-Item-URL'), expires: res.getHeader('Upload-Expires') })
    } else if (m === 'HEAD') {
      out({ event: 'head', status: res.getStatus(), offset: Number(res.getHeader('Upload-Offset')) })
    } else if (m === 'PATCH') {
      out({ event: 'patch', status: res.getStatus(), offset: Number(res.getHeader('Upload-Offset')), expires: res.getHeader('Upload-Expires') })
    }
  },
  onShouldRetry (err, retryAttempt) {
    // tus-js-client's own rule: retry unless a 4xx other than 409 and 423.
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0
    const retry = !(status >= 400 && status < 500 && status !== 409 && status !== 423)
    out({ event: 'retry', attempt: retryAttempt, status, retry, message: String(err.message).split('\n')[0] })
    return retry
  },
  onError (err) {
    const res = err.originalResponse
    out({ event: 'error', status: res ? res.getStatus() : 0, message: String(err.message).split('\n')[0] })
    process.exit(0)
  },
  onSuccess () {
    out({ event: 'done', url: upload.url })
  },
}

let upload
switch (true) {
  case mode === 'upload':
    upload = new Upload(data, opts)
    upload.start()
    break
  case mode.startsWith('stop:'): {
    const stopAt = Number(mode.slice(5))
    upload = new Upload(data, {
      ...opts,
      chunkSize: 256 << 10,
      urlStorage: new FileUrlStorage(store),
      onChunkComplete (size, accepted) {
        if (accepted >= stopAt) {
          out({ event: 'stopped', offset: accepted, url: upload.url })
          process.exit(0)
        }
      },
    })
    upload.start()
    break
  }
  case mode === 'resume': {
    upload = new Upload(data, { ...opts, urlStorage: new FileUrlStorage(store) })
    const previous = await upload.findPreviousUploads()
    if (previous.length === 0) {
      out({ event: 'error', status: 0, message: 'no previous upload in the store' })
      process.exit(0)
    }
    out({ event: 'previous', url: previous[0].uploadUrl })
    upload.resumeFromPreviousUpload(previous[0])
    upload.start()
    break
  }
  case mode === 'terminate':
    upload = new Upload(data, {
      ...opts,
      chunkSize: 256 << 10,
      onChunkComplete (size, accepted) {
        if (upload.terminating) return
        upload.terminating = true
        out({ event: 'accepted', offset: accepted, url: upload.url })
        upload.abort(true).then(
          () => { out({ event: 'terminated', url: upload.url }); process.exit(0) },
          (err) => { out({ event: 'error', status: 0, message: 'terminate: ' + err.message }); process.exit(0) })
      },
    })
    upload.start()
    break
  case mode === 'checksum':
    upload = new Upload(data, {
      ...opts,
      chunkSize: 64 << 10,
      onBeforeRequest (req) {
        if (req.getMethod() === 'PATCH') {
          // The SHA-1 of 20 zero bytes is not the SHA-1 of any chunk here.
          req.setHeader('Upload-Checksum', 'sha1 ' + Buffer.alloc(20).toString('base64'))
        }
      },
    })
    upload.start()
    break
  default:
    out({ event: 'error', status: 0, message: 'unknown mode ' + mode })
}
