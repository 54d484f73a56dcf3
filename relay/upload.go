package relay

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/meshup/meshup/proto"
)

// The API the legacy upload protocols are adapters on (issue 11): STOR/DATA
// over WebSocket (stor.go), resumable PUT (put.go), socket.io chunks and
// tus. An adapter
//
//  1. calls createUpload with what the uploader said (uploadSpec): the
//     relay asks the rendezvous for an item (proto.Hold), which asks the
//     auth webhook, and answers with the item's id, URLs and expiry
//     (proto.Held), or refuses with a *proto.Error the adapter maps to
//     its protocol;
//  2. appends the bytes with Write, in order; Write waits while the
//     relay's memory is full or a streamed upload is a window ahead of its
//     readers, and fails past the declared size;
//  3. calls Finish when every byte arrived (it checks the count), or
//     Abort when the upload failed (readers see the reason; nothing
//     half-received is ever served as complete), or Terminate to delete it
//     (tus termination).
//
// A resumable protocol keeps going after a dropped connection: it finds
// the upload again by its resume key (Server.upload(key)) and continues at
// Offset(). An upload that is neither finished nor resumed is dropped at
// its expiry.
//
// Every method of *upload is safe for concurrent use; Write calls must
// not overlap (one uploader at a time: adapters serialise resumes).

// uploadSpec is what an uploader said about its upload.
type uploadSpec struct {
	Protocol string // one of proto.Upload*
	Name     string // file name, may be empty
	MIME     string // media type; empty means application/octet-stream
	Size     int64  // bytes; -1 while not yet known (tus Upload-Defer-Length)
	// Auth holds the credentials the uploader presented, passed to the
	// rendezvous's auth webhook: "authorization" (the Authorization
	// header), "login" and "password" (STOR AUTH), tus metadata as
	// "tus.<key>".
	Auth map[string]string
	// Meta is the upload's own metadata (STOR parameters, tus metadata),
	// passed to the webhook too.
	Meta map[string]string
	// Client is the uploader's address (http.Request.RemoteAddr).
	Client string
}

// uploadInfo is what an adapter tells the uploader about its upload.
type uploadInfo struct {
	ID          proto.ItemID
	ShareURL    string // the item's page on the rendezvous
	DownloadURL string // GET with Range, while the upload runs too
	Expires     time.Time
	Size        int64 // -1 while unknown
	Offset      int64 // bytes received
	// MaxSize is the largest size the upload may reach, 0 if no limit
	// was set (the auth webhook may set one).
	MaxSize int64
	// Meta is metadata the auth webhook attached.
	Meta map[string]string
}

// upload is an upload received by this relay and the held item it
// becomes (store.go).
type upload struct {
	s        *Server
	id       proto.ItemID
	owner    string // the owner secret: re-announces the item (proto.Hold)
	key      string // resume key
	alias    string // another name an adapter finds it by (store.setAlias); guarded by store.mu
	protocol string
	name     string
	mime     string
	created  time.Time
	info     uploadInfo // URLs and limits from Held; immutable

	wmu sync.Mutex // serialises writers

	mu       sync.Mutex    // guards the fields below
	wake     chan struct{} // closed and replaced on every change (broadcast)
	size     int64         // -1 while unknown
	base     int64         // offset of chunks[0]'s first byte
	chunks   [][]byte      // heldChunk bytes each but the last
	end      int64         // bytes arrived
	reserved int64         // budget bytes held by chunks
	done     bool          // every byte arrived
	err      error         // failed or removed: readers see it
	gone     bool          // out of the store
	expires  time.Time
	readers  int
	rdrs     map[*reader]struct{}
	everRead bool
	lastUsed time.Time

	// Clips (clip.go, issue 12): whole keeps every byte until expiry
	// whatever the size (never streamed through a window); token is the
	// store token the clip arrived under, shown when re-announcing it.
	whole bool
	token string
}

// Limits of what an uploader may say, checked by createUpload.
const (
	maxUploadName = 1024 // bytes of a file name
	maxUploadMIME = 256  // bytes of a media type
	maxUploadAuth = 16 << 10
)

