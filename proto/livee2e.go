package proto

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// # Sealed live channels: format "live1"
//
// A live channel (live.go) carried by relays that are strangers must
// leave them nothing to learn and nothing to change: a volunteer relay
// carrying a sealed channel sees record sizes and kinds, and cannot alter,
// drop, reorder or splice a record without every reader noticing.
//
// Key. The publisher draws K (32 random bytes, an E2EKey) per channel. It
// travels only in the share link's fragment, as items' keys do:
//
//	https://RENDEZVOUS/l/CHANNELID#k=BASE64URL(K)
//
// The record key is bound to the channel id (its 16 raw bytes), so a
// record of another channel never opens, even under the same K:
//
//	Kl = HKDF-SHA256(IKM=K, salt=CHANNELID, info="meshup live1 records", L=32)
//
// Stream. What the publisher sends, relays carry and readers get is a
// sequence of records:
//
//	record = len:uint32_be || kind:uint8 || seq:uint64_be || time:uint64_be || sealed
//	len    = 1 + 8 + 8 + len(sealed)          (the bytes after the len field)
//	time   = the publisher's wall clock when it sealed the record, in Unix milliseconds
//	sealed = AES-256-GCM(Kl, nonce, plaintext, AAD = time)   (plaintext + 16-byte tag)
//	nonce  = uint88_be(seq) || flag            (12 bytes, as e2e1's chunks)
//
// The time is in clear (relays may look at it; they need not) and is the
// AEAD's additional data: a relay that changes it makes the record fail
// to open. A publisher's times never go back (it sends max(clock, the
// previous record's time)); heads carry one too.
//
// The kind is in clear so that relays can act on it (start new readers at
// a sync record, keep the head, end at the last record), and is bound to
// the record by the nonce's flag byte, so that a relay that changes a kind
// makes the record fail to open:
//
//	kind 0 data  flag 0x00  bytes of the stream
//	kind 1 sync  flag 0x03  bytes that start a point where a reader may join
//	kind 2 head  flag 0x02  the channel head: uint32_be metaLen || meta JSON || init
//	kind 3 last  flag 0x01  the publisher's clean end (plaintext may hold the last bytes)
//
// Data, sync and last records share one counter from 0; head records have
// their own (normally one head, seq 0; a publisher that changes its head,
// say for a new recorder, sends head seq 1, 2, ...). A (key, nonce) pair
// is thus never used twice: the two counters differ in the flag byte.
// meta JSON is {"type": MIME, "name": optional file name} (LiveMeta, at
// most LiveMaxMeta bytes); init is the media init segment (for WebM from
// MediaRecorder, the bytes before the first Cluster), possibly empty.
//
// A whole record is at most LiveMaxRecord bytes (the len field included);
// a writer cuts longer plaintext into several records.
//
// Ticks. A publisher that has sent no record for LiveTickInterval (5 s)
// sends an empty data record, so that even a quiet channel always has a
// recent record (LiveWriter.Tick; goLive in client/web).
//
// Readers (LiveReader here, client/web in browsers) must: get a head
// first (a relay sends the channel's latest head to every new subscriber)
// else fail with "no channel head"; accept any seq s0 for the first
// data/sync/last record (they joined mid-stream) and then exactly +1 per
// record, else fail with "record N missing"; hand out no byte of a record
// that does not open, and name its seq; take a later head with a higher
// head seq as the new head (readers that play media re-initialise), and
// ignore the current head sent again (same head seq); end cleanly only on
// a last record, and fail with "the channel ended without its end mark"
// on any other end.
//
// Readers must also see the live edge, so that a relay that recorded a
// channel cannot serve it later as if it were live:
//
//   - times never go back: a record (a head included, but not the current
//     head sent again) whose time is before the previous record's fails
//     with "record N goes back in time". The check follows the record's
//     opening, so a changed time is an integrity failure.
//   - catch up: let t0 be the reader's own clock when the first record
//     arrives. Until the reader has seen a record whose time is at most
//     MaxLag (default 60 s) behind its clock ("caught up"), it fails with
//     "the channel is D behind its publisher: a relay is replaying or
//     delaying it (or the publisher's clock is off; max lag M)" when
//     CatchUp (default 30 s) has passed since t0, whether a record
//     arrives then or none at all (a relay that stalls after a replay:
//     LiveReader closes its source), and at a last record (a whole old
//     channel replayed at once). D is the reader's clock minus the
//     newest record time seen. An honest relay sends a new reader the
//     head, the ring from its latest sync record and the live edge at
//     once, and ticks keep the live edge within LiveTickInterval of the
//     publisher's clock, so honest joins pass. Once caught up, later lag
//     is not checked: a slow reader's own lag is not a relay's doing (a
//     relay cuts slow subscribers off itself).
//
// Readers and publishers whose clocks differ by more than MaxLag fail the
// catch-up rule (the error says so); MaxLag is the reader's option.
//
// Relays (relay/live.go) parse records by their length prefix only: each
// record is one chunk of the channel's ring, never split or merged; they
// keep the latest head apart and send it first to each new subscriber,
// start new subscribers at the latest sync record still in the ring after
// that head (else at the next record to arrive), carry records to
// downstream relays in FrameLiveRecord frames, and end the channel cleanly
// at a last record. They never look inside sealed.
//
// What a relay still learns: the channel id, record sizes, kinds and
// publisher times, and timing. What it can do unnoticed: nothing but stop
// (a reader sees the missing end mark), or start a new reader, or delay
// it, by less than MaxLag + CatchUp behind the live edge.
//
// Test vectors shared by the Go and JavaScript implementations live in
// testdata/live1-vectors.json; livee2e_vectors_test.go documents its
// layout.

