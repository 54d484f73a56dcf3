package relay

// tus 1.0 (https://tus.io/protocols/resumable-upload) at /v1/files/, so
// that tus-js-client, Uppy and the other tus clients upload to a relay
// unmodified (issue 11, protocol 4). A thin adapter on the upload core
// (upload.go): a tus upload is an upload, its URL names the upload's
// resume key, and PATCH bodies go to the core's Write as they arrive, so
// the item's readers get them at once and the relay's memory budget paces
// the uploader.
//
//	OPTIONS /v1/files/        Tus-Version, Tus-Extension, Tus-Checksum-Algorithm (and CORS preflight)
//	POST    /v1/files/        creation (Upload-Length or Upload-Defer-Length: 1, Upload-Metadata);
//	                          creation-with-upload when the body is application/offset+octet-stream.
//	                          201, Location: KEY (relative), Upload-Expires, Meshup-Item-URL
//	HEAD    /v1/files/KEY     Upload-Offset, Upload-Length (or Upload-Defer-Length), Upload-Metadata, Upload-Expires
//	PATCH   /v1/files/KEY     Upload-Offset must be the offset; Upload-Checksum: ALG BASE64 (sha1, md5,
//	                          sha256) verifies the body before it is appended (460 on a mismatch);
//	                          Upload-Length declares a deferred length. 204, Upload-Offset, Upload-Expires
//	DELETE  /v1/files/KEY     termination: the upload and its item are dropped
//	GET     /v1/files/KEY     not in tus: the item, with Range, as its download URL serves it,
//	                          after the auth webhook's verdict when there is one (readcheck.go)
//
// Extensions: creation, creation-with-upload, creation-defer-length,
// termination, expiration, checksum. Not concatenation: a meshup item is
// one stream of bytes in order.
//
// Why not tusd's pkg/handler (github.com/tus/tusd/v2 v2.9.1) with a data
// store of ours: it has no checksum extension (no Upload-Checksum
// handling at all) and no expiration extension, both of which issue 11
// asks for; it brings its own limits (MaxSize, NetworkTimeout,
// AcquireLockTimeout), locker, CORS configuration and metrics beside the
// relay's, which STYLE forbids for protocols ("no protocol gets its own
// buffering or its own limits"); and its module pins golang.org/x/exp
// slog and drags the cloud SDKs of its other stores into go.sum. What it
// would save is this file's request parsing.

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/meshup/meshup/proto"
)

// tus protocol constants.
const (
	tusPath       = "/v1/files/"
	tusVersion    = "1.0.0"
	tusExtensions = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum"
	tusChecksums  = "sha1,md5,sha256"
	tusOctets     = "application/offset+octet-stream"

	// tus status codes outside proto.Status.
	tusChecksumMismatch = 460 // tus checksum extension: "Checksum Mismatch"

	// maxTusMetadata bounds the Upload-Metadata header, in bytes.
	maxTusMetadata = 8 << 10
)

// CORS for browsers on another origin (Uppy): every tus header a client
// sends may be sent, and every one it reads is exposed.
const (
	tusAllowMethods  = "POST, HEAD, PATCH, OPTIONS, GET, DELETE"
	tusAllowHeaders  = "Authorization, Origin, X-Requested-With, X-Request-ID, X-HTTP-Method-Override, Content-Type, Upload-Length, Upload-Offset, Tus-Resumable, Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, Range, If-Range"
	tusExposeHeaders = "Upload-Offset, Location, Upload-Length, Tus-Version, Tus-Resumable, Tus-Max-Size, Tus-Extension, Tus-Checksum-Algorithm, Upload-Metadata, Upload-Defer-Length, Upload-Expires, Meshup-Item-URL, Meshup-Share-URL, Content-Range, Accept-Ranges"
)

// tusState is what the tus adapter keeps beside the core's uploads: the
// Upload-Metadata each was created with (HEAD must answer it) and which
// uploads a PATCH is writing (tus allows one at a time).
type tusState struct {
	mu      sync.Mutex // guards the fields below
	uploads map[string]*tusUpload
	pruneAt int // prune gone uploads when the map reaches this size
}

type tusUpload struct {
	metadata string // Upload-Metadata as the client sent it
	busy     bool   // a PATCH is writing
}

