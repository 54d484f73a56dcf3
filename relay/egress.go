package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/proto"
)

// handleItem serves GET and HEAD /v1/items/{id} with RFC 9110 Range
// semantics. The read token (query t, or Authorization: Bearer) carries the
// item's size, name and type, so nothing is asked of the rendezvous until
// bytes are needed.
func (s *Server) handleItem(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	// Items are read with a capability in the URL, never with cookies, so
	// any page may read them. The web app's Service Worker follows the
	// rendezvous's redirect here and must see statuses and Content-Range to
	// resume a download.
	proto.SetPublicCORS(w.Header())
	// Which exit serves the bytes, so that a consumer whose exit dies
	// can resume elsewhere with GET /v1/items/{id}?avoid=ID (issue 10).
	w.Header().Set("Meshup-Relay", s.id)
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil {
		writeError(w, proto.Errorf(proto.StatusNotFound, "bad item id"))
		return
	}
	tok := r.URL.Query().Get("t")
	if tok == "" {
		tok, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	claims, err := s.parseToken(tok)
	if u := s.store.get(id); u != nil && err == nil {
		// An item this relay holds (issue 11, store.go): served from
		// its memory, its size as the relay knows it.
		if err = claims.Check(s.id, proto.DirRead, id, 0, 0); err == nil {
			s.serveHeld(w, r, u, claims)
			return
		}
	}
	if err == nil {
		if gone := s.store.droppedErr(id); gone != nil && claims.Check(s.id, proto.DirRead, id, 0, 0) == nil {
			writeError(w, asProtoError(gone))
			return
		}
		err = claims.Check(s.id, proto.DirRead, id, 0, claims.Size)
	}
	if err != nil {
		s.stats.refused("read_token")
		writeError(w, &proto.Error{Status: proto.TokenStatus(err), Msg: err.Error()})
		return
	}

	size := claims.Size
	h := w.Header()
	etag := fmt.Sprintf(`"%s-%d"`, id, claims.Modified)
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", etag)
	if claims.Modified > 0 {
		h.Set("Last-Modified", time.Unix(claims.Modified, 0).UTC().Format(http.TimeFormat))
	}
	// The publisher chose the type and name: served as they say, never
	// as a page of ours (see proto.SetItemHeaders).
	proto.SetItemHeaders(h, claims.MIME, claims.Name)
	ctype := h.Get("Content-Type")
	h.Set("Cache-Control", "private, no-transform")

	ranges, rangeErr := []proto.ByteRange(nil), error(nil)
	if rh := r.Header.Get("Range"); rh != "" && ifRangeMatches(r, etag, claims.Modified) {
		ranges, rangeErr = proto.ParseRange(rh, size, s.cfg.MaxRanges)
		if errors.Is(rangeErr, proto.ErrRangeMalformed) {
			ranges, rangeErr = nil, nil // RFC 9110 14.2: ignore a Range we cannot parse
		}
	}
	if rangeErr != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		h.Del("Content-Type")
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return
	}
	if len(ranges) > 0 {
		s.stats.rangeRequests.Add(1)
	}

	switch len(ranges) {
	case 0:
		s.serveRanges(w, r, http.StatusOK, size, []proto.ByteRange{{Start: 0, Length: size}}, nil)
	case 1:
		h.Set("Content-Range", ranges[0].ContentRange(size))
		s.serveRanges(w, r, http.StatusPartialContent, ranges[0].Length, ranges, nil)
	default:
		s.serveMultipart(w, r, size, ctype, ranges)
	}
}

// ifRangeMatches reports whether a Range header applies given If-Range
// (RFC 9110 13.1.5): a strong ETag match, or an exact Last-Modified match.
func ifRangeMatches(r *http.Request, etag string, modified int64) bool {
	ir := r.Header.Get("If-Range")
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) {
		return ir == etag
	}
	t, err := http.ParseTime(ir)
	return err == nil && modified > 0 && t.Unix() == modified
}