// createUpload asks the rendezvous for an item for a new upload described
// by spec, and returns it. It blocks until the rendezvous answers (its
// auth webhook included) or ctx ends. Errors are *proto.Error: refusals
// from the rendezvous or its webhook keep their status (StatusForbidden
// for a denial, StatusTooLarge over a size limit, StatusUnavailable when
// no rendezvous is reachable).
func (s *Server) createUpload(ctx context.Context, spec uploadSpec) (*upload, error) {
	if spec.Size < -1 {
		return nil, proto.Errorf(proto.StatusMalformed, "negative upload size %d", spec.Size)
	}
	if len(spec.Name) > maxUploadName || !utf8.ValidString(spec.Name) || strings.ContainsAny(spec.Name, "\x00\r\n") {
		return nil, proto.Errorf(proto.StatusMalformed, "file name is over %d bytes or not printable UTF-8", maxUploadName)
	}
	if spec.MIME == "" {
		spec.MIME = "application/octet-stream"
	}
	if len(spec.MIME) > maxUploadMIME {
		return nil, proto.Errorf(proto.StatusMalformed, "media type over %d bytes", maxUploadMIME)
	}
	if n := mapBytes(spec.Auth) + mapBytes(spec.Meta); n > maxUploadAuth {
		return nil, proto.Errorf(proto.StatusTooLarge, "credentials and metadata of %d bytes, over the limit of %d", n, maxUploadAuth)
	}
	m, err := s.askHold(ctx, proto.Hold{Protocol: spec.Protocol, Name: spec.Name, MIME: spec.MIME, Size: spec.Size, Auth: spec.Auth, Meta: spec.Meta, Client: spec.Client})
	if err != nil {
		return nil, err
	}
	var held *proto.Held
	switch m := m.(type) {
	case *proto.ErrorMsg:
		s.stats.refused("upload_refused")
		return nil, proto.Errorf(m.Status, "%s", m.Reason)
	case *proto.Held:
		held = m
	}
	if ok, _ := proto.OwnerOf(held.ID, held.Owner); !ok {
		return nil, proto.Errorf(proto.StatusInternal, "rendezvous answered an item id that its owner secret does not make")
	}
	now := s.cfg.Now()
	u := &upload{
		s: s, id: held.ID, owner: held.Owner, key: newUploadKey(),
		protocol: spec.Protocol, name: spec.Name, mime: spec.MIME, created: now,
		info: uploadInfo{
			ID: held.ID, ShareURL: held.ShareURL, DownloadURL: held.DownloadURL,
			MaxSize: held.MaxSize, Meta: held.Meta,
		},
		wake: make(chan struct{}), size: spec.Size,
		expires:  time.UnixMilli(held.ExpiresMS),
		rdrs:     make(map[*reader]struct{}),
		lastUsed: now,
	}
	u.info.Expires = u.expires
	if u.info.MaxSize > 0 && spec.Size > u.info.MaxSize {
		u.sendRelease(proto.Errorf(proto.StatusTooLarge, "upload of %d bytes over the limit of %d", spec.Size, u.info.MaxSize))
		return nil, proto.Errorf(proto.StatusTooLarge, "upload of %d bytes over the limit of %d bytes", spec.Size, u.info.MaxSize)
	}
	s.store.add(u)
	s.store.startSweeper()
	return u, nil
}

func mapBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// newUploadKey returns an unguessable resume key (130 random bits).
func newUploadKey() string {
	var b [16]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// checkUpload asks the rendezvous's auth webhook whether an uploader with
// spec's credentials may upload at all, before it describes its upload
// (the STOR AUTH message). It returns nil when allowed (also when the
// rendezvous has no webhook), else a *proto.Error.
func (s *Server) checkUpload(ctx context.Context, spec uploadSpec) error {
	m, err := s.askHold(ctx, proto.Hold{Check: true, Protocol: spec.Protocol, MIME: spec.MIME, Size: spec.Size, Auth: spec.Auth, Meta: spec.Meta, Client: spec.Client})
	if err != nil {
		return err
	}
	if e, ok := m.(*proto.ErrorMsg); ok {
		s.stats.refused("upload_refused")
		return proto.Errorf(e.Status, "%s", e.Reason)
	}
	return nil
}

// askHold sends h to the rendezvous and waits for its answer.
func (s *Server) askHold(ctx context.Context, h proto.Hold) (proto.Message, error) {
	l := s.link.Load()
	if l == nil {
		return nil, proto.Errorf(proto.StatusUnavailable, "relay is not registered with its rendezvous; try again later")
	}
	st := &s.store
	st.mu.Lock()
	st.nextRef++
	h.Ref = "u" + strconv.FormatUint(st.nextRef, 10)
	ch := make(chan proto.Message, 1)
	st.holds[h.Ref] = ch
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.holds, h.Ref)
		st.mu.Unlock()
	}()
	if err := l.send(h); err != nil {
		return nil, proto.Errorf(proto.StatusUnavailable, "relay is not registered with its rendezvous; try again later")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.NeedTimeout)
	defer cancel()
	select {
	case m := <-ch:
		return m, nil
	case <-l.done:
		return nil, proto.Errorf(proto.StatusUnavailable, "rendezvous link dropped while creating the upload; try again")
	case <-ctx.Done():
		if s.ctx.Err() != nil {
			return nil, errShutdown
		}
		return nil, proto.Errorf(proto.StatusTimeout, "rendezvous did not answer the upload request: %v", ctx.Err())
	}
}

