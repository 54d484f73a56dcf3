package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

const liveVectorsFile = "testdata/live1-vectors.json"

// The layout of testdata/live1-vectors.json, shared with the JavaScript
// implementation (client/web). Byte strings are lowercase hex. Regenerate
// with: go test ./proto -run TestLive1Vectors -update
//
//	comment            free text
//	format             "live1"
//	max_record         LiveMaxRecord (whole record, len field included)
//	key_hex            the channel key K
//	key_fragment       the share link fragment carrying K, without '#'
//	channel_secret     the channel secret S (proto.LiveID)
//	channel_id         the channel id, text form (26 base32 characters)
//	channel_id_hex     its 16 raw bytes (the HKDF salt)
//	records_key_hex    Kl = HKDF-SHA256(K, salt=channel id, "meshup live1 records", 32)
//	flags              {kind name: nonce flag byte}
//	now_ms             the reader's clock (Unix ms) for every stream below
//	                   but those with their own now_ms
//	max_lag_ms         the reader's MaxLag (the default, 60 s)
//	catch_up_ms        the reader's CatchUp (the default, 30 s)
//	records[]          one valid stream, record by record:
//	  kind             "head", "data", "sync" or "last"
//	  kind_byte        its kind byte
//	  seq              its seq
//	  head_seq         the head seq it is sealed under (a head: its own seq)
//	  time_ms          its publisher time (Unix ms)
//	                   (the AAD is uint64_be(time_ms) || uint64_be(head_seq))
//	  plain_hex        its plaintext
//	  record_hex       the whole record
//	  meta             (head only) the meta JSON text inside plain_hex
//	  init_hex         (head only) the init bytes inside plain_hex
//	stream_hex         the records concatenated (what a reader gets): a
//	                   stream with a head change (head 0, records under
//	                   it, head 1, records under it)
//	output_hex         what a reader hands out: the plaintexts of the
//	                   data, sync and last records, in order
//	joins[]            valid streams as a reader joining mid-stream gets
//	                   them: {name, stream_hex, output_hex, head_seq}
//	                   (head_seq: the seq of the head in force at the end)
//	negative[]         streams a reader must reject: {name, stream_hex,
//	                   error, seq, output_hex, now_ms (when not the file's),
//	                   message (when set, the error's exact text in every
//	                   implementation)}.
//	                   The reader, its clock at now_ms, hands out exactly
//	                   output_hex (all correct) and then fails with error:
//	    "no_head"      the first record is not a head
//	    "missing"      a data/sync/last record's seq is not previous+1
//	                   (seq = the seq expected)
//	    "integrity"    a record does not open (seq = its seq), e.g. a
//	                   record sealed under a head the relay withheld
//	    "no_end"       the stream ended without a last record
//	    "malformed"    a length out of bounds or an unknown kind
//	    "head"         a head older than the current one
//	    "time"         a record's time is before the previous record's
//	                   (seq = its seq)
//	    "stale"        the reader did not catch up with the live edge (here:
//	                   a whole channel replayed 10 minutes later, failing at
//	                   its last record)
type liveVectors struct {
	Comment       string            `json:"comment"`
	Format        string            `json:"format"`
	MaxRecord     int               `json:"max_record"`
	KeyHex        string            `json:"key_hex"`
	KeyFragment   string            `json:"key_fragment"`
	ChannelSecret string            `json:"channel_secret"`
	ChannelID     string            `json:"channel_id"`
	ChannelIDHex  string            `json:"channel_id_hex"`
	RecordsKeyHex string            `json:"records_key_hex"`
	Flags         map[string]int    `json:"flags"`
	NowMs         int64             `json:"now_ms"`
	MaxLagMs      int64             `json:"max_lag_ms"`
	CatchUpMs     int64             `json:"catch_up_ms"`
	Records       []liveRecordVec   `json:"records"`
	StreamHex     string            `json:"stream_hex"`
	OutputHex     string            `json:"output_hex"`
	Joins         []liveJoinVec     `json:"joins"`
	Negative      []liveNegativeVec `json:"negative"`
}