func (s *Server) serveMultipart(w http.ResponseWriter, r *http.Request, size int64, ctype string, ranges []proto.ByteRange) {
	mw := multipart.NewWriter(io.Discard)
	boundary := mw.Boundary()
	partHeader := func(br proto.ByteRange) textproto.MIMEHeader {
		return textproto.MIMEHeader{
			"Content-Type":  {ctype},
			"Content-Range": {br.ContentRange(size)},
		}
	}
	// Compute the exact length, so the consumer sees a short body if a part
	// fails, rather than a body that merely looks complete.
	cw := &countWriter{}
	mw = multipart.NewWriter(cw)
	mw.SetBoundary(boundary)
	var total int64
	for _, br := range ranges {
		mw.CreatePart(partHeader(br))
		total += br.Length
	}
	mw.Close()
	total += cw.n
	w.Header().Set("Content-Type", "multipart/byteranges; boundary="+boundary)
	s.serveRanges(w, r, http.StatusPartialContent, total, ranges, func(wr io.Writer, i int) error {
		if i == 0 {
			mw = multipart.NewWriter(wr)
			mw.SetBoundary(boundary)
		}
		if i == len(ranges) {
			return mw.Close()
		}
		_, err := mw.CreatePart(partHeader(ranges[i]))
		return err
	})
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// serveRanges writes the status line and the bytes of ranges. sep, if set,
// writes the multipart separator before range i and the trailer at
// i == len(ranges).
func (s *Server) serveRanges(w http.ResponseWriter, r *http.Request, code int, length int64, ranges []proto.ByteRange, sep func(io.Writer, int) error) {
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(code)
		return
	}
	if s.refuseOverCap(w) { // before any byte of body (ratelimit.go)
		return
	}
	var total int64
	for _, br := range ranges {
		total += br.Length
	}
	reserve := int64(s.cfg.Window) * int64(min(int64(s.cfg.Prefetch), max(1, (total+s.cfg.PartSize-1)/s.cfg.PartSize)))
	if !s.budget.reserve(reserve) {
		s.stats.refused("budget")
		writeError(w, proto.Errorf(proto.StatusOverLimit, "relay memory budget is full"))
		return
	}
	defer s.budget.release(reserve)

	rc := http.NewResponseController(w)
	lim, done := s.shaper.consumer(r, s.cfg.LimitLoopback)
	defer done()
	// Under the relay's rate limits, waiting before each write deadline
	// is set (ratelimit.go).
	dw := s.shaper.writer(r.Context(), &deadlineWriter{w: w, rc: rc, timeout: s.cfg.WriteTimeout, served: &s.stats.bytesServed}, lim)
	// Ask for the first part before the headers go out, so that an
	// offline publisher can still be reported with a proper status.
	f := newFetcher(s, r.Context(), id(r), ranges, code == http.StatusPartialContent)
	f.token = readToken(r) // needs carry it (issue 8)
	defer f.close()
	if err := f.start(); err != nil {
		writeError(w, asProtoError(err))
		return
	}
	w.WriteHeader(code)
	for i := range ranges {
		if sep != nil {
			if err := sep(dw, i); err != nil {
				return
			}
		}
		if err := f.copyRange(dw, i); err != nil {
			if !isCancelled(err) {
				s.stats.cutShort.Add(1)
				s.log.Info("consumer response cut short", "item", f.item, "err", err)
			}
			return // net/http closes the connection: the body is short
		}
	}
	if sep != nil {
		sep(dw, len(ranges))
	}
}

func id(r *http.Request) proto.ItemID {
	id, _ := proto.ParseItemID(r.PathValue("id"))
	return id
}

func asProtoError(err error) *proto.Error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe
	}
	return proto.Errorf(proto.StatusInternal, "%v", err)
}

// deadlineWriter sets a write deadline before each write, so a consumer
// that stops reading is dropped after WriteTimeout.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
	served  *atomic.Int64 // counts the bytes written
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	n, err := d.w.Write(p)
	d.served.Add(int64(n))
	return n, err
}

// Flush sends buffered bytes to the consumer.
func (d *deadlineWriter) Flush() error {
	d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.rc.Flush()
}

// fetcher pulls the parts of a list of ranges in order, keeping up to
// Prefetch parts open so the next part's bytes flow while the current one
// drains.
type fetcher struct {
	s      *Server
	ctx    context.Context
	item   proto.ItemID
	token  string // the consumer's read token, carried by each need
	parts  []span // every part of every range, in order
	bounds []int  // bounds[i] is the index in parts of range i's first part
	open   []*partStream
	next   int // index in parts of the next part to open
}

type span struct{ off, n int64 }