// live1 constants.
const (
	// LiveEncVersion names the format (POST /v1/live/{id}?enc=live1, the
	// WebSocket publish's "enc").
	LiveEncVersion = "live1"
	// LiveContentType is the Content-Type of a sealed channel's record
	// stream, pushed and read.
	LiveContentType = "application/x-meshup-live1"
	// LiveMaxRecord bounds a whole record, its len field included.
	LiveMaxRecord = 64 << 10
	// LiveRecordHeader is the size of len, kind, seq and time.
	LiveRecordHeader = 4 + 1 + 8 + 8
	// LiveMinRecord is the smallest record: an empty plaintext's tag.
	LiveMinRecord = LiveRecordHeader + E2ETagSize
	// LiveMaxPlain is the most plaintext one record holds.
	LiveMaxPlain = LiveMaxRecord - LiveMinRecord
	// LiveMaxMeta bounds the head's meta JSON.
	LiveMaxMeta = 4096
	// LiveTickInterval is how long a publisher stays quiet at most: after
	// that it sends an empty data record (a tick).
	LiveTickInterval = 5 * time.Second
	// LiveDefaultMaxLag is how far behind its own clock a reader accepts
	// the live edge (LiveReader.MaxLag).
	LiveDefaultMaxLag = 60 * time.Second
	// LiveDefaultCatchUp is how long a reader waits, from its first
	// record, for the live edge (LiveReader.CatchUp).
	LiveDefaultCatchUp = 30 * time.Second
)

// LiveKind is a record's kind byte.
type LiveKind uint8

// Record kinds.
const (
	LiveData LiveKind = 0
	LiveSync LiveKind = 1
	LiveHead LiveKind = 2
	LiveLast LiveKind = 3
)

