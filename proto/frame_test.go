package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// unhex decodes hand-written hex; spaces and newlines are ignored so that
// the fields of a frame can be laid out one per group.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad test hex %q: %v", s, err)
	}
	return b
}

// testItem is the item id 10 11 12 ... 1f.
var testItem = ItemID{
	0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
	0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
}

// frameGolden lists every frame type with its expected bytes, written by
// hand from the layouts in frame.go: type, big-endian body length, body.
var frameGolden = []struct {
	name   string
	encode func() []byte
	want   string // hex
}{
	{
		name: "PartBegin",
		encode: func() []byte {
			return PartBegin{Stream: 0x01020304, Item: testItem, Off: 0x0102, Len: 0x0a0b0c0d, Token: "tok"}.AppendFrame(nil)
		},
		want: `01 00000029
			01020304
			101112131415161718191a1b1c1d1e1f
			0000000000000102
			000000000a0b0c0d
			0003 746f6b`,
	},
	{
		name: "PartBegin/no token",
		encode: func() []byte {
			return PartBegin{Stream: 1, Off: 0, Len: 1}.AppendFrame(nil)
		},
		want: `01 00000026
			00000001
			00000000000000000000000000000000
			0000000000000000
			0000000000000001
			0000`,
	},
	{
		name: "PartData",
		encode: func() []byte {
			return append(AppendPartDataHeader(nil, 7, 5), "hello"...)
		},
		want: `02 00000009 00000007 68656c6c6f`,
	},
	{
		name: "PartData/empty",
		encode: func() []byte {
			return AppendPartDataHeader(nil, 0xfffffffe, 0)
		},
		want: `02 00000004 fffffffe`,
	},
	{
		name: "PartEnd",
		encode: func() []byte {
			return PartEnd{Stream: 9, Status: StatusForbidden, Reason: "no"}.AppendFrame(nil)
		},
		want: `03 00000008 00000009 0067 6e6f`,
	},
	{
		name: "PartEnd/ok",
		encode: func() []byte {
			return PartEnd{Stream: 1, Status: StatusOK}.AppendFrame(nil)
		},
		want: `03 00000006 00000001 0000`,
	},
	{
		name: "Ack",
		encode: func() []byte {
			return Ack{Stream: 0xdeadbeef, Acked: 0x10000, Limit: 0x50000}.AppendFrame(nil)
		},
		want: `04 00000014 deadbeef 0000000000010000 0000000000050000`,
	},
	{
		name: "Msg",
		encode: func() []byte {
			b, err := AppendMsgFrame(nil, Cancel{Order: 7})
			if err != nil {
				panic(err)
			}
			return b
		},
		// {"type":"cancel","order":7} is 27 (0x1b) bytes.
		want: `10 0000001b` + hex.EncodeToString([]byte(`{"type":"cancel","order":7}`)),
	},
}

func TestFrameGolden(t *testing.T) {
	for _, tt := range frameGolden {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.encode()
			want := unhex(t, tt.want)
			if !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestAppendFrameKeepsPrefix(t *testing.T) {
	prefix := []byte("xyz")
	got := Ack{Stream: 1, Limit: 1}.AppendFrame(prefix)
	if !bytes.HasPrefix(got, prefix) || len(got) != len(prefix)+HeaderLen+ackLen {
		t.Errorf("got %x, want prefix %x and a %d-byte frame", got, prefix, HeaderLen+ackLen)
	}
}

func TestFrameTypeString(t *testing.T) {
	tests := []struct {
		t    FrameType
		want string
	}{
		{FramePartBegin, "PartBegin"},
		{FramePartData, "PartData"},
		{FramePartEnd, "PartEnd"},
		{FrameAck, "Ack"},
		{FrameMsg, "Msg"},
		{0x7f, "FrameType(0x7f)"},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("got %v, want %v", got, tt.want)
		}
	}
}

// readOne reads exactly one frame from b and fails unless it used all of b.
func readOne(t *testing.T, b []byte, want FrameType) []byte {
	t.Helper()
	r := bytes.NewReader(b)
	h, body, err := ReadFrame(r, nil, DefaultMaxFrame)
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	if h.Type != want || int(h.Len) != len(body) {
		t.Fatalf("got header %+v with %d-byte body, want type %v", h, len(body), want)
	}
	if r.Len() != 0 {
		t.Fatalf("got %d bytes left after the frame, want 0", r.Len())
	}
	return body
}

func TestPartBeginRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		p    PartBegin
	}{
		{"zero", PartBegin{}},
		{"typical", PartBegin{Stream: 3, Item: testItem, Off: 1 << 20, Len: 1 << 20, Token: "a.b"}},
		{"max token", PartBegin{Stream: 1<<32 - 1, Item: testItem, Off: 1 << 62, Len: 1<<62 - 1, Token: strings.Repeat("t", MaxToken)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := readOne(t, tt.p.AppendFrame(nil), FramePartBegin)
			got, err := DecodePartBegin(body)
			if err != nil {
				t.Fatalf("DecodePartBegin: %v", err)
			}
			if got != tt.p {
				t.Errorf("got %+v, want %+v", got, tt.p)
			}
		})
	}
}

func TestPartDataRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		stream uint32
		data   []byte
	}{
		{"empty", 1, []byte{}},
		{"bytes", 1<<32 - 1, []byte{0, 1, 2, 0xff}},
		{"large", 42, bytes.Repeat([]byte("x"), 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := append(AppendPartDataHeader(nil, tt.stream, len(tt.data)), tt.data...)
			body := readOne(t, frame, FramePartData)
			stream, data, err := DecodePartData(body)
			if err != nil {
				t.Fatalf("DecodePartData: %v", err)
			}
			if stream != tt.stream || !bytes.Equal(data, tt.data) {
				t.Errorf("got stream %v with %d bytes, want stream %v with %d bytes", stream, len(data), tt.stream, len(tt.data))
			}
		})
	}
}

func TestPartEndRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		p    PartEnd
	}{
		{"ok", PartEnd{Stream: 1, Status: StatusOK}},
		{"refused", PartEnd{Stream: 2, Status: StatusNotWanted, Reason: "consumer left"}},
		{"max reason", PartEnd{Stream: 3, Status: StatusInternal, Reason: strings.Repeat("r", MaxReason)}},
		{"utf-8", PartEnd{Stream: 4, Status: StatusMalformed, Reason: "bad frame \u00e9\u4e16"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := readOne(t, tt.p.AppendFrame(nil), FramePartEnd)
			got, err := DecodePartEnd(body)
			if err != nil {
				t.Fatalf("DecodePartEnd: %v", err)
			}
			if got != tt.p {
				t.Errorf("got %+v, want %+v", got, tt.p)
			}
		})
	}
}

// A reason the encoder cannot send as is must still produce a frame the
// decoder accepts.
func TestPartEndEncodeFixesReason(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		want   string
	}{
		{"too long", strings.Repeat("a", MaxReason+10), strings.Repeat("a", MaxReason)},
		// 61 two-byte runes are 122 bytes; the cut must not split one.
		{"long at rune boundary", strings.Repeat("\u00e9", 61), strings.Repeat("\u00e9", 60)},
		{"invalid utf-8", "a\xffb", "a\ufffdb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := readOne(t, PartEnd{Stream: 1, Status: StatusCancelled, Reason: tt.reason}.AppendFrame(nil), FramePartEnd)
			got, err := DecodePartEnd(body)
			if err != nil {
				t.Fatalf("DecodePartEnd: %v", err)
			}
			if got.Reason != tt.want {
				t.Errorf("got %q, want %q", got.Reason, tt.want)
			}
		})
	}
}

func TestTruncateReason(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("x", MaxReason), strings.Repeat("x", MaxReason)},
		{strings.Repeat("x", MaxReason+1), strings.Repeat("x", MaxReason)},
		// 40 three-byte runes fill MaxReason exactly; one more is cut whole.
		{strings.Repeat("\u4e16", 41), strings.Repeat("\u4e16", 40)},
		{"x" + strings.Repeat("\u4e16", 40), "x" + strings.Repeat("\u4e16", 39)},
		{"\xff\xfe", "\ufffd\ufffd"},
	}
	for _, tt := range tests {
		got := TruncateReason(tt.in)
		if got != tt.want {
			t.Errorf("TruncateReason(%q): got %q, want %q", tt.in, got, tt.want)
		}
		if len(got) > MaxReason || !utf8.ValidString(got) {
			t.Errorf("TruncateReason(%q) = %q: got %d bytes, valid %v, want at most %d valid bytes", tt.in, got, len(got), utf8.ValidString(got), MaxReason)
		}
	}
}

func TestAckRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		a    Ack
	}{
		{"zero", Ack{}},
		{"credit", Ack{Stream: 5, Acked: 0, Limit: 1 << 16}},
		{"all acked", Ack{Stream: 6, Acked: 1 << 40, Limit: 1 << 40}},
		{"max", Ack{Stream: 1<<32 - 1, Acked: 1<<64 - 1, Limit: 1<<64 - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := readOne(t, tt.a.AppendFrame(nil), FrameAck)
			got, err := DecodeAck(body)
			if err != nil {
				t.Fatalf("DecodeAck: %v", err)
			}
			if got != tt.a {
				t.Errorf("got %+v, want %+v", got, tt.a)
			}
		})
	}
}