// seekPartSize bounds the first part of each range of a Range request. A
// publisher pushes parts this small on a connection of their own, so the
// first bytes after a seek do not queue behind bulk transfers (issue 14);
// the rest of the range follows in aligned parts.
const seekPartSize = 256 << 10

// newFetcher splits ranges into parts. With seek, the first part of each
// range is at most seekPartSize.
func newFetcher(s *Server, ctx context.Context, item proto.ItemID, ranges []proto.ByteRange, seek bool) *fetcher {
	f := &fetcher{s: s, ctx: ctx, item: item}
	for _, br := range ranges {
		f.bounds = append(f.bounds, len(f.parts))
		// Parts are aligned to PartSize so that a seek asks for the same
		// parts as a full read does.
		for off, end := br.Start, br.End(); off < end; {
			n := min(end, (off/s.cfg.PartSize+1)*s.cfg.PartSize) - off
			if seek && off == br.Start {
				n = min(n, seekPartSize)
			}
			f.parts = append(f.parts, span{off, n})
			off += n
		}
	}
	f.bounds = append(f.bounds, len(f.parts))
	return f
}

// Admission and retries (issue 14). A request is admitted before its status
// line: the budget reserves its memory and its first part must begin, or
// it is answered with a status (429 with Retry-After when over a limit, 503
// when the publisher is offline). Once the status line is out, a part that
// fails for a transient reason (the publisher's connection dropped, the
// rendezvous link is down or restarting, a limit refused it for now) is
// asked for again, from the first byte the consumer has not received, with
// backoff, until NeedTimeout passes without progress. So a started
// response pauses rather than breaks; it ends short only when the source
// stays gone, and then the consumer resumes with Range.

// retryable reports whether a part that failed with err may be asked for
// again.
func retryable(err error) bool {
	if err == errNeedTimeout || err == errShutdown {
		return false // the wait is already over, or the relay is closing
	}
	var pe *proto.Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Status {
	case proto.StatusOffline, proto.StatusUnavailable, proto.StatusOverLimit:
		return true
	case proto.StatusCancelled:
		// The publisher cancelled (it is closing); the consumer, who is
		// still reading, did not.
		return true
	}
	return false
}

const (
	minRetryWait = 100 * time.Millisecond
	maxRetryWait = 2 * time.Second
	// busyWaits is how many need timeouts in a row a response already
	// begun waits for a busy publisher to begin its next part: with the
	// default NeedTimeout, two minutes in all.
	busyWaits = 3
)

