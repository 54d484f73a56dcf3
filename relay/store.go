package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/proto"
)

// The held-item store (issue 11). An upload through a legacy protocol
// (upload.go and its adapters) becomes an item whose bytes this relay
// holds in memory, never on disk, and serves to readers itself
// (serveHeld): the rendezvous redirects every read of the item here.
//
// Bytes are kept in chunks of heldChunk bytes, each counted in the relay's
// memory budget (budget.go) when it is allocated, so uploads and consumer
// requests share one bound. An upload of at most Config.UploadHold bytes
// is held whole: every byte stays until the item expires, also after the
// uploader has gone, so it can be read later. A larger upload, or one of
// unknown size, is streamed through a window: the store keeps at most
// Config.UploadWindow bytes past the slowest reader in progress, and the
// uploader waits for readers; a reader asking for bytes already dropped is
// refused with proto.StatusGone.
//
// When the budget is full, a writer first evicts complete held items
// nobody is reading, expired ones first, then the least recently used;
// then it waits until memory is released (paced by readers, never failed
// for being ahead). Eviction never breaks a response in progress: an item
// being read is not evicted, and an item removed while read (expired,
// deleted) keeps its chunks until its last reader is done.

// heldChunk is the size of the chunks held items are kept in.
const heldChunk = 64 << 10

// store holds the items of uploads received by this relay.
type store struct {
	s *Server

	mu      sync.Mutex // guards the fields below
	items   map[proto.ItemID]*upload
	keys    map[string]*upload // by resume key
	aliases map[string]*upload // by adapter alias (put.go: client, name and credentials)
	freed   chan struct{}      // closed and replaced when memory is released
	holds   map[string]chan proto.Message
	dropped map[proto.ItemID]droppedItem // held items this relay let go, until they expire; at most maxDropped
	nextRef uint64
	sweeps  bool // the sweeper runs
	// sealed holds the sealed metadata of the encrypted clips held here
	// (clip.go), counted in their upload's reserved memory.
	sealed map[proto.ItemID]string
}

func (st *store) init(s *Server) {
	st.s = s
	st.items = make(map[proto.ItemID]*upload)
	st.keys = make(map[string]*upload)
	st.aliases = make(map[string]*upload)
	st.freed = make(chan struct{})
	st.holds = make(map[string]chan proto.Message)
}

// get returns the held item id.
func (st *store) get(id proto.ItemID) *upload {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.items[id]
}

// byKey returns the upload with resume key key.
func (st *store) byKey(key string) *upload {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.keys[key]
}

// all returns every held item.
func (st *store) all() []*upload {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*upload, 0, len(st.items))
	for _, u := range st.items {
		out = append(out, u)
	}
	return out
}

// add puts u in the store.
func (st *store) add(u *upload) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.items[u.id] = u
	if u.key != "" {
		st.keys[u.key] = u
	}
	st.s.stats.uploads.Add(1)
}

// changed returns a channel closed when memory is next released.
func (st *store) changed() <-chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.freed
}

// notifyFreed wakes the writers waiting for memory.
func (st *store) notifyFreed() {
	st.mu.Lock()
	close(st.freed)
	st.freed = make(chan struct{})
	st.mu.Unlock()
}

// reserve takes n bytes of the budget for a held chunk, evicting complete
// held items nobody reads when the budget is full. It reports whether the
// bytes were reserved; it never waits.
func (st *store) reserve(n int64, for_ *upload) bool {
	for {
		if st.s.budget.reserve(n) {
			return true
		}
		v := st.victim(for_)
		if v == nil {
			return false
		}
		st.s.stats.heldEvicted.Add(1)
		st.s.log.Info("held item evicted: memory budget full", "item", v.id, "bytes", v.Offset())
		v.remove(proto.Errorf(proto.StatusGone, "item %s was evicted from relay memory", v.id), "evicted")
	}
}

// victim picks the held item to evict: complete, not being read, not
// for_; expired before not, then the least recently used.
func (st *store) victim(for_ *upload) *upload {
	now := st.s.cfg.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	var best *upload
	var bestExpired bool
	var bestUsed time.Time
	for _, u := range st.items {
		if u == for_ {
			continue
		}
		u.mu.Lock()
		ok := u.done && u.readers == 0 && u.reserved > 0
		expired := !now.Before(u.expires)
		used := u.lastUsed
		u.mu.Unlock()
		if !ok {
			continue
		}
		if best == nil || expired && !bestExpired || expired == bestExpired && used.Before(bestUsed) {
			best, bestExpired, bestUsed = u, expired, used
		}
	}
	return best
}

