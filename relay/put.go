package relay

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshup/meshup/internal/httptunnel"
	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

// Resumable PUT with Content-Range (issue 11, protocol 3), as
// node-s3-resumable-upload, YouTube and Vimeo clients speak it, at
// /v1/upload/{name}. A thin adapter on the upload core (upload.go).
//
//	PUT /v1/upload/cat.mp4                 starts an upload of Content-Length
//	Content-Type: video/mp4                bytes (or of unknown size with a
//	Content-Length: 1000                   chunked body: complete at its end)
//	  -> 103 Early Hints with Meshup-Item-URL and Meshup-Upload-URL at once
//	  -> 201 {"share","url","expires","id","size"}, Location: the download URL
//	  (the connection dropped: the bytes received are kept until expiry)
//	PUT /v1/upload/cat.mp4                 asks how far the upload got
//	Content-Range: bytes */1000  (or */*)
//	  -> 308, Range: bytes=0-399 (no Range when nothing arrived)
//	PUT /v1/upload/cat.mp4                 resumes at any byte offset
//	Content-Range: bytes 400-999/1000      (bytes the relay holds already are
//	                                        skipped; a start past them is 416)
//	  -> 201 as above, or 308 with Range while bytes are missing
//
// A first PUT may carry Content-Range bytes 0-B/TOTAL (or /*: the total
// is unknown until a later range names it) to upload in chunks.
//
// Which upload a PUT continues. Every answer names the upload's own URL in
// Meshup-Upload-URL: /v1/upload/{name}?upload_id=KEY with an unguessable
// key. A PUT with upload_id continues that upload, whoever sends it: the
// key is the capability. A PUT on the plain path continues the upload
// started on the same path by the same client: the same source IP (as
// the relay sees it, or as the tunnel that carried the request tells it
// in X-Forwarded-For) and the same Authorization header. Another client
// cannot take it over unless it shares both the address and the
// credentials; a client that shares its address with strangers (a
// carrier NAT, a proxy) and sends no Authorization should resume with
// the upload URL. A plain PUT without Content-Range always starts a new
// upload; the one it replaces stays readable until it expires.

// putExpose lists the headers a browser may read from a PUT answer.
const putExpose = "Range, Location, Meshup-Upload-URL, Meshup-Item-URL, Content-Length"

// putAnswer is the JSON body of a PUT's 201 (and of its 308, for clients
// that read bodies).
type putAnswer struct {
	ID        proto.ItemID `json:"id"`
	Share     string       `json:"share"`
	URL       string       `json:"url"`
	UploadURL string       `json:"upload_url"`
	Expires   string       `json:"expires"` // RFC 3339
	Size      int64        `json:"size"`    // -1 while unknown
	Received  int64        `json:"received"`
}

// contentRange is a parsed request Content-Range: bytes first-last/total,
// or bytes */total (a query). total is -1 for "*".
type contentRange struct {
	query       bool
	first, last int64
	total       int64
}