// openRetry opens part [off, off+n), retrying while the rendezvous link is
// down until deadline. avoid lists the entry relays that failed this part.
func (f *fetcher) openRetry(off, n int64, deadline time.Time, avoid []string) (*partStream, error) {
	wait := minRetryWait
	for {
		ps, err := f.s.openPart(f.item, off, n, f.token, avoid)
		if err == nil || !retryable(err) || time.Now().Add(wait).After(deadline) {
			return ps, err
		}
		if err := f.sleep(wait); err != nil {
			return nil, err
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// sleep waits d unless the consumer or the relay goes away first.
func (f *fetcher) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	case <-f.s.ctx.Done():
		return errShutdown
	}
}

// start opens the first parts and waits until the first one has begun, so
// that an offline publisher is reported with a status, not a cut body.
func (f *fetcher) start() error {
	if len(f.parts) == 0 {
		return nil
	}
	p := f.parts[0]
	deadline := time.Now().Add(f.s.cfg.NeedTimeout)
	wait := minRetryWait
	for {
		ps, err := f.openRetry(p.off, p.n, deadline, nil)
		if err != nil {
			return err
		}
		f.s.stats.readAhead.Add(1)
		f.open, f.next = append(f.open, ps), 1
		f.fill()
		err = ps.waitBegun(f.ctx)
		if err == nil || !unavailableNow(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		// The link dropped while the need was out (the rendezvous
		// restarted), or the entry relay chosen for the part failed:
		// ask again, before any byte went out. Limits (429) and an
		// offline publisher (503) are answered at once instead.
		f.close()
		f.s.stats.partRetries.Add(1)
		if err := f.sleep(wait); err != nil {
			return err
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// unavailableNow reports whether the first part of a request failed for a
// reason that asking again may cure: the rendezvous link is down, or the
// entry relay chosen for it failed.
func unavailableNow(err error) bool {
	var pe *proto.Error
	return err != errNeedTimeout && err != errShutdown && errors.As(err, &pe) && pe.Status == proto.StatusUnavailable
}

// fill opens parts ahead, up to Prefetch. A part it cannot open now is
// opened (with retries) when its turn comes.
func (f *fetcher) fill() {
	for len(f.open) < f.s.cfg.Prefetch && f.next < len(f.parts) {
		p := f.parts[f.next]
		ps, err := f.s.openPart(f.item, p.off, p.n, f.token, nil)
		if err != nil {
			return
		}
		f.s.stats.readAhead.Add(1)
		f.open = append(f.open, ps)
		f.next++
	}
}

// copyRange writes range i to w.
func (f *fetcher) copyRange(w io.Writer, i int) error {
	for k := f.bounds[i]; k < f.bounds[i+1]; k++ {
		f.fill()
		var ps *partStream
		if len(f.open) > 0 {
			ps = f.open[0]
			f.open = f.open[1:]
			f.s.stats.readAhead.Add(-1)
		} else {
			p := f.parts[f.next]
			f.next++
			var err error
			if ps, err = f.openRetry(p.off, p.n, time.Now().Add(f.s.cfg.NeedTimeout), nil); err != nil {
				return err
			}
		}
		if err := f.copyPart(w, ps); err != nil {
			return err
		}
	}
	return nil
}

// copyPart writes the part of ps to w, asking again for the bytes not yet
// written when the part fails for a transient reason. When the entry relay
// the part came through failed (its mesh stream ended, or it stalled), the
// rest is asked for through another entry (issue 10, failover).
//
// A publisher that is online but busy (many readers want its items at once)
// may not begin a part within NeedTimeout. Once the response has begun
// that is no reason to cut it (issue 14): the part is asked again, up to
// busyWaits need timeouts in a row without a byte, and the rendezvous
// answers Offline, ending the response, if the publisher has gone.
func (f *fetcher) copyPart(w io.Writer, ps *partStream) error {
	var deadline time.Time
	var avoid []string
	wait := minRetryWait
	timeouts := 0
	for {
		err := ps.writeTo(f.ctx, w)
		if err == nil || f.ctx.Err() != nil {
			return err
		}
		if err == errNeedTimeout && timeouts < busyWaits {
			timeouts++
			f.s.stats.busyWaits.Add(1)
			f.s.stats.partRetries.Add(1)
			off, n, _ := ps.rest()
			f.s.log.Debug("publisher busy: part not begun in time; asking again", "item", f.item, "off", off, "len", n, "waits", timeouts)
			if ps, err = f.openRetry(off, n, time.Now().Add(f.s.cfg.NeedTimeout), avoid); err != nil {
				return err
			}
			continue
		}
		if !retryable(err) {
			return err
		}
		if e := ps.entryID(); entryFault(err) && e != "" && e != f.s.id && !slices.Contains(avoid, e) && len(avoid) < proto.MaxAvoid {
			avoid = append(avoid, e)
			f.s.stats.entryFailovers.Add(1)
		}
		off, n, progressed := ps.rest()
		if progressed {
			timeouts = 0
		}
		now := time.Now()
		if progressed || deadline.IsZero() {
			deadline, wait = now.Add(f.s.cfg.NeedTimeout), minRetryWait
		}
		if now.Add(wait).After(deadline) {
			return err
		}
		f.s.log.Debug("part failed mid-response; asking again", "item", f.item, "off", off, "len", n, "err", err, "avoid", avoid)
		if len(avoid) == 0 || !progressed {
			// A failed entry is avoided at once; anything else (the
			// publisher reconnecting, the rendezvous restarting) gets time.
			if err := f.sleep(wait); err != nil {
				return err
			}
			wait = min(2*wait, maxRetryWait)
		}
		f.s.stats.partRetries.Add(1)
		if ps, err = f.openRetry(off, n, deadline, avoid); err != nil {
			return err
		}
	}
}

// entryFault reports whether a part failed because of the relay it came
// through, not because of its publisher or the rendezvous.
func entryFault(err error) bool {
	return err == errEntryGone || err == errStalled
}

// close cancels the parts still open: a seek or a consumer that went
// away drops the read-ahead nobody wants any more.
func (f *fetcher) close() {
	for _, ps := range f.open {
		ps.cancel(proto.StatusCancelled, "consumer request ended")
	}
	f.s.stats.readAhead.Add(-int64(len(f.open)))
	f.open = nil
}