type liveRecordVec struct {
	Kind      string `json:"kind"`
	KindByte  int    `json:"kind_byte"`
	Seq       uint64 `json:"seq"`
	HeadSeq   uint64 `json:"head_seq"`
	TimeMs    int64  `json:"time_ms"`
	PlainHex  string `json:"plain_hex"`
	RecordHex string `json:"record_hex"`
	Meta      string `json:"meta,omitempty"`
	InitHex   string `json:"init_hex,omitempty"`
}

type liveJoinVec struct {
	Name      string `json:"name"`
	StreamHex string `json:"stream_hex"`
	OutputHex string `json:"output_hex"`
	HeadSeq   uint64 `json:"head_seq"`
}

type liveNegativeVec struct {
	Name      string `json:"name"`
	StreamHex string `json:"stream_hex"`
	Error     string `json:"error"`
	Seq       uint64 `json:"seq"`
	OutputHex string `json:"output_hex"`
	NowMs     int64  `json:"now_ms,omitempty"`
	Message   string `json:"message,omitempty"`
}

const vecLiveSecret = "live1-test-vector-channel-secret"

// vecLiveT0 is the publisher time of the vectors' first record
// (2026-01-01T00:00:00Z); record i is stamped vecLiveT0 + i s, and the
// reader's clock is vecLiveNow.
var (
	vecLiveT0  = time.UnixMilli(1767225600000)
	vecLiveNow = vecLiveT0.Add(10 * time.Second)
)

type liveVecStream struct {
	recs  [][]byte
	kinds []LiveKind
	heads []uint64 // the head seq each record is sealed under
	times []time.Time
	plain [][]byte
}

// vecLiveStream seals the vectors' valid stream.
func vecLiveStream(k E2EKey, id ItemID) (liveVecStream, LiveMeta, []byte, LiveMeta, []byte) {
	ls := NewLiveSealer(k, id)
	var s liveVecStream
	var head uint64 // the latest head's seq
	add := func(kind LiveKind, seq uint64, p []byte) {
		at := vecLiveT0.Add(time.Duration(len(s.recs)) * time.Second)
		if kind == LiveHead {
			head = seq
		}
		s.recs = append(s.recs, ls.SealRecord(nil, kind, seq, head, at, p))
		s.kinds = append(s.kinds, kind)
		s.heads = append(s.heads, head)
		s.times = append(s.times, at)
		s.plain = append(s.plain, p)
	}
	m0 := LiveMeta{Type: "video/webm;codecs=vp8,opus", Name: "caméra.webm"}
	init0 := []byte{0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81, 0x01}
	h0, _ := AppendLiveHead(nil, m0, init0)
	m1 := LiveMeta{Type: "application/octet-stream"}
	h1, _ := AppendLiveHead(nil, m1, nil)
	add(LiveHead, 0, h0)
	add(LiveSync, 0, []byte("cluster 0: "))
	add(LiveData, 1, []byte("some bytes, "))
	add(LiveData, 2, []byte{})
	add(LiveSync, 3, []byte("cluster 1; "))
	add(LiveHead, 1, h1)
	add(LiveSync, 4, []byte("new head, "))
	add(LiveLast, 5, []byte("bye"))
	return s, m0, init0, m1, nil
}

func joinRecs(recs ...[]byte) []byte { return bytes.Join(recs, nil) }

