package proto

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// The two ends of a sealed live channel (format live1, livee2e.go):
// LiveWriter seals a publisher's bytes into records, LiveReader enforces
// the reader rules.

// LiveWriter seals a channel's bytes into records, writing each record to
// its destination in one Write (so that a WebSocket publisher sends one
// record per message). Its methods are safe for concurrent use (a ticker
// goroutine calling Tick beside the writer's), and each record is written
// whole before the next one begins.
type LiveWriter struct {
	// Now is the publisher's clock, stamped on each record. Set it before
	// the first record; defaults to time.Now.
	Now func() time.Time
	// TickInterval is how long the channel may stay quiet before Tick
	// sends an empty data record. Defaults to LiveTickInterval.
	TickInterval time.Duration

	s *LiveSealer
	w io.Writer

	mu       sync.Mutex // guards the fields below
	seq      uint64     // next data/sync/last seq
	headSeq  uint64     // next head seq
	buf      []byte
	closed   bool
	err      error
	lastTime uint64    // time of the last record, Unix ms: times never go back
	lastAt   time.Time // Now() when the last record was written, zero before the first
}

// NewLiveWriter returns a writer of channel id under k into w.
func NewLiveWriter(w io.Writer, k E2EKey, id ItemID) *LiveWriter {
	return &LiveWriter{s: NewLiveSealer(k, id), w: w, buf: make([]byte, 0, LiveMaxRecord)}
}

var (
	errLiveWriterClosed = errors.New("proto: live writer closed")
	errLiveWriterNoHead = fmt.Errorf("proto: live writer: %w: a head must come before any other record", ErrLiveNoHead)
)

func (lw *LiveWriter) now() time.Time {
	if lw.Now != nil {
		return lw.Now()
	}
	return time.Now()
}

func (lw *LiveWriter) tickInterval() time.Duration {
	if lw.TickInterval > 0 {
		return lw.TickInterval
	}
	return LiveTickInterval
}

// record seals and writes one record, a data, sync or last record under
// the latest head; lw.mu is held.
func (lw *LiveWriter) record(kind LiveKind, seq uint64, plain []byte) error {
	if lw.err != nil {
		return lw.err
	}
	if lw.closed {
		return errLiveWriterClosed
	}
	if kind != LiveHead && lw.headSeq == 0 {
		return errLiveWriterNoHead
	}
	now := lw.now()
	lw.lastTime = max(lw.lastTime, liveMillis(now))
	lw.lastAt = now
	// headSeq is the next head's seq: the latest is headSeq-1 (a head
	// record is bound to its own seq, and SealRecord ignores this).
	lw.buf = lw.s.SealRecord(lw.buf[:0], kind, seq, lw.headSeq-1, time.UnixMilli(int64(lw.lastTime)), plain)
	if _, err := lw.w.Write(lw.buf); err != nil {
		lw.err = err
		return err
	}
	return nil
}

// Head writes a channel head with meta m and init segment init, with the
// next head seq (0, then 1, 2, ...). The first record of a channel must
// be a head (Write, Sync and Close fail before it); a later one replaces
// it for readers, and the records after it are sealed under it.
func (lw *LiveWriter) Head(m LiveMeta, init []byte) error {
	p, err := AppendLiveHead(nil, m, init)
	if err != nil {
		return err
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if err := lw.record(LiveHead, lw.headSeq, p); err != nil {
		return err
	}
	lw.headSeq++
	return nil
}

// Write seals p as data records of at most LiveMaxPlain bytes each.
func (lw *LiveWriter) Write(p []byte) (int, error) {
	return lw.write(LiveData, p)
}

// Sync seals p as a sync record (a point where readers may join) followed,
// when p is longer than one record holds, by data records.
func (lw *LiveWriter) Sync(p []byte) (int, error) {
	return lw.write(LiveSync, p)
}

func (lw *LiveWriter) write(kind LiveKind, p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	n := 0
	for first := true; first || len(p) > 0; first = false {
		k := min(len(p), LiveMaxPlain)
		if err := lw.record(kind, lw.seq, p[:k]); err != nil {
			return n, err
		}
		lw.seq++
		n += k
		p = p[k:]
		kind = LiveData
	}
	return n, nil
}

// Tick sends a tick, an empty data record, when the channel has had a
// head and no record for TickInterval (by Now), so that its readers see a
// recent record even when the publisher has nothing to say. It returns
// how long from now the next tick is due: a ticker goroutine calls Tick,
// sleeps that long, and calls it again, until Tick fails (after Close, or
// when the destination failed).
func (lw *LiveWriter) Tick() (time.Duration, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.err != nil {
		return 0, lw.err
	}
	if lw.closed {
		return 0, errLiveWriterClosed
	}
	iv := lw.tickInterval()
	if lw.headSeq == 0 {
		return iv, nil // no head yet: nothing may come before it
	}
	if idle := lw.now().Sub(lw.lastAt); idle < iv {
		return iv - idle, nil
	}
	if err := lw.record(LiveData, lw.seq, nil); err != nil {
		return 0, err
	}
	lw.seq++
	return iv, nil
}

// Close writes the last record (empty), the channel's clean end. It does
// not close the destination.
func (lw *LiveWriter) Close() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return lw.err
	}
	err := lw.record(LiveLast, lw.seq, nil)
	lw.closed = true
	return err
}