// tusEntry returns the adapter's state of key, adding it if add is set.
func (s *Server) tusEntry(key string, add bool) *tusUpload {
	t := &s.ad.tus
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uploads == nil {
		t.uploads = make(map[string]*tusUpload)
		t.pruneAt = 64
	}
	e := t.uploads[key]
	if e == nil && add {
		e = &tusUpload{}
		t.uploads[key] = e
		if len(t.uploads) >= t.pruneAt {
			// Amortised: the map is walked when it has doubled since.
			for k, v := range t.uploads {
				if _, ok := s.upload(k); !ok && !v.busy {
					delete(t.uploads, k)
				}
			}
			t.pruneAt = max(64, 2*len(t.uploads))
		}
	}
	return e
}

// tusAcquire marks key busy with a PATCH; it reports false when one is
// writing already.
func (s *Server) tusAcquire(key string) bool {
	e := s.tusEntry(key, true)
	s.ad.tus.mu.Lock()
	defer s.ad.tus.mu.Unlock()
	if e.busy {
		return false
	}
	e.busy = true
	return true
}

func (s *Server) tusRelease(key string) {
	s.ad.tus.mu.Lock()
	defer s.ad.tus.mu.Unlock()
	if e := s.ad.tus.uploads[key]; e != nil {
		e.busy = false
	}
}

func (s *Server) tusForget(key string) {
	s.ad.tus.mu.Lock()
	defer s.ad.tus.mu.Unlock()
	delete(s.ad.tus.uploads, key)
}

// handleTus serves /v1/files/ and everything under it.
func (s *Server) handleTus(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", tusExposeHeaders)
	h.Add("Vary", "Origin")
	h.Set("Tus-Resumable", tusVersion)
	h.Set("Cache-Control", "no-store")
	key, _ := strings.CutPrefix(r.URL.Path, tusPath)
	if r.URL.Path+"/" == tusPath {
		key = ""
	}
	if strings.Contains(key, "/") {
		tusFail(w, http.StatusNotFound, "no such upload")
		return
	}
	method := r.Method
	if m := r.Header.Get("X-HTTP-Method-Override"); m != "" && method == http.MethodPost {
		method = strings.ToUpper(m)
	}
	if method == http.MethodOptions {
		s.tusOptions(w, r)
		return
	}
	if method != http.MethodGet && r.Header.Get("Tus-Resumable") != tusVersion {
		h.Set("Tus-Version", tusVersion)
		tusFail(w, http.StatusPreconditionFailed, "Tus-Resumable must be "+tusVersion)
		return
	}
	switch {
	case key == "" && method == http.MethodPost:
		s.tusCreate(w, r)
	case key == "":
		h.Set("Allow", "POST, OPTIONS")
		tusFail(w, http.StatusMethodNotAllowed, "method not allowed on the tus endpoint")
	case method == http.MethodHead:
		s.tusHead(w, key)
	case method == http.MethodPatch:
		s.tusPatch(w, r, key)
	case method == http.MethodDelete:
		s.tusDelete(w, key)
	case method == http.MethodGet:
		s.tusGet(w, r, key)
	default:
		h.Set("Allow", "HEAD, PATCH, DELETE, GET, OPTIONS")
		tusFail(w, http.StatusMethodNotAllowed, "method not allowed on a tus upload")
	}
}

// tusOptions answers a CORS preflight or a tus discovery request.
func (s *Server) tusOptions(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", tusAllowMethods)
		h.Set("Access-Control-Allow-Headers", tusAllowHeaders)
		h.Set("Access-Control-Max-Age", "86400")
	}
	h.Set("Tus-Version", tusVersion)
	h.Set("Tus-Extension", tusExtensions)
	h.Set("Tus-Checksum-Algorithm", tusChecksums)
	// No Tus-Max-Size: a relay has no size limit of its own (uploads
	// over --upload-hold stream); the auth webhook's limit for one
	// upload is answered 413 at creation or when a PATCH passes it.
	w.WriteHeader(http.StatusNoContent)
}