// parseContentRange parses a request's Content-Range (RFC 9110 14.4, with
// the "bytes */*" query of resumable uploads).
func parseContentRange(h string) (contentRange, error) {
	cr := contentRange{total: -1}
	rest, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
	if !ok {
		return cr, errors.New("Content-Range must begin with \"bytes \"")
	}
	rng, total, ok := strings.Cut(strings.TrimSpace(rest), "/")
	if !ok {
		return cr, errors.New("Content-Range has no /total")
	}
	if total != "*" {
		n, err := strconv.ParseInt(total, 10, 64)
		if err != nil || n < 0 {
			return cr, fmt.Errorf("Content-Range total %.20q is not a size", total)
		}
		cr.total = n
	}
	if rng == "*" {
		cr.query = true
		return cr, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || first < 0 || last < first || cr.total >= 0 && last >= cr.total {
		return cr, fmt.Errorf("Content-Range %.40q is not a valid byte range", rng)
	}
	cr.first, cr.last = first, last
	return cr, nil
}

// clientIP returns the uploader's IP: the request's source, or for a
// request that came through a tunnel (its source is a mesh stream, not an
// IP) the address the tunnel's proxy set in X-Forwarded-For.
func clientIP(r *http.Request) string {
	if ip, ok := srclimit.SourceIP(r.RemoteAddr); ok {
		return ip.String()
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return ""
	}
	last := xff[len(xff)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.TrimSpace(last)
}

// putAlias is the name a plain-path PUT finds its upload by.
func putAlias(r *http.Request, name string) string {
	h := sha256.New()
	fmt.Fprintf(h, "put\x00%s\x00%s\x00%s", clientIP(r), name, r.Header.Get("Authorization"))
	return hex.EncodeToString(h.Sum(nil))
}

// handlePut serves PUT (and the CORS preflight OPTIONS) of
// /v1/upload/{name}.
func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", putExpose)
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "PUT, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Content-Type, Content-Range, Authorization")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	name := r.PathValue("name")
	var cr *contentRange
	if v := r.Header.Get("Content-Range"); v != "" {
		c, err := parseContentRange(v)
		if err != nil {
			writeError(w, proto.Errorf(proto.StatusMalformed, "%v", err))
			return
		}
		cr = &c
	}
	alias := putAlias(r, name)
	var u *upload
	if key := r.URL.Query().Get("upload_id"); key != "" {
		if u = s.store.byKey(key); u == nil || u.protocol != proto.UploadPUT {
			writeError(w, proto.Errorf(proto.StatusNotFound, "no upload %.40q: it expired, was never made, or is not a PUT upload", key))
			return
		}
	} else if cr != nil {
		u = s.store.byAlias(alias)
	}

	if cr != nil && cr.query {
		if u == nil {
			// Nothing arrived: the client starts at byte 0.
			w.WriteHeader(http.StatusPermanentRedirect)
			return
		}
		s.putState(w, r, u)
		return
	}

	start := int64(0)
	if cr != nil {
		start = cr.first
		if n := cr.last - cr.first + 1; r.ContentLength >= 0 && r.ContentLength != n {
			writeError(w, proto.Errorf(proto.StatusMalformed, "Content-Length %d does not match Content-Range of %d bytes", r.ContentLength, n))
			return
		}
	}
	if u == nil {
		if start != 0 {
			writeError(w, proto.Errorf(proto.StatusNotFound, "no upload of %.80q to resume: start at byte 0", name))
			return
		}
		size := int64(-1)
		switch {
		case cr != nil:
			size = cr.total
		case r.ContentLength >= 0:
			size = r.ContentLength
		}
		auth := map[string]string(nil)
		if a := r.Header.Get("Authorization"); a != "" {
			auth = map[string]string{"authorization": a}
		}
		var err error
		u, err = s.createUpload(r.Context(), uploadSpec{
			Protocol: proto.UploadPUT, Name: name, MIME: r.Header.Get("Content-Type"), Size: size,
			Auth: auth, Client: r.RemoteAddr,
		})
		if err != nil {
			writeError(w, asProtoError(err))
			return
		}
		s.store.setAlias(alias, u)
		s.log.Info("PUT upload started", "item", u.id, "size", size, "peer", r.RemoteAddr)
		// The item can be read while it arrives, and an upload larger
		// than the relay holds waits for readers: an informational 103
		// names the item and the upload URL now, before the final
		// answer (HTTP/1.1 clients must accept 1xx answers, RFC 9110
		// 15.2; the same headers come again in the final one).
		s.setPutHeaders(w, r, u)
		w.WriteHeader(http.StatusEarlyHints)
	}
	if cr != nil && cr.total >= 0 && u.Size() != cr.total {
		if err := u.SetSize(cr.total); err != nil {
			writeError(w, asProtoError(err))
			return
		}
	}
	if err := u.Err(); err != nil {
		writeError(w, asProtoError(err))
		return
	}
	off := u.Offset()
	if u.Done() {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		s.putState(w, r, u)
		return
	}
	if start > off {
		s.setPutHeaders(w, r, u)
		if off > 0 {
			h.Set("Range", fmt.Sprintf("bytes=0-%d", off-1))
		}
		writeError(w, proto.Errorf(proto.StatusConflict, "upload has %d bytes: resume at byte %d, not %d", off, off, start))
		return
	}
	// Bytes the relay holds already are skipped: a client may resume
	// from an older offset.
	if skip := off - start; skip > 0 {
		if n, _ := io.CopyN(io.Discard, r.Body, skip); n < skip {
			s.putState(w, r, u)
			return
		}
	}
	buf := s.pool.get(heldChunk)
	defer s.pool.put(buf)
	for {
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			if _, err := u.Write(r.Context(), buf[:n]); err != nil {
				if r.Context().Err() != nil {
					return // the uploader went away: it may resume
				}
				pe := asProtoError(err)
				if pe.Status == proto.StatusTooLarge {
					u.Abort(err)
				}
				writeError(w, pe)
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The uploader went away mid-body: what arrived is kept
			// for a resume until the upload expires.
			s.log.Info("PUT upload interrupted; kept for a resume", "item", u.id, "offset", u.Offset(), "err", rerr)
			if errors.Is(rerr, srclimit.ErrSlowBody) {
				// A stalled uploader that still listens is told
				// why (408), where to resume, and the connection
				// closes.
				s.setPutHeaders(w, r, u)
				w.Header().Set("Connection", "close")
				writeError(w, proto.Errorf(proto.StatusTimeout, "%v; resume at byte %d", rerr, u.Offset()))
			}
			return
		}
	}
	size := u.Size()
	if size < 0 && cr == nil {
		u.SetSize(u.Offset()) // a chunked body of unknown length: complete at its end
		size = u.Offset()
	}
	if size >= 0 && u.Offset() == size {
		if err := u.Finish(); err != nil {
			writeError(w, asProtoError(err))
			return
		}
		s.log.Info("PUT upload complete", "item", u.id, "size", size)
	}
	s.putState(w, r, u)
}