func makeLiveVectors(t testing.TB) liveVectors {
	k := vecKey()
	id, err := LiveID(vecLiveSecret)
	if err != nil {
		t.Fatal(err)
	}
	kl := LiveDeriveKey(k, id)
	v := liveVectors{
		Comment:       "meshup live1 test vectors; format in proto/livee2e.go, layout of this file in proto/livee2e_vectors_test.go; regenerate with go test ./proto -run TestLive1Vectors -update",
		Format:        LiveEncVersion,
		MaxRecord:     LiveMaxRecord,
		KeyHex:        hex.EncodeToString(k[:]),
		KeyFragment:   k.Fragment(),
		ChannelSecret: vecLiveSecret,
		ChannelID:     id.String(),
		ChannelIDHex:  hex.EncodeToString(id[:]),
		RecordsKeyHex: hex.EncodeToString(kl[:]),
		Flags:         map[string]int{"data": 0, "sync": 3, "head": 2, "last": 1},
		NowMs:         vecLiveNow.UnixMilli(),
		MaxLagMs:      LiveDefaultMaxLag.Milliseconds(),
		CatchUpMs:     LiveDefaultCatchUp.Milliseconds(),
	}
	s, m0, init0, m1, _ := vecLiveStream(k, id)
	var out []byte
	for i, rec := range s.recs {
		rv := liveRecordVec{Kind: s.kinds[i].String(), KindByte: int(s.kinds[i]), Seq: uint64FromRec(rec), HeadSeq: s.heads[i], TimeMs: s.times[i].UnixMilli(), PlainHex: hex.EncodeToString(s.plain[i]), RecordHex: hex.EncodeToString(rec)}
		if s.kinds[i] == LiveHead {
			m, init := m0, init0
			if rv.Seq == 1 {
				m, init = m1, nil
			}
			mj, _ := json.Marshal(m)
			rv.Meta, rv.InitHex = string(mj), hex.EncodeToString(init)
		} else {
			out = append(out, s.plain[i]...)
		}
		v.Records = append(v.Records, rv)
	}
	v.StreamHex = hex.EncodeToString(joinRecs(s.recs...))
	v.OutputHex = hex.EncodeToString(out)

	r := s.recs // 0 head0, 1 sync0, 2 data1, 3 data2, 4 sync3, 5 head1, 6 sync4, 7 last5
	cat := func(idx ...int) []byte {
		var b []byte
		for _, i := range idx {
			b = append(b, r[i]...)
		}
		return b
	}
	plainOf := func(idx ...int) []byte {
		var b []byte
		for _, i := range idx {
			b = append(b, s.plain[i]...)
		}
		return b
	}
	v.Joins = []liveJoinVec{
		{Name: "join at sync 3 with head 0, then a head change (head 0, a record under it, head 1, records under it)", StreamHex: hex.EncodeToString(cat(0, 4, 5, 6, 7)), OutputHex: hex.EncodeToString(plainOf(4, 6, 7)), HeadSeq: 1},
		{Name: "join at sync 4 with head 1", StreamHex: hex.EncodeToString(cat(5, 6, 7)), OutputHex: hex.EncodeToString(plainOf(6, 7)), HeadSeq: 1},
		{Name: "head 0 twice (a relay's replay of the current head)", StreamHex: hex.EncodeToString(cat(0, 0, 1, 2, 3, 4, 5, 6, 7)), OutputHex: hex.EncodeToString(plainOf(1, 2, 3, 4, 6, 7)), HeadSeq: 1},
		{Name: "head 1 twice, between its records (a relay's replay of the current head)", StreamHex: hex.EncodeToString(cat(0, 1, 2, 3, 4, 5, 6, 5, 7)), OutputHex: hex.EncodeToString(plainOf(1, 2, 3, 4, 6, 7)), HeadSeq: 1},
	}
	for _, j := range v.Joins {
		b, _ := hex.DecodeString(j.StreamHex)
		got, err := readLive(k, id, b)
		if err != nil || hex.EncodeToString(got) != j.OutputHex {
			t.Fatalf("join %q: got %q, %v", j.Name, got, err)
		}
	}

	flip := func(b []byte, off int) []byte { b = bytes.Clone(b); b[off] ^= 1; return b }
	other, _ := LiveID("another-channel-secret-for-live1")
	otherChan := NewLiveSealer(k, other).SealRecord(nil, LiveData, 2, 0, s.times[3], s.plain[3])
	wrongKey := NewLiveSealer(vecOtherKey(), id).SealRecord(nil, LiveData, 2, 0, s.times[3], s.plain[3])
	kindChanged := bytes.Clone(r[2])
	kindChanged[4] = byte(LiveSync)
	lastAsData := bytes.Clone(r[7])
	lastAsData[4] = byte(LiveData)
	tooLong := []byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	badKind := bytes.Clone(r[2])
	badKind[4] = 4
	ls := NewLiveSealer(k, id)
	timeBack := ls.SealRecord(nil, LiveData, 2, 0, s.times[1], s.plain[3]) // before data 1's time
	h1, _ := hex.DecodeString(v.Records[5].PlainHex)
	headBack := ls.SealRecord(nil, LiveHead, 1, 1, s.times[3], h1) // before sync 3's time
	// Data 2 sealed under head 1 while the reader has head 0: the same
	// bytes, time and seq as record 3, bound to a head that never came.
	underHead1 := ls.SealRecord(nil, LiveData, 2, 1, s.times[3], s.plain[3])
	withheld := "sync record 4 does not open under head 0: a relay changed it or withheld a newer channel head, or it is of another channel or key"
	replayedAt := vecLiveNow.Add(10 * time.Minute)
	negs := []struct {
		name   string
		stream []byte
		now    time.Time
		msg    string // the error's exact text, in every implementation
	}{
		{"no head first", cat(1, 2, 3, 4, 7), time.Time{}, ""},
		{"empty stream", nil, time.Time{}, ""},
		{"flip a byte in a data record's ciphertext", append(append(cat(0, 1), flip(r[2], LiveRecordHeader+1)...), cat(3, 4, 5, 6, 7)...), time.Time{}, ""},
		{"flip a byte in a data record's tag", append(append(cat(0, 1), flip(r[2], len(r[2])-1)...), cat(3, 4, 5, 6, 7)...), time.Time{}, ""},
		{"flip a byte of the seq", append(append(cat(0, 1), flip(r[2], 12)...), cat(3, 4, 5, 6, 7)...), time.Time{}, ""},
		{"flip a byte of the head", append(flip(r[0], 30), cat(1, 2)...), time.Time{}, ""},
		{"change a data record's kind to sync", append(append(cat(0, 1), kindChanged...), cat(3, 4, 5, 6, 7)...), time.Time{}, ""},
		{"change the last record's kind to data", append(cat(0, 1, 2, 3, 4, 5, 6), lastAsData...), time.Time{}, ""},
		{"drop a record", cat(0, 1, 3, 4, 5, 6, 7), time.Time{}, ""},
		{"reorder two records", cat(0, 1, 3, 2, 4, 5, 6, 7), time.Time{}, ""},
		{"repeat a record", cat(0, 1, 2, 2, 3, 4, 5, 6, 7), time.Time{}, ""},
		{"truncate before the last record", cat(0, 1, 2, 3, 4, 5, 6), time.Time{}, ""},
		{"truncate inside a record", append(cat(0, 1), r[2][:10]...), time.Time{}, ""},
		{"splice a record of another channel", append(append(cat(0, 1, 2), otherChan...), cat(4, 5, 6, 7)...), time.Time{}, ""},
		{"splice a record sealed under another key", append(append(cat(0, 1, 2), wrongKey...), cat(4, 5, 6, 7)...), time.Time{}, ""},
		{"record length over the maximum", append(cat(0, 1), tooLong...), time.Time{}, ""},
		{"unknown kind", append(cat(0, 1), badKind...), time.Time{}, ""},
		{"an older head after a newer one", cat(5, 6, 0, 7), time.Time{}, ""},
		{"change a record's time", append(append(cat(0, 1), flip(r[2], 20)...), cat(3, 4, 5, 6, 7)...), time.Time{}, ""},
		{"a record goes back in time", append(cat(0, 1, 2), append(timeBack, cat(4, 5, 6, 7)...)...), time.Time{}, ""},
		{"a head goes back in time", append(cat(0, 1, 2, 3, 4), append(headBack, cat(6, 7)...)...), time.Time{}, ""},
		{"a whole channel replayed 10 minutes later", cat(0, 1, 2, 3, 4, 5, 6, 7), replayedAt, ""},
		{"a newer head withheld (head 1 dropped, its records passed on)", cat(0, 1, 2, 3, 4, 6, 7), time.Time{}, withheld},
		{"a joining reader given the older head (head 0, then records under head 1)", cat(0, 6, 7), time.Time{}, withheld},
		{"a data record sealed under a head the reader never got", append(append(cat(0, 1, 2), underHead1...), cat(4, 5, 6, 7)...), time.Time{}, "data record 2 does not open under head 0: a relay changed it or withheld a newer channel head, or it is of another channel or key"},
	}
	for _, n := range negs {
		now := n.now
		if now.IsZero() {
			now = vecLiveNow
		}
		got, err := readLiveAt(k, id, n.stream, now)
		nv := liveNegativeVec{Name: n.name, StreamHex: hex.EncodeToString(n.stream), OutputHex: hex.EncodeToString(got), Message: n.msg}
		if n.msg != "" && (err == nil || err.Error() != n.msg) {
			t.Fatalf("%s: error %v, want %q", n.name, err, n.msg)
		}
		if !n.now.IsZero() {
			nv.NowMs = n.now.UnixMilli()
		}
		var re *LiveRecordError
		switch {
		case err == nil:
			t.Fatalf("%s: reader did not fail", n.name)
		case errors.Is(err, ErrLiveMissing):
			errors.As(err, &re)
			nv.Error, nv.Seq = "missing", re.Want
		case errors.Is(err, ErrLiveIntegrity):
			errors.As(err, &re)
			nv.Error, nv.Seq = "integrity", re.Seq
		case errors.Is(err, ErrLiveNoHead) && !errors.Is(err, ErrLiveNoEnd):
			nv.Error = "no_head"
		case errors.Is(err, ErrLiveNoEnd):
			nv.Error = "no_end"
		case errors.Is(err, ErrLiveRecord):
			nv.Error = "malformed"
		case errors.Is(err, ErrLiveHead):
			errors.As(err, &re)
			nv.Error, nv.Seq = "head", re.Seq
		case errors.Is(err, ErrLiveTimeBack):
			errors.As(err, &re)
			nv.Error, nv.Seq = "time", re.Seq
		case errors.Is(err, ErrLiveStale):
			nv.Error = "stale"
		default:
			t.Fatalf("%s: error %v of no known kind", n.name, err)
		}
		v.Negative = append(v.Negative, nv)
	}
	return v
}