// tusCreate serves POST: creation, with creation-with-upload.
func (s *Server) tusCreate(w http.ResponseWriter, r *http.Request) {
	size := int64(-1)
	switch l, d := r.Header.Get("Upload-Length"), r.Header.Get("Upload-Defer-Length"); {
	case l != "" && d != "":
		tusFail(w, http.StatusBadRequest, "Upload-Length and Upload-Defer-Length are exclusive")
		return
	case l != "":
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 {
			tusFail(w, http.StatusBadRequest, "Upload-Length is not a non-negative integer")
			return
		}
		size = n
	case d != "1":
		tusFail(w, http.StatusBadRequest, "Upload-Length or Upload-Defer-Length: 1 is required")
		return
	}
	if r.Header.Get("Upload-Concat") != "" {
		tusFail(w, http.StatusBadRequest, "the concatenation extension is not supported")
		return
	}
	raw := r.Header.Get("Upload-Metadata")
	meta, err := parseTusMetadata(raw)
	if err != nil {
		tusFail(w, http.StatusBadRequest, err.Error())
		return
	}
	spec := uploadSpec{
		Protocol: proto.UploadTUS,
		Name:     firstOf(meta, "filename", "name"),
		MIME:     firstOf(meta, "filetype", "type", "contentType"),
		Size:     size,
		Auth:     map[string]string{},
		Meta:     meta,
		Client:   r.RemoteAddr,
	}
	if a := r.Header.Get("Authorization"); a != "" {
		spec.Auth["authorization"] = a
	}
	for k, v := range meta {
		spec.Auth["tus."+k] = v
	}
	u, err := s.createUpload(r.Context(), spec)
	if err != nil {
		s.tusWriteErr(w, err)
		return
	}
	e := s.tusEntry(u.Key(), true)
	s.ad.tus.mu.Lock()
	e.metadata = raw
	s.ad.tus.mu.Unlock()
	s.ad.stats.tusCreated.Add(1)

	h := w.Header()
	// Relative to the creation URL, so that it stays under whatever
	// prefix the client reached the relay with (the rendezvous tunnel's
	// /v1/relays/{id}/ included).
	loc := u.Key()
	if !strings.HasSuffix(r.URL.Path, "/") {
		loc = "files/" + loc
	}
	h.Set("Location", loc)
	tusInfoHeaders(h, u)
	if r.Header.Get("Content-Type") == tusOctets && r.ContentLength != 0 {
		// creation-with-upload: the body is the first PATCH.
		if !s.tusAcquire(u.Key()) {
			tusFail(w, http.StatusLocked, "upload is being written")
			return
		}
		defer s.tusRelease(u.Key())
		if err := s.tusAppend(r, u); err != nil {
			if errors.Is(err, errTusGone) {
				return // the client went away; it resumes with HEAD
			}
			s.tusWriteErr(w, err)
			return
		}
	}
	h.Set("Upload-Offset", strconv.FormatInt(u.Offset(), 10))
	tusInfoHeaders(h, u)
	w.WriteHeader(http.StatusCreated)
}

// tusHead serves HEAD: the upload's offset and length.
func (s *Server) tusHead(w http.ResponseWriter, key string) {
	u, ok := s.tusLookup(w, key)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("Upload-Offset", strconv.FormatInt(u.Offset(), 10))
	if e := s.tusEntry(key, false); e != nil {
		s.ad.tus.mu.Lock()
		if e.metadata != "" {
			h.Set("Upload-Metadata", e.metadata)
		}
		s.ad.tus.mu.Unlock()
	}
	tusInfoHeaders(h, u)
	w.WriteHeader(http.StatusOK)
}

// tusPatch serves PATCH: bytes appended at Upload-Offset.
func (s *Server) tusPatch(w http.ResponseWriter, r *http.Request, key string) {
	u, ok := s.tusLookup(w, key)
	if !ok {
		return
	}
	if r.Header.Get("Content-Type") != tusOctets {
		tusFail(w, http.StatusUnsupportedMediaType, "Content-Type must be "+tusOctets)
		return
	}
	off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || off < 0 {
		tusFail(w, http.StatusBadRequest, "Upload-Offset is not a non-negative integer")
		return
	}
	if !s.tusAcquire(key) {
		// tus-js-client retries a 423.
		tusFail(w, http.StatusLocked, "upload is being written by another request")
		return
	}
	defer s.tusRelease(key)
	if got := u.Offset(); off != got {
		tusFail(w, http.StatusConflict, fmt.Sprintf("Upload-Offset %d, but the upload is at %d", off, got))
		return
	}
	if l := r.Header.Get("Upload-Length"); l != "" {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 {
			tusFail(w, http.StatusBadRequest, "Upload-Length is not a non-negative integer")
			return
		}
		if err := u.SetSize(n); err != nil {
			s.tusWriteErr(w, err)
			return
		}
	}
	if err := s.tusAppend(r, u); err != nil {
		if errors.Is(err, errTusGone) {
			return
		}
		s.tusWriteErr(w, err)
		return
	}
	h := w.Header()
	h.Set("Upload-Offset", strconv.FormatInt(u.Offset(), 10))
	tusInfoHeaders(h, u)
	w.WriteHeader(http.StatusNoContent)
}

