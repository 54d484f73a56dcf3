package rendezvous

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/meshup/meshup/client/web"
	"github.com/meshup/meshup/internal/units"
	"github.com/meshup/meshup/proto"
)

// The web app (client/web) is served from the binary: the sender at /, an
// item's page at /i/{id}, a live channel's page at /l/{id}, the library and the app's modules under /web/,
// and the download Service Worker at /sw.js so that its scope is the whole
// origin.

// webFile is one embedded file, ready to serve.
type webFile struct {
	body  []byte
	ctype string
	etag  string
}

// loadWebFiles reads every embedded file of the web app, keyed by its
// path under /web/.
func loadWebFiles() (map[string]webFile, error) {
	files := make(map[string]webFile)
	err := fs.WalkDir(web.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(web.Files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js", ".mjs":
			ctype = "text/javascript; charset=utf-8"
		case "":
			ctype = "text/plain; charset=utf-8"
		}
		files[p] = webFile{body: body, ctype: ctype, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return files, err
}

// pageTmpl renders app/item.html, the page of an item (GET /i/{id}).
var pageTmpl = template.Must(template.ParseFS(web.Files, "app/item.html"))

// pageData is what pageTmpl shows. The page's script reads the item's
// metadata from data attributes; no script is inline.
type pageData struct {
	Found     bool
	ID        string
	Kind      string
	Name      string
	Size      int64
	HumanSize string
	MIME      string
	Online    bool
	IsMessage bool
	Text      string
	Download  string
	Enc       string // proto.E2EVersion for an encrypted item: the page decrypts its metadata
	// Pending is set for an id the rendezvous does not know just after it
	// restarted (Config.ReclaimGrace): its publisher may yet reclaim it.
	Pending bool
}

// handlePage serves the page of an item.
func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	var d pageData
	code := http.StatusNotFound
	if id, err := proto.ParseItemID(r.PathValue("id")); err == nil {
		v, ok := s.lookupItem(id)
		if !ok && s.missingItem(id).Status == proto.StatusOffline {
			code, d.Pending = http.StatusServiceUnavailable, true
			w.Header().Set("Retry-After", retryOffline)
		}
		if ok {
			code = http.StatusOK
			d = pageData{
				Found:     true,
				ID:        id.String(),
				Kind:      v.kind,
				Name:      v.name,
				Size:      v.size,
				HumanSize: units.Format(v.size),
				MIME:      v.mime,
				Online:    v.online || v.kind == proto.KindMessage,
				IsMessage: v.kind == proto.KindMessage,
				Text:      v.text,
				Download:  "/v1/items/" + id.String(),
				Enc:       v.enc,
			}
		}
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		s.log.Error("render item page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.writePageHeaders(w)
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// handleLivePage serves the page of a sealed live channel (GET /l/{id},
// app/live.html): the page reads the channel id from its URL and the key
// from the fragment, and reads the channel itself (GET /v1/live/{id}).
// Whether the channel is live is the page's to find out: the rendezvous
// knows channels only once their relay announced them.
func (s *Server) handleLivePage(w http.ResponseWriter, r *http.Request) {
	f, ok := s.web["app/live.html"]
	if _, err := proto.ParseItemID(r.PathValue("id")); err != nil || !ok {
		writeError(w, 0, proto.StatusNotFound, "no such live channel")
		return
	}
	s.writePageHeaders(w)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// handleIndex serves the sender's page, app/index.html.
func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	f, ok := s.web["app/index.html"]
	if !ok {
		http.NotFound(w, r)
		return
	}
	s.writePageHeaders(w)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// writePageHeaders sets the headers of an HTML page of the app. Scripts
// come from this origin only and never inline. Relays are on other origins:
// the page pushes to them (connect-src) and previews items they serve
// (media-src, img-src), so the live relays' origins are listed; a relay
// that registers later is usable by pages loaded after it.
func (s *Server) writePageHeaders(w http.ResponseWriter) {
	httpOrigins, wsOrigins := s.relayOrigins()
	relays := strings.Join(httpOrigins, " ")
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data: blob: " + relays,
		"media-src 'self' blob: " + relays,
		"connect-src 'self' " + relays + " " + strings.Join(wsOrigins, " "),
		"worker-src 'self'",
		"frame-src 'self'", // downloads run in a hidden frame, through the Service Worker
		"manifest-src 'self'",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; "))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// handleWeb serves the library and the app's files under /web/.
func (s *Server) handleWeb(w http.ResponseWriter, r *http.Request) {
	s.serveWebFile(w, r, r.PathValue("path"))
}

// libraryFiles are the files of the browser library, served under the
// versioned path /web/v1/ as well as /web/. meshup.js imports ./e2e.js, so
// both are there.
var libraryFiles = map[string]bool{"meshup.js": true, "e2e.js": true, "live.js": true, "webm.js": true}

// handleWebV1 serves the browser library at /web/v1/meshup.js: the path
// pages on other sites import, kept for as long as the library's API is
// version 1.
func (s *Server) handleWebV1(w http.ResponseWriter, r *http.Request) {
	f := r.PathValue("file")
	if !libraryFiles[f] {
		writeError(w, 0, proto.StatusNotFound, "no such file")
		return
	}
	s.serveWebFile(w, r, f)
}

// withCORS lets any origin read what h serves (proto.SetPublicCORS): the
// library, /v1/info, item metadata and redirects are public or read with
// capabilities in the URL, never with cookies.
func withCORS(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		proto.SetPublicCORS(w.Header())
		h(w, r)
	}
}

// handleServiceWorker serves sw.js at the root, so that its scope covers
// the download URLs (/dl/...). Its policy lets it fetch items from any
// relay: it outlives the page that installed it, and relays come and go.
func (s *Server) handleServiceWorker(w http.ResponseWriter, r *http.Request) {
	// script-src: the worker is a module and imports /web/e2e.js.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self' http: https:")
	s.serveWebFile(w, r, "sw.js")
}

func (s *Server) serveWebFile(w http.ResponseWriter, r *http.Request, p string) {
	f, ok := s.web[p]
	if !ok || strings.HasSuffix(p, ".html") {
		writeError(w, 0, proto.StatusNotFound, "no such file")
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	// Revalidate every time: the files change with the binary, and an
	// ETag answer costs one round trip.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}