// LiveReader reads the plaintext of a sealed channel from its record
// stream, enforcing the reader rules of the format. Read hands out a
// record's bytes only after the whole record opened, data, sync and last
// records under the current head (a relay that withheld a newer head is
// caught at the first record sealed under it); after an error every call
// returns it again. It ends with io.EOF only after a last record.
//
// Until it has caught up with the live edge, a LiveReader runs a timer of
// CatchUp from its first record: when it fires, the reader fails with a
// *LiveStaleError and closes src if src is an io.Closer, so that a Read
// blocked on a stalled source returns.
type LiveReader struct {
	s      *LiveSealer
	src    io.Reader
	buf    []byte
	head   *LiveHeadInfo
	next   uint64 // expected data seq
	joined bool   // a data/sync/last record was read
	openedReader

	// OnHead, when set, is called with each new head (the first one
	// included) before the bytes that follow it are handed out.
	OnHead func(LiveHeadInfo)
	// EndReason, when set, is asked for the reason the stream ended
	// without a last record (e.g. the relay's), to add to ErrLiveNoEnd.
	EndReason func() string
	// MaxLag is how far behind the reader's clock the live edge may be:
	// the reader must see a record at most this old within CatchUp of
	// its first record. Defaults to LiveDefaultMaxLag; negative turns the
	// catch-up rule off (times still never go back).
	MaxLag time.Duration
	// CatchUp is how long from its first record the reader waits for the
	// live edge. Defaults to LiveDefaultCatchUp.
	CatchUp time.Duration
	// Now is the reader's clock. Defaults to time.Now. The CatchUp timer
	// runs on the real clock (a fake one in testing/synctest).
	Now func() time.Time

	started  bool      // a record arrived
	start    time.Time // Now() at the first record
	lastTime time.Time // time of the newest record
	timer    *time.Timer

	mu       sync.Mutex // guards the fields below
	caughtUp bool       // a record within MaxLag arrived (or the rule is off)
	expired  bool       // the CatchUp timer fired before caughtUp
}

// NewLiveReader returns a reader of channel id under k from src.
func NewLiveReader(src io.Reader, k E2EKey, id ItemID) *LiveReader {
	r := &LiveReader{s: NewLiveSealer(k, id), src: src, buf: make([]byte, LiveMaxRecord)}
	r.openNext = r.fillTimed
	return r
}

// Head returns the current channel head, reading up to it when it has not
// been read yet.
func (r *LiveReader) Head() (LiveHeadInfo, error) {
	for r.head == nil {
		if r.err != nil {
			return LiveHeadInfo{}, r.err
		}
		r.err = r.fillTimed()
	}
	return *r.head, nil
}

func (r *LiveReader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *LiveReader) maxLag() time.Duration {
	if r.MaxLag == 0 {
		return LiveDefaultMaxLag
	}
	return r.MaxLag
}

func (r *LiveReader) catchUp() time.Duration {
	if r.CatchUp <= 0 {
		return LiveDefaultCatchUp
	}
	return r.CatchUp
}

// fillTimed is fill, with the catch-up timer stopped at the reader's end.
func (r *LiveReader) fillTimed() error {
	err := r.fill()
	if err != nil && r.timer != nil {
		r.timer.Stop()
	}
	return err
}

