// Package web holds meshup's browser library and web app. The files are
// plain ES modules with JSDoc types, with no build step; the rendezvous
// embeds them and serves them:
//
//	/web/meshup.js       the browser library, usable on its own
//	/web/e2e.js          end-to-end encryption (format e2e1), used by both
//	/web/app/...         the web app's modules, styles and vendored code
//	/sw.js               the Service Worker that streams downloads to disk
//	/ and /i/{id}        app/index.html and app/item.html
//
// The browser tests live in test/ (Node, playwright-core) and are run by
// cmd/internal/browser.
package web

import "embed"

// Files holds meshup.js, sw.js and app/. Paths are relative to this
// directory, as in "app/send.js".
//
//go:embed meshup.js e2e.js live.js webm.js sw.js app
var Files embed.FS
