// meshup download Service Worker, served at /sw.js (scope: the whole origin).
//
// A download of item ID is a navigation to /dl/ID?key=KEY. The worker
// answers it with a stream that it fills by fetching /v1/items/ID, so the
// browser writes the bytes to disk as they come and never holds the file in
// memory. When the response ends short (the sender's tab went away: relays
// end the body early, they never pad it) or the item answers 503 (sender
// offline), the worker waits and goes on with Range: bytes=N- from where it
// stopped. It reports progress and state on the BroadcastChannel
// "meshup-downloads" as {key, id, state, received, size, message}, where
// state is running, waiting, done or failed.
//
// Every other request goes to the network untouched.

/// <reference lib="webworker" />

const CHANNEL = 'meshup-downloads';
const PROGRESS_EVERY_MS = 100;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;

const channel = new BroadcastChannel(CHANNEL);

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (ev) => ev.waitUntil(self.clients.claim()));

// A page with a download in progress posts {type: 'keepalive'} now and then:
// handling a message keeps the worker alive while a download waits for its
// sender, with no request in flight.
self.addEventListener('message', (ev) => {
  if (ev.data?.type === 'keepalive') ev.waitUntil(Promise.resolve());
});

self.addEventListener('fetch', (ev) => {
  const url = new URL(ev.request.url);
  const m = url.origin === self.location.origin && url.pathname.match(/^\/dl\/([a-z2-7]{26})$/);
  if (!m || ev.request.method !== 'GET') return;
  ev.respondWith(download(m[1], url.searchParams.get('key') || m[1]));
});

/**
 * Answers a download navigation for item id with a resuming stream.
 * @param {string} id
 * @param {string} key names this download in progress reports
 * @returns {Promise<Response>}
 */
async function download(id, key) {
  let meta;
  try {
    meta = await fetch(`/v1/items/${id}/meta`, { cache: 'no-store' });
  } catch (err) {
    post({ key, id, state: 'failed', received: 0, size: 0, message: `cannot reach the server (${err.message})` });
    return new Response('cannot reach the server\n', { status: 503, headers: { 'Content-Type': 'text/plain' } });
  }
  if (!meta.ok) {
    post({ key, id, state: 'failed', received: 0, size: 0, message: 'no such item' });
    return new Response('no such item\n', { status: 404, headers: { 'Content-Type': 'text/plain' } });
  }
  const item = await meta.json();
  const body = new Download(id, key, item.size);
  return new Response(body.stream, {
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(item.size),
      'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(item.name || id)}`,
      'X-Content-Type-Options': 'nosniff',
    },
  });
}

/** One download: a ReadableStream fed from /v1/items/{id}, resumed by Range. */
class Download {
  /**
   * @param {string} id
   * @param {string} key
   * @param {number} size
   */
  constructor(id, key, size) {
    this.id = id;
    this.key = key;
    this.size = size;
    this.received = 0;
    this.state = 'running';
    this.lastPost = 0;
    this.abort = new AbortController();
    /** @type {ReadableStreamDefaultReader<Uint8Array>|null} */
    this.reader = null;
    this.stream = new ReadableStream({
      pull: (controller) => this.pull(controller),
      cancel: () => {
        this.abort.abort();
        this.report('failed', 'download cancelled');
      },
    });
  }

  /**
   * Enqueues the next chunk, resuming the item as often as it takes.
   * @param {ReadableStreamDefaultController<Uint8Array>} controller
   */
  async pull(controller) {
    let delay = RETRY_MIN_MS;
    for (;;) {
      if (this.received >= this.size) {
        controller.close();
        this.report('done');
        return;
      }
      if (!this.reader) {
        const res = await this.open();
        if (res.error) {
          controller.error(new Error(res.error));
          this.report('failed', res.error);
          return;
        }
        if (res.wait) {
          this.report('waiting', res.wait);
          await sleep(delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
          continue;
        }
      }
      try {
        const { done, value } = await this.reader.read();
        if (done) throw new Error('response ended short');
        this.received += value.byteLength;
        controller.enqueue(value);
        if (this.state !== 'running' || Date.now() - this.lastPost >= PROGRESS_EVERY_MS || this.received >= this.size) {
          this.report('running');
        }
        return;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.reader = null;
        this.report('waiting', `the transfer stopped (${err.message})`);
      }
    }
  }

  /**
   * Requests the item from the current offset.
   * @returns {Promise<{wait?: string, error?: string}>} wait: try again later; error: give up
   */
  async open() {
    const headers = this.received > 0 ? { Range: `bytes=${this.received}-` } : {};
    let res;
    try {
      res = await fetch(`/v1/items/${this.id}`, { headers, cache: 'no-store', signal: this.abort.signal });
    } catch (err) {
      return { wait: `cannot reach the item (${err.message})` };
    }
    if (res.status === 404 || res.status === 410) return { error: 'the item is gone' };
    if (res.status === 503 || res.status === 429 || res.status >= 500) {
      res.body?.cancel();
      return { wait: res.status === 503 ? 'the sender is offline' : `the relay answered ${res.status}` };
    }
    const start = res.status === 206 ? Number(/^bytes (\d+)-/.exec(res.headers.get('Content-Range') ?? '')?.[1]) : 0;
    if ((res.status !== 200 && res.status !== 206) || start !== this.received || !res.body) {
      res.body?.cancel();
      return { error: `unexpected answer ${res.status} at byte ${this.received}` };
    }
    this.reader = res.body.getReader();
    return {};
  }

  /**
   * Posts the download's state to the pages.
   * @param {string} state
   * @param {string} [message]
   */
  report(state, message = '') {
    this.state = state;
    this.lastPost = Date.now();
    post({ key: this.key, id: this.id, state, received: this.received, size: this.size, message });
  }
}

/** @param {object} m */
function post(m) {
  channel.postMessage(m);
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