// upload returns the upload with resume key key, if it is still held and
// not complete... or complete: adapters answer a resume of a complete
// upload with its final state.
func (s *Server) upload(key string) (*upload, bool) {
	u := s.store.byKey(key)
	return u, u != nil
}

// Key returns the upload's resume key: unguessable, it names the upload in
// the URLs adapters give for resuming (tus upload URL, PUT session URL).
func (u *upload) Key() string { return u.key }

// Info returns what the uploader is told.
func (u *upload) Info() uploadInfo {
	in := u.info
	u.mu.Lock()
	in.Size, in.Offset, in.Expires = u.size, u.end, u.expires
	u.mu.Unlock()
	return in
}

// Offset returns the bytes received so far: where the next Write appends.
func (u *upload) Offset() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.end
}

// Size returns the declared size, or -1 while unknown.
func (u *upload) Size() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.size
}

// Done reports whether every byte arrived.
func (u *upload) Done() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.done
}

// Err returns why the upload failed or was removed, or nil.
func (u *upload) Err() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// SetSize declares the size of an upload created with Size -1. It fails
// when the size is known already and differs, when n is below the bytes
// received, or over the upload's limit.
func (u *upload) SetSize(n int64) error {
	u.mu.Lock()
	switch {
	case u.size >= 0 && u.size != n:
		u.mu.Unlock()
		return proto.Errorf(proto.StatusConflict, "upload size is %d already", u.size)
	case n < u.end:
		u.mu.Unlock()
		return proto.Errorf(proto.StatusMalformed, "size %d is below the %d bytes received", n, u.end)
	case u.info.MaxSize > 0 && n > u.info.MaxSize:
		u.mu.Unlock()
		return proto.Errorf(proto.StatusTooLarge, "upload of %d bytes over the limit of %d", n, u.info.MaxSize)
	}
	u.size = n
	u.mu.Unlock()
	u.broadcast()
	return nil
}

// Write appends p at Offset(). It blocks while the relay's memory budget
// is full or a streamed upload is a window ahead of its slowest reader,
// and returns ctx's error when ctx ends first. It fails with
// proto.StatusTooLarge past the declared size (or the limit when the size
// is unknown), and with the upload's error once it failed or expired.
func (u *upload) Write(ctx context.Context, p []byte) (int, error) {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		u.mu.Lock()
		if u.err != nil || u.gone {
			err := u.err
			u.mu.Unlock()
			if err == nil {
				err = proto.Errorf(proto.StatusGone, "upload %s is no longer held", u.id)
			}
			return written, err
		}
		if u.done {
			u.mu.Unlock()
			return written, proto.Errorf(proto.StatusProtocol, "upload is complete: no more bytes")
		}
		if u.size >= 0 && u.end+int64(len(p)) > u.size {
			size := u.size
			u.mu.Unlock()
			return written, proto.Errorf(proto.StatusTooLarge, "bytes past the declared size of %d", size)
		}
		if u.info.MaxSize > 0 && u.end+int64(len(p)) > u.info.MaxSize {
			u.mu.Unlock()
			return written, proto.Errorf(proto.StatusTooLarge, "upload over the limit of %d bytes", u.info.MaxSize)
		}
		// Room in the last chunk?
		if k := len(u.chunks); k > 0 {
			c := u.chunks[k-1]
			if room := cap(c) - len(c); room > 0 {
				n := min(room, len(p))
				u.chunks[k-1] = append(c, p[:n]...)
				u.end += int64(n)
				p, written = p[n:], written+n
				u.mu.Unlock()
				u.s.stats.uploadBytes.Add(int64(n))
				u.broadcast()
				continue
			}
		}
		// A new chunk: within the window, then within the budget.
		var wait <-chan struct{}
		if u.streamedLocked() && u.end-u.base >= u.s.cfg.UploadWindow {
			wait = u.wake
			u.s.stats.uploadWaits.Add(1)
		}
		want := int64(heldChunk)
		if u.size >= 0 {
			want = min(want, u.size-u.end)
		}
		u.mu.Unlock()
		if wait == nil {
			freed := u.s.store.changed()
			if u.s.store.reserve(want, u) {
				u.mu.Lock()
				u.chunks = append(u.chunks, make([]byte, 0, want))
				u.reserved += want
				u.mu.Unlock()
				continue
			}
			u.s.stats.uploadWaits.Add(1)
			wait = freed
		}
		u.mu.Lock()
		uw := u.wake
		u.mu.Unlock()
		select {
		case <-wait:
		case <-uw:
		case <-ctx.Done():
			return written, ctx.Err()
		}
	}
	return written, nil
}