func TestMsgFrameRoundTrip(t *testing.T) {
	for typ, m := range sampleMessages() {
		t.Run(typ, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteMsg(&buf, m); err != nil {
				t.Fatalf("WriteMsg: %v", err)
			}
			body := readOne(t, buf.Bytes(), FrameMsg)
			got, err := DecodeMessage(body, DefaultMaxMessage)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if g := reflect.ValueOf(got).Elem().Interface(); !reflect.DeepEqual(g, m) {
				t.Errorf("got %+v, want %+v", g, m)
			}
		})
	}
}

func TestDecodeFrameErrors(t *testing.T) {
	// Bodies only, hand-written; each must fail with ErrMalformed.
	pb := func(tokenLen, actual string, off, n string) string {
		return "00000001" + strings.Repeat("00", 16) + off + n + tokenLen + actual
	}
	const (
		zero64 = "0000000000000000"
		one64  = "0000000000000001"
		two62  = "4000000000000000" // 1<<62
		over62 = "4000000000000001"
	)
	tests := []struct {
		name   string
		decode func([]byte) error
		body   string
	}{
		{"PartBegin empty", decPartBegin, ""},
		{"PartBegin truncated fixed part", decPartBegin, pb("", "", zero64, one64)},
		{"PartBegin token shorter than declared", decPartBegin, pb("0003", "6162", zero64, one64)},
		{"PartBegin token longer than declared", decPartBegin, pb("0001", "6162", zero64, one64)},
		{"PartBegin token over MaxToken", decPartBegin, pb("1001", strings.Repeat("61", MaxToken+1), zero64, one64)},
		{"PartBegin off over 2^62", decPartBegin, pb("0000", "", over62, one64)},
		{"PartBegin len over 2^62", decPartBegin, pb("0000", "", zero64, over62)},
		{"PartBegin off+len wraps uint64", decPartBegin, pb("0000", "", "ffffffffffffffff", one64)},
		// Each half is allowed, but the end 2^63 does not fit an int64.
		{"PartBegin off+len over int64", decPartBegin, pb("0000", "", two62, two62)},
		{"PartData empty", decPartData, ""},
		{"PartData truncated stream", decPartData, "000001"},
		{"PartEnd empty", decPartEnd, ""},
		{"PartEnd truncated status", decPartEnd, "0000000100"},
		{"PartEnd reason over MaxReason", decPartEnd, "00000001 0000" + strings.Repeat("61", MaxReason+1)},
		{"PartEnd reason invalid utf-8", decPartEnd, "00000001 0000 61ff62"},
		{"PartEnd reason truncated rune", decPartEnd, "00000001 0000 e4b8"},
		{"Ack empty", decAck, ""},
		{"Ack short", decAck, "00000001" + zero64 + "00000000000000"},
		{"Ack long", decAck, "00000001" + zero64 + zero64 + "00"},
		{"Ack acked beyond limit", decAck, "00000001 0000000000000002 0000000000000001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(unhex(t, tt.body))
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want %v", err, ErrMalformed)
			}
		})
	}
}

func decPartBegin(b []byte) error { _, err := DecodePartBegin(b); return err }
func decPartData(b []byte) error  { _, _, err := DecodePartData(b); return err }
func decPartEnd(b []byte) error   { _, err := DecodePartEnd(b); return err }
func decAck(b []byte) error       { _, err := DecodeAck(b); return err }