func uint64FromRec(rec []byte) uint64 {
	_, seq, _ := ParseLiveRecord(rec)
	return seq
}

// readLive reads stream whole with a LiveReader whose clock is the
// vectors' reader clock.
func readLive(k E2EKey, id ItemID, stream []byte) ([]byte, error) {
	return readLiveAt(k, id, stream, vecLiveNow)
}

// readLiveAt reads stream whole with a LiveReader whose clock stands at
// now.
func readLiveAt(k E2EKey, id ItemID, stream []byte, now time.Time) ([]byte, error) {
	r := NewLiveReader(bytes.NewReader(stream), k, id)
	r.Now = func() time.Time { return now }
	return io.ReadAll(r)
}

func TestLive1Vectors(t *testing.T) {
	v := makeLiveVectors(t)
	got, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateVectors {
		if err := os.WriteFile(liveVectorsFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(liveVectorsFile)
	if err != nil {
		t.Fatalf("read vectors (run with -update to create them): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what the Go implementation produces (first difference near byte %d)", liveVectorsFile, firstDiff(got, want))
	}
	var fv liveVectors
	if err := json.Unmarshal(want, &fv); err != nil {
		t.Fatal(err)
	}
	// Independently of the sealer: open each record with the standard
	// library from the text of the format.
	kl, _ := hex.DecodeString(fv.RecordsKeyHex)
	g := newGCM([32]byte(kl))
	for _, r := range fv.Records {
		rec, _ := hex.DecodeString(r.RecordHex)
		nonce := make([]byte, 12)
		copy(nonce[3:11], rec[5:13])
		nonce[11] = byte(fv.Flags[r.Kind])
		aad := binary.BigEndian.AppendUint64(bytes.Clone(rec[13:21]), r.HeadSeq)
		p, err := g.Open(nil, nonce, rec[21:], aad)
		if err != nil || hex.EncodeToString(p) != r.PlainHex || int(rec[4]) != r.KindByte || int64(binary.BigEndian.Uint64(rec[13:21])) != r.TimeMs {
			t.Errorf("record %s %d: does not open from the format's text: %v", r.Kind, r.Seq, err)
		}
	}
	kb, _ := hex.DecodeString(fv.KeyHex)
	idb, _ := hex.DecodeString(fv.ChannelIDHex)
	stream, _ := hex.DecodeString(fv.StreamHex)
	out, err := readLiveAt(E2EKey(kb), ItemID(idb), stream, time.UnixMilli(fv.NowMs))
	if err != nil || hex.EncodeToString(out) != fv.OutputHex {
		t.Errorf("valid stream: got %q, %v", out, err)
	}
}

// TestLiveReaderRules checks the named errors of tampered streams, and
// that no byte of a failing record is handed out.
func TestLiveReaderRules(t *testing.T) {
	v := makeLiveVectors(t)
	want := map[string]string{
		"no head first": "no_head",
		"empty stream":  "no_end",
		"flip a byte in a data record's ciphertext":                     "integrity",
		"flip a byte in a data record's tag":                            "integrity",
		"flip a byte of the seq":                                        "missing",
		"flip a byte of the head":                                       "integrity",
		"change a data record's kind to sync":                           "integrity",
		"change the last record's kind to data":                         "integrity",
		"drop a record":                                                 "missing",
		"reorder two records":                                           "missing",
		"repeat a record":                                               "missing",
		"truncate before the last record":                               "no_end",
		"truncate inside a record":                                      "no_end",
		"splice a record of another channel":                            "integrity",
		"splice a record sealed under another key":                      "integrity",
		"record length over the maximum":                                "malformed",
		"unknown kind":                                                  "malformed",
		"an older head after a newer one":                               "head",
		"change a record's time":                                        "integrity",
		"a record goes back in time":                                    "time",
		"a head goes back in time":                                      "time",
		"a whole channel replayed 10 minutes later":                     "stale",
		"a newer head withheld (head 1 dropped, its records passed on)": "integrity",
		"a joining reader given the older head (head 0, then records under head 1)": "integrity",
		"a data record sealed under a head the reader never got":                    "integrity",
	}
	full, _ := hex.DecodeString(v.OutputHex)
	for _, n := range v.Negative {
		if want[n.Name] != n.Error {
			t.Errorf("%s: error %q, want %q", n.Name, n.Error, want[n.Name])
		}
		out, _ := hex.DecodeString(n.OutputHex)
		if n.Name != "an older head after a newer one" && !bytes.HasPrefix(full, out) {
			t.Errorf("%s: handed out %q, not a prefix of the plaintext", n.Name, out)
		}
	}
	if len(v.Negative) != len(want) {
		t.Errorf("%d negative vectors, want %d", len(v.Negative), len(want))
	}
	// The error text names the missing record.
	_, err := readLive(vecKey(), mustLiveID(t), mustHex(v.Negative[8].StreamHex))
	if err == nil || err.Error() != "record 1 missing (got 2): the relay dropped or reordered data" {
		t.Errorf("drop a record: error %q", err)
	}
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

func mustLiveID(t *testing.T) ItemID {
	id, err := LiveID(vecLiveSecret)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestLiveWriter: a LiveWriter's stream reads back through a LiveReader,
// one record per Write, long writes cut at LiveMaxPlain.
func TestLiveWriter(t *testing.T) {
	k, id := NewE2EKey(), mustLiveID(t)
	var recs [][]byte
	w := NewLiveWriter(writerFunc(func(p []byte) (int, error) {
		if _, _, err := ParseLiveRecord(p); err != nil {
			t.Fatalf("a Write is not one record: %v", err)
		}
		recs = append(recs, bytes.Clone(p))
		return len(p), nil
	}), k, id)
	if err := w.Head(LiveMeta{Type: "text/plain", Name: "x.txt"}, []byte("init")); err != nil {
		t.Fatal(err)
	}
	big := vecPlain(3*LiveMaxPlain + 5)
	w.Sync([]byte("s"))
	w.Write(big)
	w.Write(nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+1+4+1+1 {
		t.Errorf("%d records, want 8", len(recs))
	}
	for _, rec := range recs {
		if len(rec) > LiveMaxRecord {
			t.Errorf("record of %d bytes", len(rec))
		}
	}
	r := NewLiveReader(bytes.NewReader(bytes.Join(recs, nil)), k, id)
	h, err := r.Head()
	if err != nil || h.Meta.Name != "x.txt" || string(h.Init) != "init" {
		t.Fatalf("head %+v, %v", h, err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, append([]byte("s"), big...)) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	// A wrong key fails on the head.
	_, err = io.ReadAll(NewLiveReader(bytes.NewReader(bytes.Join(recs, nil)), NewE2EKey(), id))
	if !errors.Is(err, ErrLiveIntegrity) {
		t.Errorf("wrong key: %v", err)
	}
}

// TestLiveWriterHeadChange: a LiveWriter refuses data before its first
// head; a second Head is head seq 1, and the records after it are sealed
// under it: a reader given the whole stream reads it all under both
// heads, and one from which head 1 is withheld fails at the first record
// after it, handing out none of its bytes.
func TestLiveWriterHeadChange(t *testing.T) {
	k, id := NewE2EKey(), mustLiveID(t)
	var recs [][]byte
	w := NewLiveWriter(writerFunc(func(p []byte) (int, error) {
		recs = append(recs, bytes.Clone(p))
		return len(p), nil
	}), k, id)
	if _, err := w.Write([]byte("too early")); !errors.Is(err, ErrLiveNoHead) || len(recs) != 0 {
		t.Fatalf("Write before Head: %v, %d records; want ErrLiveNoHead and none", err, len(recs))
	}
	w.Head(LiveMeta{Type: "video/webm"}, []byte("init0"))
	w.Sync([]byte("a;"))
	w.Head(LiveMeta{Type: "video/webm", Name: "2.webm"}, []byte("init1"))
	w.Sync([]byte("b;"))
	w.Write([]byte("c;"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, rec := range recs {
		kind, seq, _ := ParseLiveRecord(rec)
		kinds = append(kinds, fmt.Sprintf("%s %d", kind, seq))
	}
	if got := strings.Join(kinds, ", "); got != "head 0, sync 0, head 1, sync 1, data 2, last 3" {
		t.Fatalf("records %s", got)
	}
	read := func(recs ...[]byte) (string, []LiveHeadInfo, error) {
		r := NewLiveReader(bytes.NewReader(bytes.Join(recs, nil)), k, id)
		var heads []LiveHeadInfo
		r.OnHead = func(h LiveHeadInfo) { heads = append(heads, h) }
		out, err := io.ReadAll(r)
		return string(out), heads, err
	}
	out, heads, err := read(recs...)
	if err != nil || out != "a;b;c;" || len(heads) != 2 || heads[1].Seq != 1 || string(heads[1].Init) != "init1" {
		t.Errorf("whole stream: %q, heads %+v, %v", out, heads, err)
	}
	out, heads, err = read(recs[0], recs[1], recs[3], recs[4], recs[5])
	var re *LiveRecordError
	if !errors.Is(err, ErrLiveIntegrity) || !errors.As(err, &re) || re.Seq != 1 || re.Head != 0 || out != "a;" || len(heads) != 1 {
		t.Errorf("head 1 withheld: %q, %d heads, %v; want a; and an integrity error at record 1 under head 0", out, len(heads), err)
	}
	if want := "sync record 1 does not open under head 0: a relay changed it or withheld a newer channel head, or it is of another channel or key"; err == nil || err.Error() != want {
		t.Errorf("head 1 withheld: error %q, want %q", err, want)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// FuzzLiveReader feeds arbitrary streams to the record splitter and the
// reader: no panic, and a reader that ends cleanly saw a last record that
// opened.
func FuzzLiveReader(f *testing.F) {
	v := makeLiveVectors(f)
	f.Add(mustHex(v.StreamHex))
	for _, n := range v.Negative {
		f.Add(mustHex(n.StreamHex))
	}
	k, id := vecKey(), mustLiveIDF(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := bytes.NewReader(b)
		for {
			rec, _, _, err := ReadLiveRecord(rd, nil)
			if err != nil {
				break
			}
			if _, _, err := ParseLiveRecord(rec); err != nil {
				t.Fatalf("ReadLiveRecord gave a record ParseLiveRecord refuses: %v", err)
			}
		}
		out, err := readLive(k, id, b)
		// The only last record any seed holds is the vectors' "bye".
		if err == nil && !bytes.HasSuffix(out, []byte("bye")) {
			t.Fatalf("clean end with output %q", out)
		}
	})
}

func mustLiveIDF(f *testing.F) ItemID {
	id, err := LiveID(vecLiveSecret)
	if err != nil {
		f.Fatal(err)
	}
	return id
}