// forget takes u out of the store's maps.
func (st *store) forget(u *upload) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.items[u.id] == u {
		delete(st.items, u.id)
		delete(st.sealed, u.id)
	}
	st.noteDroppedLocked(u)
	if u.key != "" && st.keys[u.key] == u {
		delete(st.keys, u.key)
	}
	if u.alias != "" && st.aliases[u.alias] == u {
		delete(st.aliases, u.alias)
	}
}

// maxDropped bounds the items a relay remembers having dropped.
const maxDropped = 4096

// droppedItem is what a relay remembers of a held item it let go: why,
// and until when a reader with a token for it is told so.
type droppedItem struct {
	err   error
	until time.Time
}

// noteDroppedLocked remembers that the upload u is gone, so that a reader
// the rendezvous sent here before it heard of the release is told why (410
// and the reason) rather than treated as a reader of an item of
// publishers. Not for clips, which their publisher may still serve.
// st.mu is held.
func (st *store) noteDroppedLocked(u *upload) {
	u.mu.Lock()
	err, until, clip := u.err, u.expires, u.token != ""
	u.mu.Unlock()
	if err == nil || until.IsZero() || clip {
		return // a clip's publisher may still serve it (clip.go)
	}
	st.markDroppedLocked(u.id, err, until)
}

// markDroppedLocked remembers that held item id was dropped for err, until
// until. st.mu is held.
func (st *store) markDroppedLocked(id proto.ItemID, err error, until time.Time) {
	if st.dropped == nil {
		st.dropped = make(map[proto.ItemID]droppedItem)
	}
	if len(st.dropped) >= maxDropped {
		now := time.Now()
		for id, d := range st.dropped {
			if now.After(d.until) || len(st.dropped) >= maxDropped {
				delete(st.dropped, id)
			}
		}
	}
	st.dropped[id] = droppedItem{err: err, until: until}
}

// droppedErr returns why the held item id was dropped, or nil.
func (st *store) droppedErr(id proto.ItemID) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	d, ok := st.dropped[id]
	if !ok {
		return nil
	}
	if time.Now().After(d.until) {
		delete(st.dropped, id)
		return nil
	}
	return d.err
}

// setAlias makes alias name u, in place of any upload it named.
func (st *store) setAlias(alias string, u *upload) {
	st.mu.Lock()
	defer st.mu.Unlock()
	u.alias = alias
	st.aliases[alias] = u
}

// byAlias returns the upload alias names.
func (st *store) byAlias(alias string) *upload {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.aliases[alias]
}

// release gives n bytes back to the budget and wakes waiting writers.
func (st *store) release(n int64) {
	if n == 0 {
		return
	}
	st.s.budget.release(n)
	st.notifyFreed()
}

// startSweeper starts the expiry sweep once.
func (st *store) startSweeper() {
	st.mu.Lock()
	if st.sweeps {
		st.mu.Unlock()
		return
	}
	st.sweeps = true
	st.mu.Unlock()
	if !st.s.goStart() {
		return
	}
	go func() {
		defer st.s.wg.Done()
		t := time.NewTicker(st.s.cfg.UploadSweep)
		defer t.Stop()
		for {
			select {
			case <-st.s.ctx.Done():
				for _, u := range st.all() {
					u.remove(errShutdown, "")
				}
				return
			case <-t.C:
				st.sweep(st.s.cfg.Now())
			}
		}
	}()
}

// sweep drops the items expired at now. An upload still arriving that
// nobody read is told so.
func (st *store) sweep(now time.Time) {
	for _, u := range st.all() {
		u.mu.Lock()
		expired := !now.Before(u.expires)
		unread := !u.done && !u.everRead
		u.mu.Unlock()
		if !expired {
			continue
		}
		st.s.stats.heldExpired.Add(1)
		if unread && u.streamed() {
			u.remove(proto.Errorf(proto.StatusGone, "upload expired: nobody read item %s before %s", u.id, u.expires.UTC().Format(time.RFC3339)), "expired unread")
			continue
		}
		u.remove(proto.Errorf(proto.StatusGone, "item %s expired at %s", u.id, u.expires.UTC().Format(time.RFC3339)), "expired")
	}
}