// The edges of what the decoders accept, next to the errors above.
func TestDecodeFrameLimits(t *testing.T) {
	tests := []struct {
		name   string
		decode func([]byte) error
		body   string
	}{
		{"PartBegin off and len at 2^62-1 and 2^62", decPartBegin, "00000001" + strings.Repeat("00", 16) + "3fffffffffffffff 4000000000000000 0000"},
		{"PartBegin token of MaxToken", decPartBegin, "00000001" + strings.Repeat("00", 16) + "0000000000000000 0000000000000001 1000" + strings.Repeat("61", MaxToken)},
		{"PartData no data", decPartData, "00000001"},
		{"PartEnd reason of MaxReason", decPartEnd, "00000001 0000" + strings.Repeat("61", MaxReason)},
		{"Ack acked equals limit", decAck, "00000001 0000000000000002 0000000000000002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.decode(unhex(t, tt.body)); err != nil {
				t.Errorf("got %v, want nil", err)
			}
		})
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    Header
		wantErr error
	}{
		{"ok", "04 00000014", 20, Header{FrameAck, 20}, nil},
		{"at max", "02 00000100", 256, Header{FramePartData, 256}, nil},
		{"over max", "02 00000101", 256, Header{FramePartData, 257}, ErrFrameTooLarge},
		{"over max uint32", "02 ffffffff", DefaultMaxFrame, Header{FramePartData, 1<<32 - 1}, ErrFrameTooLarge},
		{"unknown type", "7f 00000000", 0, Header{0x7f, 0}, nil},
		{"no bytes", "", 16, Header{}, io.EOF},
		{"short", "0100", 16, Header{}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(unhex(t, tt.in))
			got, err := ReadHeader(r, tt.max)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadFrame(t *testing.T) {
	ack := Ack{Stream: 1, Acked: 2, Limit: 3}.AppendFrame(nil)
	tests := []struct {
		name     string
		in       []byte
		max      int
		wantBody []byte
		wantErr  error
	}{
		{"ok", ack, DefaultMaxFrame, ack[HeaderLen:], nil},
		{"empty body", unhex(t, "7f 00000000"), 0, []byte{}, nil},
		{"short body", ack[:len(ack)-1], DefaultMaxFrame, nil, io.ErrUnexpectedEOF},
		{"header only", ack[:HeaderLen], DefaultMaxFrame, nil, io.ErrUnexpectedEOF},
		{"too large", ack, ackLen - 1, nil, ErrFrameTooLarge},
		{"clean EOF", nil, DefaultMaxFrame, nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, body, err := ReadFrame(bytes.NewReader(tt.in), nil, tt.max)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(body, tt.wantBody) {
				t.Errorf("got body %x, want %x", body, tt.wantBody)
			}
		})
	}
}

// ReadFrame reads into the caller's buffer when it is large enough, and
// reads frames back to back from a stream.
func TestReadFrameReusesBuffer(t *testing.T) {
	var stream []byte
	stream = Ack{Stream: 1, Limit: 10}.AppendFrame(stream)
	stream = PartEnd{Stream: 1, Status: StatusCancelled, Reason: "bye"}.AppendFrame(stream)
	r := bytes.NewReader(stream)
	buf := make([]byte, 0, 64)

	h, body, err := ReadFrame(r, buf, 64)
	if err != nil || h.Type != FrameAck {
		t.Fatalf("got %v, %v, want an Ack", h, err)
	}
	if &body[0] != &buf[:1][0] {
		t.Errorf("got a new buffer, want the caller's")
	}
	h, body, err = ReadFrame(r, body[:0], 64)
	if err != nil || h.Type != FramePartEnd {
		t.Fatalf("got %v, %v, want a PartEnd", h, err)
	}
	if p, err := DecodePartEnd(body); err != nil || p.Reason != "bye" {
		t.Errorf("got %+v, %v, want reason bye", p, err)
	}
	if _, _, err := ReadFrame(r, body[:0], 64); err != io.EOF {
		t.Errorf("got %v, want %v", err, io.EOF)
	}
}

func TestReadMsgSkipsUnknown(t *testing.T) {
	var stream []byte
	stream = Ack{Stream: 1, Limit: 1}.AppendFrame(stream)
	stream = AppendHeader(stream, 0x7f, 3) // a frame type from the future
	stream = append(stream, "abc"...)
	future := `{"type":"from_the_future","x":1}`
	stream = AppendHeader(stream, FrameMsg, len(future))
	stream = append(stream, future...)
	stream, _ = AppendMsgFrame(stream, Heartbeat{Streams: 2, Reserved: 3, Served: 4})
	stream, _ = AppendMsgFrame(stream, NeedCancel{Need: 9})

	r := bytes.NewReader(stream)
	for _, want := range []Message{&Heartbeat{Streams: 2, Reserved: 3, Served: 4}, &NeedCancel{Need: 9}} {
		got, err := ReadMsg(r, DefaultMaxMessage)
		if err != nil {
			t.Fatalf("ReadMsg: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
	if _, err := ReadMsg(r, DefaultMaxMessage); err != io.EOF {
		t.Errorf("got %v, want %v", err, io.EOF)
	}
}

func TestReadMsgErrors(t *testing.T) {
	frame := func(body string) []byte { return append(AppendHeader(nil, FrameMsg, len(body)), body...) }
	tests := []struct {
		name    string
		in      []byte
		max     int
		wantErr error
	}{
		{"bad json", frame(`{"type":`), DefaultMaxMessage, ErrBadMessage},
		{"no type", frame(`{"order":1}`), DefaultMaxMessage, ErrBadMessage},
		{"too large", frame(`{"type":"hello"}`), 10, ErrFrameTooLarge},
		{"truncated", frame(`{"type":"hello"}`)[:10], DefaultMaxMessage, io.ErrUnexpectedEOF},
		{"only skipped frames", Ack{}.AppendFrame(frame(`{"type":"nope"}`)), DefaultMaxMessage, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMsg(bytes.NewReader(tt.in), tt.max)
			if !errors.Is(err, tt.wantErr) || m != nil {
				t.Errorf("got %v, %v, want nil, %v", m, err, tt.wantErr)
			}
		})
	}
}

const fuzzMaxFrame = 1 << 16

// FuzzReadFrame reads one frame and decodes it by type. Whatever decodes
// must encode back to the very same bytes (for Msg frames: to a message that
// decodes equal), and every failure must be one of the documented errors.
func FuzzReadFrame(f *testing.F) {
	for _, g := range frameGolden {
		f.Add(unhex(f, g.want))
	}
	f.Add(unhex(f, "04 00000014 00000001 0000000000000002 0000000000000001")) // acked > limit
	f.Add(unhex(f, "03 00000008 00000009 0067 ff6f"))                         // bad UTF-8
	f.Add(unhex(f, "01 00000026 00000001"+strings.Repeat("00", 16)+"4000000000000000 4000000000000000 0000"))
	f.Add(unhex(f, "10 00000010")) // declared but missing body
	f.Add(unhex(f, "7f 00000002 0102"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, body, err := ReadFrame(bytes.NewReader(data), nil, fuzzMaxFrame)
		if err != nil {
			switch {
			case errors.Is(err, ErrFrameTooLarge):
				if h.Len <= fuzzMaxFrame {
					t.Fatalf("got %v for a %d-byte body, want no error", err, h.Len)
				}
			case err == io.EOF:
				if len(data) != 0 {
					t.Fatalf("got EOF with %d bytes of input", len(data))
				}
			case err == io.ErrUnexpectedEOF:
				if len(data) >= HeaderLen && len(data) >= HeaderLen+int(h.Len) {
					t.Fatalf("got %v with a whole frame of input", err)
				}
			default:
				t.Fatalf("ReadFrame: unexpected error %v", err)
			}
			return
		}
		if int(h.Len) != len(body) || len(data) < HeaderLen+len(body) {
			t.Fatalf("got header %+v with %d-byte body from %d bytes", h, len(body), len(data))
		}
		frame := data[:HeaderLen+len(body)]
		if hdr := AppendHeader(nil, h.Type, len(body)); !bytes.Equal(hdr, frame[:HeaderLen]) {
			t.Fatalf("got header %x, want %x", hdr, frame[:HeaderLen])
		}

		var re []byte
		switch h.Type {
		case FramePartBegin:
			p, err := DecodePartBegin(body)
			if err != nil {
				checkMalformed(t, err)
				return
			}
			if p.Off+p.Len > 1<<63-1 || len(p.Token) > MaxToken {
				t.Fatalf("got %+v, want off+len within int64 and token within MaxToken", p)
			}
			re = p.AppendFrame(nil)
		case FramePartData:
			stream, d, err := DecodePartData(body)
			if err != nil {
				checkMalformed(t, err)
				return
			}
			re = append(AppendPartDataHeader(nil, stream, len(d)), d...)
		case FramePartEnd:
			p, err := DecodePartEnd(body)
			if err != nil {
				checkMalformed(t, err)
				return
			}
			if len(p.Reason) > MaxReason || !utf8.ValidString(p.Reason) {
				t.Fatalf("got reason %q, want valid UTF-8 of at most %d bytes", p.Reason, MaxReason)
			}
			re = p.AppendFrame(nil)
		case FrameAck:
			a, err := DecodeAck(body)
			if err != nil {
				checkMalformed(t, err)
				return
			}
			if a.Acked > a.Limit {
				t.Fatalf("got %+v, want acked <= limit", a)
			}
			re = a.AppendFrame(nil)
		case FrameMsg:
			checkMessageStable(t, body)
			return
		default:
			return // unknown types are skipped by length
		}
		if !bytes.Equal(re, frame) {
			t.Fatalf("re-encoded %v: got %x, want %x", h.Type, re, frame)
		}
	})
}

func checkMalformed(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want %v", err, ErrMalformed)
	}
}