// tusDelete serves DELETE: termination.
func (s *Server) tusDelete(w http.ResponseWriter, key string) {
	u, ok := s.upload(key)
	if !ok {
		tusFail(w, http.StatusNotFound, "no such upload")
		return
	}
	u.Terminate()
	s.tusForget(key)
	s.ad.stats.tusTerminated.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// tusGet serves GET, which tus does not define: the upload URL reads the
// item, with Range, while it arrives too, served here as its download
// URL's relay serves it (serveHeld). Served, not redirected: a redirect's
// Location does not pass the tunnel into relays behind NAT. Like a read of
// the download URL, it is a read the application has its say on: when
// the rendezvous has an auth webhook, the relay asks it first
// (checkHeldRead, readcheck.go) and answers 403 or 503 on a no.
func (s *Server) tusGet(w http.ResponseWriter, r *http.Request, key string) {
	u, ok := s.tusLookup(w, key)
	if !ok {
		return
	}
	if perr := s.checkHeldRead(r, u); perr != nil {
		if perr.Status != proto.StatusCancelled {
			writeError(w, perr)
		}
		return
	}
	h := w.Header()
	h.Del("Cache-Control")
	h.Set("Access-Control-Expose-Headers", tusExposeHeaders+", Content-Disposition, ETag")
	s.serveHeld(w, r, u, proto.Claims{})
}

// tusLookup finds the upload of key, or answers 404 or the upload's error.
func (s *Server) tusLookup(w http.ResponseWriter, key string) (*upload, bool) {
	u, ok := s.upload(key)
	if !ok {
		tusFail(w, http.StatusNotFound, "no such upload")
		return nil, false
	}
	if err := u.Err(); err != nil {
		s.tusWriteErr(w, err)
		return nil, false
	}
	return u, true
}

// errTusGone is tusAppend's error when the client went away mid-body: the
// bytes that arrived are kept, and it resumes from them.
var errTusGone = errors.New("tus client went away")

// errTusChecksum is a PATCH body that does not match its Upload-Checksum.
var errTusChecksum = errors.New("checksum mismatch")

// tusAppend appends the body of r to u and finishes u when every byte of
// its known size arrived. A body with Upload-Checksum is read whole
// (at most MaxChunk bytes) and verified before it is appended; any other
// streams to the core as it arrives.
func (s *Server) tusAppend(r *http.Request, u *upload) error {
	var err error
	if c := r.Header.Get("Upload-Checksum"); c != "" {
		err = s.tusAppendChecked(r, u, c)
	} else {
		err = s.tusAppendStream(r, u)
	}
	if err != nil {
		return err
	}
	if n := u.Size(); n >= 0 && u.Offset() == n && !u.Done() {
		if err := u.Finish(); err != nil {
			return err
		}
		s.ad.stats.tusDone.Add(1)
	}
	return nil
}

func (s *Server) tusAppendStream(r *http.Request, u *upload) error {
	buf := s.pool.get(32 << 10)
	defer s.pool.put(buf)
	for {
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			if _, err := u.Write(r.Context(), buf[:n]); err != nil {
				if r.Context().Err() != nil {
					return errTusGone
				}
				return err
			}
			s.ad.stats.tusBytes.Add(int64(n))
		}
		switch {
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			if isTimeout(rerr) {
				s.log.Debug("tus body too slow", "upload", u.Key(), "err", rerr)
			}
			return errTusGone
		}
	}
}