// setPutHeaders sets the headers every answer about u carries.
func (s *Server) setPutHeaders(w http.ResponseWriter, r *http.Request, u *upload) {
	w.Header().Set("Meshup-Upload-URL", s.putUploadURL(r, u))
	w.Header().Set("Meshup-Item-URL", u.info.DownloadURL)
	w.Header().Set("Cache-Control", "no-store")
}

// putUploadURL returns the URL that names upload u for resumes: under
// the base the request came to (the relay's own URL, or the tunnel's).
func (s *Server) putUploadURL(r *http.Request, u *upload) string {
	base := s.cfg.PublicURL
	if fwd := r.Header.Get("X-Forwarded-Host"); fwd != "" {
		if _, ok := srclimit.SourceIP(r.RemoteAddr); !ok {
			// Through a tunnel (the rendezvous's or a public relay's):
			// the uploader knows this relay by the tunnel's URL.
			scheme := r.Header.Get("X-Forwarded-Proto")
			if scheme != "https" {
				scheme = "http"
			}
			base = scheme + "://" + fwd + httptunnel.Prefix + s.id
		}
	}
	return base + "/v1/upload/" + url.PathEscape(u.name) + "?upload_id=" + u.key
}

// putState answers with u's state: 201 with its URLs when complete, 308
// with the Range received while not, or its error.
func (s *Server) putState(w http.ResponseWriter, r *http.Request, u *upload) {
	if err := u.Err(); err != nil && !u.Done() {
		writeError(w, asProtoError(err))
		return
	}
	s.setPutHeaders(w, r, u)
	in := u.Info()
	ans := putAnswer{
		ID: in.ID, Share: in.ShareURL, URL: in.DownloadURL, UploadURL: s.putUploadURL(r, u),
		Expires: in.Expires.UTC().Format(time.RFC3339), Size: in.Size, Received: in.Offset,
	}
	b, _ := json.Marshal(ans)
	w.Header().Set("Content-Type", "application/json")
	if u.Done() {
		w.Header().Set("Location", in.DownloadURL)
		w.WriteHeader(http.StatusCreated)
		w.Write(append(b, '\n'))
		return
	}
	if in.Offset > 0 {
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", in.Offset-1))
	}
	w.WriteHeader(http.StatusPermanentRedirect)
	w.Write(append(b, '\n'))
}