func (k LiveKind) String() string {
	switch k {
	case LiveData:
		return "data"
	case LiveSync:
		return "sync"
	case LiveHead:
		return "head"
	case LiveLast:
		return "last"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// flag returns the nonce flag byte of kind k.
func (k LiveKind) flag() byte {
	switch k {
	case LiveSync:
		return 0x03
	case LiveHead:
		return 0x02
	case LiveLast:
		return 0x01
	}
	return 0x00
}

const liveInfoRecords = "meshup live1 records"

// Errors of sealed live channels. A reader's failure is a *LiveRecordError
// wrapping one of them, or one of them alone.
var (
	// ErrLiveRecord means a record is malformed: a length out of bounds,
	// an unknown kind, or a stream cut inside a record.
	ErrLiveRecord = errors.New("proto: malformed live1 record")
	// ErrLiveNoHead means the stream did not begin with a channel head.
	ErrLiveNoHead = errors.New("no channel head")
	// ErrLiveMissing means a record's seq is not the one expected.
	ErrLiveMissing = errors.New("the relay dropped or reordered data")
	// ErrLiveIntegrity means a record did not open: altered, of another
	// channel or key, or with a changed kind.
	ErrLiveIntegrity = errors.New("record failed its integrity check (altered, or of another channel or key)")
	// ErrLiveNoEnd means the stream ended without a last record.
	ErrLiveNoEnd = errors.New("the channel ended without its end mark")
	// ErrLiveHead means a head record is malformed or older than the
	// current head.
	ErrLiveHead = errors.New("bad channel head")
	// ErrLiveTimeBack means a record's publisher time is before the
	// previous record's.
	ErrLiveTimeBack = errors.New("its publisher time is before the previous record's: a relay replayed or spliced it")
	// ErrLiveStale means the reader never reached the live edge: a
	// *LiveStaleError wraps it.
	ErrLiveStale = errors.New("a relay is replaying or delaying it")
)

// LiveStaleError says how far behind its publisher a channel was when the
// reader gave up waiting for the live edge.
type LiveStaleError struct {
	// Lag is the reader's clock minus the newest record time it saw.
	Lag time.Duration
	// MaxLag is the reader's limit.
	MaxLag time.Duration
}

func (e *LiveStaleError) Error() string {
	lag := e.Lag.Round(time.Millisecond)
	if lag >= time.Second {
		lag = lag.Round(time.Second)
	}
	return fmt.Sprintf("the channel is %v behind its publisher: %v (or the publisher's clock is off; max lag %v)", lag, ErrLiveStale, e.MaxLag)
}

func (e *LiveStaleError) Unwrap() error { return ErrLiveStale }

// LiveRecordError names the record at which a reader stopped.
type LiveRecordError struct {
	Kind LiveKind
	Seq  uint64
	Err  error
	// Want is the expected seq, for ErrLiveMissing.
	Want uint64
}

func (e *LiveRecordError) Error() string {
	if errors.Is(e.Err, ErrLiveMissing) {
		return fmt.Sprintf("record %d missing (got %d): %v", e.Want, e.Seq, e.Err)
	}
	if errors.Is(e.Err, ErrLiveTimeBack) {
		return fmt.Sprintf("%s record %d goes back in time: %v", e.Kind, e.Seq, e.Err)
	}
	return fmt.Sprintf("%s record %d: %v", e.Kind, e.Seq, e.Err)
}

func (e *LiveRecordError) Unwrap() error { return e.Err }

// LiveDeriveKey returns the record key Kl of channel id under k.
func LiveDeriveKey(k E2EKey, id ItemID) [32]byte {
	b, err := hkdf.Key(sha256.New, k[:], id[:], liveInfoRecords, 32)
	if err != nil {
		panic(err)
	}
	var kl [32]byte
	copy(kl[:], b)
	return kl
}

// LiveSealer seals and opens the records of one channel. It is safe for
// concurrent use.
type LiveSealer struct {
	aead cipher.AEAD
}

// NewLiveSealer derives the record key of channel id under k.
func NewLiveSealer(k E2EKey, id ItemID) *LiveSealer {
	return &LiveSealer{aead: newGCM(LiveDeriveKey(k, id))}
}

func liveNonce(kind LiveKind, seq uint64) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[3:11], seq)
	n[11] = kind.flag()
	return n
}

// LiveHeader is the clear part of a record after its len field.
type LiveHeader struct {
	Kind LiveKind
	Seq  uint64
	// Time is the publisher's clock when it sealed the record, to the
	// millisecond.
	Time time.Time
}

// liveMillis is t in Unix milliseconds, 0 for times before 1970.
func liveMillis(t time.Time) uint64 {
	return uint64(max(t.UnixMilli(), 0))
}

// SealRecord appends the record of kind and seq, stamped with time at,
// holding plain to dst. plain must be at most LiveMaxPlain bytes.
func (l *LiveSealer) SealRecord(dst []byte, kind LiveKind, seq uint64, at time.Time, plain []byte) []byte {
	if len(plain) > LiveMaxPlain {
		panic("proto: live1 record plaintext too long")
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+8+8+len(plain)+E2ETagSize))
	dst = append(dst, byte(kind))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, liveMillis(at))
	n := liveNonce(kind, seq)
	return l.aead.Seal(dst, n[:], plain, dst[len(dst)-8:])
}

// OpenRecord checks and opens one whole record, appending its plaintext to
// dst. Errors are *LiveRecordError wrapping ErrLiveRecord or
// ErrLiveIntegrity.
func (l *LiveSealer) OpenRecord(dst, rec []byte) (h LiveHeader, plain []byte, err error) {
	h.Kind, h.Seq, err = ParseLiveRecord(rec)
	if err != nil {
		return h, nil, err
	}
	h.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(rec[13:21])))
	n := liveNonce(h.Kind, h.Seq)
	plain, oerr := l.aead.Open(dst, n[:], rec[LiveRecordHeader:], rec[13:21])
	if oerr != nil {
		return h, nil, &LiveRecordError{Kind: h.Kind, Seq: h.Seq, Err: ErrLiveIntegrity}
	}
	return h, plain, nil
}

// ParseLiveRecord checks that rec is exactly one record, within bounds and
// of a known kind, and returns its kind and seq. It does no cryptography
// (relays use it).
func ParseLiveRecord(rec []byte) (LiveKind, uint64, error) {
	if len(rec) < 4 {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrLiveRecord, len(rec))
	}
	n := binary.BigEndian.Uint32(rec)
	if err := checkLiveLen(n); err != nil {
		return 0, 0, err
	}
	if int(n) != len(rec)-4 {
		return 0, 0, fmt.Errorf("%w: length %d in a message of %d bytes", ErrLiveRecord, n, len(rec))
	}
	return checkLiveKind(rec[4], binary.BigEndian.Uint64(rec[5:]))
}