func (s *Server) tusAppendChecked(r *http.Request, u *upload, header string) error {
	alg, sum, ok := strings.Cut(header, " ")
	var h hash.Hash
	switch alg {
	case "sha1":
		h = sha1.New()
	case "md5":
		h = md5.New()
	case "sha256":
		h = sha256.New()
	default:
		return tusErr(http.StatusBadRequest, fmt.Sprintf("checksum algorithm %q is not supported (%s)", alg, tusChecksums))
	}
	want, err := base64.StdEncoding.DecodeString(sum)
	if !ok || err != nil || len(want) != h.Size() {
		return tusErr(http.StatusBadRequest, "Upload-Checksum is not ALGORITHM BASE64-DIGEST")
	}
	max := s.cfg.Adapters.MaxChunk
	if r.ContentLength > int64(max) {
		return tusErr(http.StatusRequestEntityTooLarge, fmt.Sprintf("a PATCH with Upload-Checksum is over %d bytes", max))
	}
	buf := s.pool.get(max + 1)
	defer s.pool.put(buf)
	n, err := io.ReadFull(r.Body, buf)
	switch {
	case n > max:
		return tusErr(http.StatusRequestEntityTooLarge, fmt.Sprintf("a PATCH with Upload-Checksum is over %d bytes", max))
	case err != io.ErrUnexpectedEOF && err != io.EOF:
		return errTusGone
	case r.ContentLength > 0 && int64(n) != r.ContentLength:
		return errTusGone
	}
	h.Write(buf[:n])
	if subtle.ConstantTimeCompare(h.Sum(nil), want) != 1 {
		s.ad.stats.tusChecksumFailed.Add(1)
		return errTusChecksum
	}
	if _, err := u.Write(r.Context(), buf[:n]); err != nil {
		if r.Context().Err() != nil {
			return errTusGone
		}
		return err
	}
	s.ad.stats.tusBytes.Add(int64(n))
	return nil
}

// tusInfoHeaders sets the headers that describe u on every answer.
func tusInfoHeaders(h http.Header, u *upload) {
	in := u.Info()
	if in.Size >= 0 {
		h.Set("Upload-Length", strconv.FormatInt(in.Size, 10))
		h.Del("Upload-Defer-Length")
	} else {
		h.Set("Upload-Defer-Length", "1")
	}
	if !in.Expires.IsZero() {
		h.Set("Upload-Expires", in.Expires.UTC().Format(http.TimeFormat))
	}
	if in.DownloadURL != "" {
		h.Set("Meshup-Item-URL", in.DownloadURL)
	}
	if in.ShareURL != "" {
		h.Set("Meshup-Share-URL", in.ShareURL)
	}
}

// tusError is an answer of a tus status that proto.Status does not have.
type tusError struct {
	code int
	msg  string
}

func (e *tusError) Error() string { return e.msg }

func tusErr(code int, msg string) error { return &tusError{code, msg} }

// tusWriteErr answers err: a tus status, a checksum mismatch (460), or a
// proto.Error from the core with its HTTP status.
func (s *Server) tusWriteErr(w http.ResponseWriter, err error) {
	var te *tusError
	var pe *proto.Error
	switch {
	case errors.As(err, &te):
		tusFail(w, te.code, te.msg)
	case errors.Is(err, errTusChecksum):
		tusFail(w, tusChecksumMismatch, "checksum mismatch: the body does not match Upload-Checksum")
	case errors.As(err, &pe):
		writeError(w, pe)
	default:
		s.log.Warn("tus upload failed", "err", err)
		writeError(w, proto.Errorf(proto.StatusInternal, "upload failed"))
	}
}

// tusFail answers code with a JSON error body like writeError's.
func tusFail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, "{\"status\":%d,\"error\":%s}\n", tusStatus(code), strconv.Quote(msg))
}

// tusStatus maps an HTTP status of the tus adapter to the proto.Status of
// its body.
func tusStatus(code int) proto.Status {
	switch code {
	case http.StatusNotFound:
		return proto.StatusNotFound
	case http.StatusRequestEntityTooLarge:
		return proto.StatusTooLarge
	case http.StatusConflict, http.StatusLocked:
		return proto.StatusConflict
	case http.StatusPreconditionFailed, http.StatusMethodNotAllowed:
		return proto.StatusProtocol
	default:
		return proto.StatusMalformed
	}
}

// parseTusMetadata decodes Upload-Metadata: comma-separated pairs of a key
// and, after a space, its value in base64 (the value may be absent).
func parseTusMetadata(h string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(h) == "" {
		return m, nil
	}
	if len(h) > maxTusMetadata {
		return nil, fmt.Errorf("Upload-Metadata is over %d bytes", maxTusMetadata)
	}
	for pair := range strings.SplitSeq(h, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(pair), " ")
		if k == "" || strings.ContainsAny(k, " \t") {
			return nil, errors.New("Upload-Metadata has an empty or invalid key")
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("Upload-Metadata has key %q twice", k)
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("Upload-Metadata value of %q is not base64", k)
		}
		m[k] = string(b)
	}
	return m, nil
}

func firstOf(m map[string]string, keys ...string) string {
	for _, k := range keys {
		if v := m[k]; v != "" {
			return v
		}
	}
	return ""
}