// expire runs when the CatchUp timer fires.
func (r *LiveReader) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.caughtUp {
		return
	}
	r.expired = true
	if c, ok := r.src.(io.Closer); ok {
		c.Close()
	}
}

// staleError is the failure of a reader that did not catch up, at now.
func (r *LiveReader) staleError(now time.Time) error {
	return &LiveStaleError{Lag: now.Sub(r.lastTime), MaxLag: r.maxLag()}
}

// checkFresh applies the catch-up rule to a record of time t that just
// opened (the last record of the channel when last).
func (r *LiveReader) checkFresh(t time.Time, last bool) error {
	now := r.now()
	if !r.started {
		r.started, r.start = true, now
		if r.maxLag() < 0 {
			r.caughtUp = true // the rule is off; no timer
		} else {
			r.timer = time.AfterFunc(r.catchUp(), r.expire)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.caughtUp:
		return nil
	case r.expired:
		return r.staleError(now)
	case now.Sub(t) <= r.maxLag():
		r.caughtUp = true
		r.timer.Stop()
		return nil
	case last || now.Sub(r.start) > r.catchUp():
		return r.staleError(now)
	}
	return nil
}

// fill reads and opens the next record.
func (r *LiveReader) fill() error {
	rec, kind, seq, err := ReadLiveRecord(r.src, r.buf)
	if err != nil {
		r.mu.Lock()
		expired := r.expired
		r.mu.Unlock()
		if expired { // the CatchUp timer closed src
			return r.staleError(r.now())
		}
	}
	if err == io.EOF {
		err = ErrLiveNoEnd
		if r.head == nil && !r.joined {
			err = fmt.Errorf("%w: %w", ErrLiveNoEnd, ErrLiveNoHead)
		}
		if r.EndReason != nil {
			if why := r.EndReason(); why != "" {
				err = fmt.Errorf("%w (%s)", err, why)
			}
		}
		return err
	}
	if err != nil {
		if errors.Is(err, ErrLiveRecord) {
			if errors.Is(err, io.ErrUnexpectedEOF) && r.EndReason != nil {
				if why := r.EndReason(); why != "" {
					return fmt.Errorf("%w: %w (%s)", ErrLiveNoEnd, err, why)
				}
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: %w", ErrLiveNoEnd, err)
			}
			return err
		}
		// The source failed (a reset body): no end mark either.
		return fmt.Errorf("%w: %w", ErrLiveNoEnd, err)
	}
	if kind != LiveHead {
		if r.head == nil {
			return ErrLiveNoHead
		}
		if r.joined && seq != r.next {
			return &LiveRecordError{Kind: kind, Seq: seq, Want: r.next, Err: ErrLiveMissing}
		}
	}
	var head uint64 // the current head's seq: data, sync and last records open under it
	if r.head != nil {
		head = r.head.Seq
	}
	h, plain, err := r.s.OpenRecord(rec[LiveRecordHeader:LiveRecordHeader], rec, head) // in place
	if err != nil {
		return err
	}
	if kind == LiveHead && r.head != nil && seq <= r.head.Seq {
		if seq == r.head.Seq {
			return nil // the same head again (a relay's replay of it): nothing new
		}
		return &LiveRecordError{Kind: kind, Seq: seq, Err: fmt.Errorf("%w: head %d after head %d", ErrLiveHead, seq, r.head.Seq)}
	}
	if r.started && h.Time.Before(r.lastTime) {
		return &LiveRecordError{Kind: kind, Seq: seq, Err: ErrLiveTimeBack}
	}
	r.lastTime = h.Time
	if err := r.checkFresh(h.Time, kind == LiveLast); err != nil {
		return err
	}
	switch kind {
	case LiveHead:
		m, init, err := ParseLiveHead(plain)
		if err != nil {
			return &LiveRecordError{Kind: kind, Seq: seq, Err: err}
		}
		r.head = &LiveHeadInfo{Seq: seq, Meta: m, Init: append([]byte(nil), init...)}
		if r.OnHead != nil {
			r.OnHead(*r.head)
		}
		return nil
	case LiveLast:
		// Its bytes, if any, are handed out before io.EOF.
		r.plain = plain
		r.joined = true
		r.next = seq + 1
		return io.EOF
	default:
		r.plain = plain
		r.joined = true
		r.next = seq + 1
		return nil
	}
}