func checkLiveLen(n uint32) error {
	if n < LiveMinRecord-4 || n > LiveMaxRecord-4 {
		return fmt.Errorf("%w: length %d out of [%d, %d]", ErrLiveRecord, n, LiveMinRecord-4, LiveMaxRecord-4)
	}
	return nil
}

func checkLiveKind(k byte, seq uint64) (LiveKind, uint64, error) {
	if k > byte(LiveLast) {
		return LiveKind(k), seq, fmt.Errorf("%w: unknown kind %d", ErrLiveRecord, k)
	}
	return LiveKind(k), seq, nil
}

// ReadLiveRecord reads one whole record from r into buf (grown as needed;
// pass nil to allocate) and returns it with its kind and seq, checking
// bounds and kind only (no cryptography). At a clean end between records
// it returns io.EOF; inside a record, an error wrapping ErrLiveRecord and
// io.ErrUnexpectedEOF.
func ReadLiveRecord(r io.Reader, buf []byte) (rec []byte, kind LiveKind, seq uint64, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil, 0, 0, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return nil, 0, 0, fmt.Errorf("%w: stream cut inside a record: %w", ErrLiveRecord, err)
		}
		return nil, 0, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if err := checkLiveLen(n); err != nil {
		return nil, 0, 0, err
	}
	if cap(buf) < 4+int(n) {
		buf = make([]byte, 4+int(n))
	}
	rec = buf[:4+int(n)]
	copy(rec, hdr[:])
	if _, err := io.ReadFull(r, rec[4:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, 0, 0, fmt.Errorf("%w: stream cut inside a record: %w", ErrLiveRecord, io.ErrUnexpectedEOF)
		}
		return nil, 0, 0, err
	}
	kind, seq, err = checkLiveKind(rec[4], binary.BigEndian.Uint64(rec[5:]))
	return rec, kind, seq, err
}

// LiveMeta is the meta JSON of a channel head.
type LiveMeta struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
}

// LiveHeadInfo is an opened channel head.
type LiveHeadInfo struct {
	Seq  uint64
	Meta LiveMeta
	Init []byte
}

// AppendLiveHead appends the plaintext of a head: uint32_be metaLen ||
// meta JSON || init.
func AppendLiveHead(dst []byte, m LiveMeta, init []byte) ([]byte, error) {
	mj, err := json.Marshal(m)
	if err != nil {
		return dst, err
	}
	if len(mj) > LiveMaxMeta {
		return dst, fmt.Errorf("%w: meta of %d bytes, limit %d", ErrLiveHead, len(mj), LiveMaxMeta)
	}
	if 4+len(mj)+len(init) > LiveMaxPlain {
		return dst, fmt.Errorf("%w: head of %d bytes, limit %d", ErrLiveHead, 4+len(mj)+len(init), LiveMaxPlain)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(mj)))
	dst = append(dst, mj...)
	return append(dst, init...), nil
}

// ParseLiveHead parses a head's plaintext.
func ParseLiveHead(plain []byte) (LiveMeta, []byte, error) {
	var m LiveMeta
	if len(plain) < 4 {
		return m, nil, fmt.Errorf("%w: %d bytes", ErrLiveHead, len(plain))
	}
	n := binary.BigEndian.Uint32(plain)
	if n > LiveMaxMeta || int(n) > len(plain)-4 {
		return m, nil, fmt.Errorf("%w: meta length %d in %d bytes", ErrLiveHead, n, len(plain))
	}
	if err := json.Unmarshal(plain[4:4+n], &m); err != nil {
		return m, nil, fmt.Errorf("%w: meta: %v", ErrLiveHead, err)
	}
	return m, plain[4+n:], nil
}

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

var errLiveWriterClosed = errors.New("proto: live writer closed")

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

// record seals and writes one record; lw.mu is held.
func (lw *LiveWriter) record(kind LiveKind, seq uint64, plain []byte) error {
	if lw.err != nil {
		return lw.err
	}
	if lw.closed {
		return errLiveWriterClosed
	}
	now := lw.now()
	lw.lastTime = max(lw.lastTime, liveMillis(now))
	lw.lastAt = now
	lw.buf = lw.s.SealRecord(lw.buf[:0], kind, seq, time.UnixMilli(int64(lw.lastTime)), plain)
	if _, err := lw.w.Write(lw.buf); err != nil {
		lw.err = err
		return err
	}
	return nil
}

// Head writes a channel head with meta m and init segment init. The first
// record of a channel must be a head; a later one replaces it for readers.
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
// record's bytes only after the whole record opened; after an error every
// call returns it again. It ends with io.EOF only after a last record.
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
	h, plain, err := r.s.OpenRecord(rec[LiveRecordHeader:LiveRecordHeader], rec) // in place
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