// reader is one response in progress reading a held item.
type reader struct {
	u   *upload
	pos int64 // the next byte it reads; guarded by u.mu
}

// openReader registers a reader of u starting at off. It fails with
// proto.StatusGone when the bytes at off were dropped (a streamed
// upload's window moved past them) or the item is gone.
func (u *upload) openReader(off int64) (*reader, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gone && u.readers == 0 && u.chunks == nil || u.err != nil && !u.done {
		if u.err != nil {
			return nil, u.err
		}
		return nil, proto.Errorf(proto.StatusGone, "item %s is no longer held", u.id)
	}
	if off < u.base {
		return nil, proto.Errorf(proto.StatusGone, "bytes from %d of item %s were already sent to its readers and dropped: the upload is larger than this relay holds (%d bytes) and streams through a window", off, u.id, u.s.cfg.UploadHold)
	}
	rd := &reader{u: u, pos: off}
	u.readers++
	u.rdrs[rd] = struct{}{}
	u.everRead = true
	u.lastUsed = u.s.cfg.Now()
	return rd, nil
}

// next returns the bytes from the reader's position on, at most max,
// waiting for them to arrive. The slice is the store's and must not be
// modified; it stays valid after close. It returns io.EOF-like errEnd at
// the item's end, or the upload's error.
func (rd *reader) next(ctx context.Context, max int64) ([]byte, error) {
	u := rd.u
	for {
		u.mu.Lock()
		if rd.pos < u.end {
			if rd.pos < u.base {
				u.mu.Unlock()
				return nil, proto.Errorf(proto.StatusGone, "bytes from %d of item %s were dropped", rd.pos, u.id)
			}
			rel := rd.pos - u.base
			c := u.chunks[rel/heldChunk]
			in := rel % heldChunk
			b := c[in:min(int64(len(c)), in+max)]
			rd.pos += int64(len(b))
			u.mu.Unlock()
			u.trim()
			return b, nil
		}
		if u.err != nil {
			err := u.err
			u.mu.Unlock()
			return nil, err
		}
		if u.done || u.size >= 0 && rd.pos >= u.size {
			u.mu.Unlock()
			return nil, errEnd
		}
		wake := u.wake
		u.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// errEnd is next's end of the item.
var errEnd = errors.New("relay: end of held item")

// close ends the reader. The last reader of a removed item frees it.
func (rd *reader) close() {
	u := rd.u
	u.mu.Lock()
	if _, ok := u.rdrs[rd]; !ok {
		u.mu.Unlock()
		return
	}
	delete(u.rdrs, rd)
	u.readers--
	u.lastUsed = u.s.cfg.Now()
	free := u.gone && u.readers == 0
	u.mu.Unlock()
	if free {
		u.free()
	} else {
		u.trim()
	}
	u.broadcast()
}

// streamed reports whether u is kept through a window rather than whole.
func (u *upload) streamed() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.streamedLocked()
}

func (u *upload) streamedLocked() bool {
	return !u.whole && (u.size < 0 || u.size > u.s.cfg.UploadHold || u.base > 0)
}

// trim drops the chunks of a streamed upload that every reader in
// progress has read, giving their memory back.
func (u *upload) trim() {
	u.mu.Lock()
	if !u.streamedLocked() || u.readers == 0 || u.gone {
		u.mu.Unlock()
		return
	}
	low := u.end
	for rd := range u.rdrs {
		low = min(low, rd.pos)
	}
	var freed int64
	for len(u.chunks) > 0 && u.base+heldChunk <= low && u.base+int64(len(u.chunks[0])) <= u.end && len(u.chunks[0]) == heldChunk {
		freed += int64(cap(u.chunks[0]))
		u.chunks[0] = nil
		u.chunks = u.chunks[1:]
		u.base += heldChunk
	}
	u.reserved -= freed
	u.mu.Unlock()
	if freed > 0 {
		u.s.store.release(freed)
		u.broadcast()
	}
}

// broadcast wakes everyone waiting on u.
func (u *upload) broadcast() {
	u.mu.Lock()
	close(u.wake)
	u.wake = make(chan struct{})
	u.mu.Unlock()
}

// remove takes u out of the store and fails it with err, unless it is
// complete (then its readers in progress finish). It tells the
// rendezvous when why is set. Its memory is freed once nobody reads it.
func (u *upload) remove(err error, why string) {
	u.mu.Lock()
	if u.gone {
		u.mu.Unlock()
		return
	}
	u.gone = true
	if !u.done || u.readers == 0 {
		u.err = err
	}
	free := u.readers == 0
	u.mu.Unlock()
	u.s.store.forget(u)
	if free {
		u.free()
	}
	u.broadcast()
	if why != "" {
		if l := u.s.link.Load(); l != nil {
			st := proto.StatusGone
			var pe *proto.Error
			if errors.As(err, &pe) {
				st = pe.Status
			}
			l.send(proto.Release{ID: u.id, Status: st, Reason: err.Error()})
		}
	}
}

// free gives u's memory back.
func (u *upload) free() {
	u.mu.Lock()
	n := u.reserved
	u.reserved = 0
	u.chunks = nil
	u.mu.Unlock()
	u.s.store.release(n)
}

// uploadCounters count legacy uploads and held items.
type uploadCounters struct {
	uploads       atomic.Int64 // uploads created
	uploadsDone   atomic.Int64 // uploads complete
	uploadsFailed atomic.Int64 // uploads aborted
	uploadBytes   atomic.Int64 // bytes received by uploads
	uploadWaits   atomic.Int64 // times a writer waited for memory
	heldEvicted   atomic.Int64 // complete held items evicted for memory
	heldExpired   atomic.Int64 // held items dropped at their expiry
	heldServed    atomic.Int64 // responses served from held items
}

// UploadStats counts legacy uploads and held items.
type UploadStats struct {
	Created  int64 `json:"created"`
	Done     int64 `json:"done"`
	Failed   int64 `json:"failed"`
	Bytes    int64 `json:"bytes"`
	Waits    int64 `json:"waits"` // times an uploader waited for memory or readers
	Held     int   `json:"held"`  // items held now
	HeldMem  int64 `json:"held_bytes"`
	Evicted  int64 `json:"evicted"`
	Expired  int64 `json:"expired"`
	Requests int64 `json:"requests"` // reader responses served from held items
}

func (s *Server) uploadStats() UploadStats {
	c := &s.stats.uploadCounters
	out := UploadStats{
		Created: c.uploads.Load(), Done: c.uploadsDone.Load(), Failed: c.uploadsFailed.Load(),
		Bytes: c.uploadBytes.Load(), Waits: c.uploadWaits.Load(), Evicted: c.heldEvicted.Load(),
		Expired: c.heldExpired.Load(), Requests: c.heldServed.Load(),
	}
	for _, u := range s.store.all() {
		out.Held++
		u.mu.Lock()
		out.HeldMem += u.reserved
		u.mu.Unlock()
	}
	return out
}

// serveHeld serves GET and HEAD of held item u to a reader whose read
// token checked out, with RFC 9110 Range semantics, while the upload is
// still arriving too: a read of bytes not yet arrived waits for them. A
// response for an item of known size carries its final Content-Length
// from the start; for an item whose size is not known yet, a request with
// a Range waits until it is, and one without streams to the end with
// chunked encoding. When the upload fails, the response is cut short, so
// a reader never takes a part for the whole.
func (s *Server) serveHeld(w http.ResponseWriter, r *http.Request, u *upload, claims proto.Claims) {
	s.stats.heldServed.Add(1)
	h := w.Header()
	etag := fmt.Sprintf(`"%s-%d"`, u.id, claims.Modified)
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", etag)
	if claims.Modified > 0 {
		h.Set("Last-Modified", time.Unix(claims.Modified, 0).UTC().Format(http.TimeFormat))
	}
	proto.SetItemHeaders(h, u.mime, u.name)
	ctype := h.Get("Content-Type")
	h.Set("Cache-Control", "private, no-transform")
	if u.whole { // a clip (clip.go): readable until it expires
		h.Set("Expires", u.expires.UTC().Format(http.TimeFormat))
	}

	rh := r.Header.Get("Range")
	if rh != "" && !ifRangeMatches(r, etag, claims.Modified) {
		rh = ""
	}
	size, err := u.waitSize(r.Context(), rh != "")
	if err != nil {
		if !isCancelled(err) {
			writeError(w, asProtoError(err))
		}
		return
	}
	var ranges []proto.ByteRange
	if rh != "" {
		var rerr error
		ranges, rerr = proto.ParseRange(rh, size, s.cfg.MaxRanges)
		switch {
		case errors.Is(rerr, proto.ErrRangeMalformed):
			ranges = nil
		case rerr != nil:
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			h.Del("Content-Type")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
	}
	code, length := http.StatusOK, size
	switch {
	case len(ranges) == 0:
		ranges = []proto.ByteRange{{Start: 0, Length: size}} // Length -1: to the end, size unknown
	case len(ranges) == 1:
		s.stats.rangeRequests.Add(1)
		code, length = http.StatusPartialContent, ranges[0].Length
		h.Set("Content-Range", ranges[0].ContentRange(size))
	default:
		s.stats.rangeRequests.Add(1)
		code = http.StatusPartialContent
	}
	var mw *multipart.Writer
	partHeader := func(br proto.ByteRange) textproto.MIMEHeader {
		return textproto.MIMEHeader{"Content-Type": {ctype}, "Content-Range": {br.ContentRange(size)}}
	}
	if len(ranges) > 1 {
		cw := &countWriter{}
		mw = multipart.NewWriter(cw)
		for _, br := range ranges {
			mw.CreatePart(partHeader(br))
		}
		mw.Close()
		length = cw.n
		for _, br := range ranges {
			length += br.Length
		}
		h.Set("Content-Type", "multipart/byteranges; boundary="+mw.Boundary())
	}
	if length >= 0 {
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	// Open the reader before the status goes out, so that bytes already
	// dropped are refused with a status of their own (410).
	rd, err := u.openReader(ranges[0].Start)
	if err != nil {
		writeError(w, asProtoError(err))
		return
	}
	defer func() { rd.close() }() // the reader of the last range (multipart opens one per range)
	if r.Method == http.MethodHead {
		w.WriteHeader(code)
		return
	}
	w.WriteHeader(code)
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout, served: &s.stats.bytesServed}
	dw.Flush() // the headers go out now, also when the first bytes have not arrived
	var out io.Writer = dw
	if mw != nil {
		boundary := mw.Boundary()
		mw = multipart.NewWriter(dw)
		mw.SetBoundary(boundary)
	}
	for i, br := range ranges {
		if mw != nil {
			if _, err := mw.CreatePart(partHeader(br)); err != nil {
				return
			}
		}
		if i > 0 {
			rd.close()
			if rd, err = u.openReader(br.Start); err != nil {
				return
			}
		}
		if err := copyHeld(r.Context(), out, dw, rd, br); err != nil {
			if !isCancelled(err) {
				s.stats.cutShort.Add(1)
				s.log.Info("held item response cut short", "item", u.id, "err", err)
			}
			return // net/http closes the connection: the body is short
		}
	}
	if mw != nil {
		mw.Close()
	}
}

// copyHeld writes the bytes of br from rd to w, flushing as it goes: the
// reader of an upload in progress gets bytes as they arrive. A Length of
// -1 copies to the item's end.
func copyHeld(ctx context.Context, w io.Writer, f *deadlineWriter, rd *reader, br proto.ByteRange) error {
	left := br.Length
	for left != 0 {
		want := int64(heldChunk)
		if left > 0 {
			want = min(want, left)
		}
		b, err := rd.next(ctx, want)
		if err == errEnd {
			if left > 0 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if left > 0 {
			left -= int64(len(b))
		}
		if err := f.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// waitSize returns u's size. While it is unknown it returns -1, unless
// wait is set: then it waits until the uploader says it or finishes.
func (u *upload) waitSize(ctx context.Context, wait bool) (int64, error) {
	for {
		u.mu.Lock()
		size, err, ch := u.size, u.err, u.wake
		u.mu.Unlock()
		if err != nil && !u.Done() {
			return 0, err
		}
		if size >= 0 || !wait {
			return size, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
