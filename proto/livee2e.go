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
//	head   = the head seq the record is bound to: a head record's own seq; for a
//	         data, sync or last record, the seq of the latest head the publisher
//	         sent before it (not on the wire)
//	sealed = AES-256-GCM(Kl, nonce, plaintext, AAD = time:uint64_be || head:uint64_be)
//	                                           (plaintext + 16-byte tag)
//	nonce  = uint88_be(seq) || flag            (12 bytes, as e2e1's chunks)
//
// The time is in clear (relays may look at it; they need not) and is the
// first half of the AEAD's additional data: a relay that changes it makes
// the record fail to open. A publisher's times never go back (it sends
// max(clock, the previous record's time)); heads carry one too.
//
// Head binding. The second half of the additional data binds each data,
// sync and last record to the head it was sealed under, i.e. to the meta
// and init segment its bytes are to be decoded with. It is not on the
// wire (the record header is the same for every kind, and relays need
// nothing new): a reader supplies the seq of the head it took last. A
// relay that withholds a newer head (head seq 1 for a new recorder) and
// passes on the records after it, which readers would otherwise decode
// with the old init segment into garbage, makes the first of them fail
// to open; so does a relay that starts a new reader with an older head
// than the one the records it sends were sealed under. A head record is
// bound to its own seq, so that every record's additional data has the
// same 16-byte form (its nonce carries that seq too). A publisher sends a
// head before any data, sync or last record.
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
// record, else fail with "record N missing"; open each data/sync/last
// record under the current head's seq (the head binding above); hand out
// no byte of a record that does not open, and name its seq (a
// data/sync/last record: "KIND record N does not open under head H: a
// relay changed it or withheld a newer channel head, or it is of another
// channel or key"); take a later head with a higher head seq as the new
// head (readers that play media re-initialise), and ignore the current
// head sent again (same head seq); end cleanly only on a last record, and
// fail with "the channel ended without its end mark" on any other end.
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
// publisher times, and timing. What it can do unnoticed: stop (a reader
// sees the missing end mark); start a new reader up to MaxLag behind the
// live edge; delay a reader that has caught up, which looks the same as
// a slow reader; and withhold a head that no record follows before the
// next head (nothing was sealed under it, so readers lose nothing). It
// cannot pass off a recording older than MaxLag as the live channel, and
// cannot withhold a newer head while passing on the records sealed under
// it: the first of them does not open under the head the reader has
// ("does not open under head H").
//
// Changes: records are bound to their head (the head half of the AAD)
// since the second revision of live1; streams sealed before do not open
// (relays keep nothing, so only a publisher and a reader of different
// revisions meet, and the reader fails at the first record).
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
	// channel or key, with a changed kind, or (a data, sync or last
	// record) sealed under a newer head than the reader's, which a relay
	// withheld.
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
	// Head is the head seq a data, sync or last record was opened under,
	// for ErrLiveIntegrity.
	Head uint64
}

func (e *LiveRecordError) Error() string {
	if errors.Is(e.Err, ErrLiveMissing) {
		return fmt.Sprintf("record %d missing (got %d): %v", e.Want, e.Seq, e.Err)
	}
	if errors.Is(e.Err, ErrLiveTimeBack) {
		return fmt.Sprintf("%s record %d goes back in time: %v", e.Kind, e.Seq, e.Err)
	}
	if errors.Is(e.Err, ErrLiveIntegrity) && e.Kind != LiveHead {
		return fmt.Sprintf("%s record %d does not open under head %d: a relay changed it or withheld a newer channel head, or it is of another channel or key", e.Kind, e.Seq, e.Head)
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

// liveAAD is a record's additional data: time || head (see the format).
func liveAAD(timeBytes []byte, kind LiveKind, seq, head uint64) [16]byte {
	var a [16]byte
	copy(a[:8], timeBytes)
	if kind == LiveHead {
		head = seq
	}
	binary.BigEndian.PutUint64(a[8:], head)
	return a
}

// SealRecord appends the record of kind and seq, stamped with time at,
// holding plain to dst. head is the seq of the head the record is sealed
// under (the latest head the publisher sent); a head record is bound to
// its own seq, and head is ignored for it. plain must be at most
// LiveMaxPlain bytes.
func (l *LiveSealer) SealRecord(dst []byte, kind LiveKind, seq, head uint64, at time.Time, plain []byte) []byte {
	if len(plain) > LiveMaxPlain {
		panic("proto: live1 record plaintext too long")
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+8+8+len(plain)+E2ETagSize))
	dst = append(dst, byte(kind))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, liveMillis(at))
	n := liveNonce(kind, seq)
	aad := liveAAD(dst[len(dst)-8:], kind, seq, head)
	return l.aead.Seal(dst, n[:], plain, aad[:])
}

// OpenRecord checks and opens one whole record, appending its plaintext to
// dst. A data, sync or last record is opened under head, the seq of the
// reader's current head; a head record under its own seq (head is
// ignored). Errors are *LiveRecordError wrapping ErrLiveRecord or
// ErrLiveIntegrity.
func (l *LiveSealer) OpenRecord(dst, rec []byte, head uint64) (h LiveHeader, plain []byte, err error) {
	h.Kind, h.Seq, err = ParseLiveRecord(rec)
	if err != nil {
		return h, nil, err
	}
	h.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(rec[13:21])))
	n := liveNonce(h.Kind, h.Seq)
	aad := liveAAD(rec[13:21], h.Kind, h.Seq, head)
	plain, oerr := l.aead.Open(dst, n[:], rec[LiveRecordHeader:], aad[:])
	if oerr != nil {
		re := &LiveRecordError{Kind: h.Kind, Seq: h.Seq, Err: ErrLiveIntegrity}
		if h.Kind != LiveHead {
			re.Head = head
		}
		return h, nil, re
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