// Finish marks the upload complete. It fails when fewer bytes than the
// declared size arrived (the size is fixed at the bytes received when it
// was unknown).
func (u *upload) Finish() error {
	u.mu.Lock()
	if u.err != nil {
		err := u.err
		u.mu.Unlock()
		return err
	}
	if u.done {
		u.mu.Unlock()
		return nil
	}
	if u.size < 0 {
		u.size = u.end
	}
	if u.end != u.size {
		end, size := u.end, u.size
		u.mu.Unlock()
		return proto.Errorf(proto.StatusProtocol, "upload has %d of its %d bytes", end, size)
	}
	u.done = true
	size := u.size
	u.mu.Unlock()
	u.broadcast()
	u.s.stats.uploadsDone.Add(1)
	if l := u.s.link.Load(); l != nil {
		l.send(proto.HoldDone{ID: u.id, Size: size})
	}
	return nil
}

// Abort fails the upload with reason: readers in progress and to come see
// it (a reader never takes a half upload for a whole one), and the item is
// dropped. A nil reason means the uploader went away.
func (u *upload) Abort(reason error) {
	if reason == nil {
		reason = proto.Errorf(proto.StatusSourceError, "upload interrupted: the uploader went away")
	}
	var pe *proto.Error
	if !asError(reason, &pe) {
		reason = proto.Errorf(proto.StatusSourceError, "upload failed: %v", reason)
	}
	u.s.stats.uploadsFailed.Add(1)
	u.remove(reason, "aborted")
}

// Terminate deletes the upload and its item (tus termination): readers in
// progress of a complete item finish, others are told it is gone.
func (u *upload) Terminate() {
	u.remove(proto.Errorf(proto.StatusGone, "item %s was deleted by its uploader", u.id), "terminated")
}

// sendRelease tells the rendezvous that an item that never entered the
// store is dropped.
func (u *upload) sendRelease(err *proto.Error) {
	if l := u.s.link.Load(); l != nil {
		l.send(proto.Release{ID: u.id, Status: err.Status, Reason: err.Msg})
	}
}

// heldAnswer delivers a Held or an ErrorMsg from the rendezvous to the
// createUpload waiting for it. It reports whether one was.
func (s *Server) heldAnswer(ref string, m proto.Message) bool {
	st := &s.store
	st.mu.Lock()
	ch := st.holds[ref]
	delete(st.holds, ref)
	st.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- m
	return true
}

// reannounce tells a rendezvous the relay just registered with of every
// item it holds (soft state, issue 14).
func (s *Server) reannounce(l *link) {
	for _, u := range s.store.all() {
		u.mu.Lock()
		h := proto.Hold{
			Ref: "re", ID: u.id, Owner: u.owner, Protocol: u.protocol, Name: u.name, MIME: u.mime,
			Size: u.size, Done: u.done, ExpiresMS: u.expires.UnixMilli(), Token: u.token,
		}
		gone := u.gone
		u.mu.Unlock()
		if !gone {
			l.send(h)
		}
	}
}

func asError(err error, pe **proto.Error) bool {
	e, ok := err.(*proto.Error)
	if ok {
		*pe = e
		return true
	}
	return false
}

// String names the upload in logs.
func (u *upload) String() string { return fmt.Sprintf("%s upload %s", u.protocol, u.id) }

// uploadRoutes adds the routes of the legacy upload protocols to mux:
// the handler of each protocol the relay serves (Config.Uploads), and for
// the others one that says so. Each adapter adds its own line here.
func (s *Server) uploadRoutes(mux *http.ServeMux) {
	route := func(protocol string, handler func() http.Handler, patterns ...string) {
		h := uploadOff(protocol)
		if s.cfg.serves(protocol) {
			h = handler() // not built unless served: socket.io's server starts goroutines
		}
		for _, p := range patterns {
			mux.Handle(p, h)
		}
	}
	route(proto.UploadSTOR, func() http.Handler { return http.HandlerFunc(s.handleStor) }, "GET /v1/stor") // stor.go
	route(proto.UploadPUT, func() http.Handler { return http.HandlerFunc(s.handlePut) },                   // put.go
		"PUT /v1/upload/{name}", "OPTIONS /v1/upload/{name}") // OPTIONS: CORS preflight
	route(proto.UploadTUS, func() http.Handler { return http.HandlerFunc(s.handleTus) }, // tus.go
		tusPath, strings.TrimSuffix(tusPath, "/"))
	route(proto.UploadSocketIO, s.socketIOHandler, sioPath) // socketio.go
}

// uploadOff answers every request for an upload protocol the relay does
// not serve (relay --uploads) with 404 and the reason.
func uploadOff(protocol string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, proto.Errorf(proto.StatusNotFound, "this relay does not serve %s uploads (relay --uploads); GET /v1/upload?protocol=%s on the rendezvous names one that does", protocol, protocol))
	})
}
