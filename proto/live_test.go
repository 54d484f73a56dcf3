package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// liveGolden lists every live frame with its bytes, written by hand from
// the layouts in live.go.
var liveGolden = []struct {
	name   string
	encode func() []byte
	want   string // hex
}{
	{
		name:   "LiveSub",
		encode: func() []byte { return LiveSub{Channel: testItem, Token: "tok"}.AppendFrame(nil) },
		want: `20 00000015
			101112131415161718191a1b1c1d1e1f
			0003 746f6b`,
	},
	{
		name:   "LiveSub/no token",
		encode: func() []byte { return LiveSub{Channel: testItem}.AppendFrame(nil) },
		want: `20 00000012
			101112131415161718191a1b1c1d1e1f
			0000`,
	},
	{
		name:   "LiveData",
		encode: func() []byte { return AppendLiveFrame(nil, FrameLiveData, []byte{1, 2, 3}) },
		want:   `21 00000003 010203`,
	},
	{
		name:   "LiveEvent",
		encode: func() []byte { return AppendLiveFrame(nil, FrameLiveEvent, []byte(`{"event":"a"}`)) },
		want:   `22 0000000d 7b226576656e74223a2261227d`,
	},
	{
		name:   "LiveEnd",
		encode: func() []byte { return LiveEnd{Status: StatusOverLimit, Reason: "slow"}.AppendFrame(nil) },
		want:   `23 00000006 0069 736c6f77`,
	},
	{
		name:   "LiveBinary",
		encode: func() []byte { return AppendLiveFrame(nil, FrameLiveBinary, []byte{0}) },
		want:   `24 00000001 00`,
	},
}

func TestLiveGolden(t *testing.T) {
	for _, tc := range liveGolden {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.encode(), unhex(t, tc.want); !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestLiveRoundTrip(t *testing.T) {
	for _, s := range []LiveSub{{Channel: testItem, Token: "t.o.k"}, {Channel: testItem}} {
		f := s.AppendFrame(nil)
		h, body, err := ReadFrame(bytes.NewReader(f), nil, MaxLiveSubLen)
		if err != nil || h.Type != FrameLiveSub {
			t.Fatalf("ReadFrame: %v %v", h, err)
		}
		got, err := DecodeLiveSub(body)
		if err != nil || got != s {
			t.Errorf("LiveSub round trip: got %+v, %v; want %+v", got, err, s)
		}
	}
	for _, e := range []LiveEnd{{Status: StatusOK, Reason: "done"}, {Status: StatusOffline}} {
		got, err := DecodeLiveEnd(e.AppendFrame(nil)[HeaderLen:])
		if err != nil || got != e {
			t.Errorf("LiveEnd round trip: got %+v, %v; want %+v", got, err, e)
		}
	}
	long := LiveEnd{Status: StatusOK, Reason: strings.Repeat("é", MaxReason)}
	if got, err := DecodeLiveEnd(long.AppendFrame(nil)[HeaderLen:]); err != nil || len(got.Reason) > MaxReason {
		t.Errorf("long LiveEnd reason: got %d bytes, %v; want at most %d", len(got.Reason), err, MaxReason)
	}
	a := LiveAnnounce{Channel: testItem, Source: true, Upstream: "peer", Volunteers: true, End: true}
	b, err := EncodeMessage(a)
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(b, DefaultMaxMessage)
	if err != nil || !reflect.DeepEqual(m, &a) {
		t.Errorf("LiveAnnounce round trip: got %+v, %v; want %+v", m, err, a)
	}
}

func TestLiveDecodeErrors(t *testing.T) {
	for _, body := range [][]byte{nil, make([]byte, 17), append(make([]byte, 16), 0, 1), append(make([]byte, 16), 0, 0, 'x')} {
		if _, err := DecodeLiveSub(body); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeLiveSub(%x): got %v, want ErrMalformed", body, err)
		}
	}
	for _, body := range [][]byte{nil, {0}, make([]byte, MaxLiveEndLen+1)} {
		if _, err := DecodeLiveEnd(body); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeLiveEnd(%d bytes): got %v, want ErrMalformed", len(body), err)
		}
	}
}

func TestLiveID(t *testing.T) {
	id, secret := NewLiveSecret()
	if got, err := LiveID(secret); err != nil || got != id {
		t.Errorf("LiveID(NewLiveSecret): got %v, %v; want %v", got, err, id)
	}
	// A vector: SHA-256("meshup live channel" || "abcdefghijklmnopqrstuv")[:16].
	got, err := LiveID("abcdefghijklmnopqrstuv")
	if err != nil || hex.EncodeToString(got[:]) != liveIDVector {
		t.Errorf("LiveID vector: got %x, %v; want %s", got, err, liveIDVector)
	}
	for _, bad := range []string{"", "short", strings.Repeat("a", MaxLiveSecret+1), "abcdefghijklmnopqrstu/", "abcdefghijklmnopqrstu v"} {
		if _, err := LiveID(bad); !errors.Is(err, ErrBadLiveSecret) {
			t.Errorf("LiveID(%q): got %v, want ErrBadLiveSecret", bad, err)
		}
	}
}

// liveIDVector is computed by `printf 'meshup live channelabcdefghijklmnopqrstuv' | sha256sum | cut -c1-32`.
const liveIDVector = "156aa5d0b679eadacecd1635f4563083"

// evGolden is what evsocket-client's sendBinary('streaming', [1,2,3])
// sends: n = 21 code units of {"event":"streaming"}, each little endian,
// then the payload.
const evGolden = `15
	7b00 2200 6500 7600 6500 6e00 7400 2200 3a00 2200
	7300 7400 7200 6500 6100 6d00 6900 6e00 6700 2200 7d00
	010203`

func TestEvBinary(t *testing.T) {
	got, err := AppendEvBinary(nil, EvStreaming, []byte{1, 2, 3})
	if want := unhex(t, evGolden); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("AppendEvBinary: got %x, %v; want %x", got, err, want)
	}
	ev, p, err := DecodeEvBinary(got)
	if err != nil || ev != EvStreaming || !bytes.Equal(p, []byte{1, 2, 3}) {
		t.Errorf("DecodeEvBinary: got %q %x %v", ev, p, err)
	}
	// Non-ASCII event names are UTF-16 code units, as in JavaScript.
	b, err := AppendEvBinary(nil, "é😀", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _, err := DecodeEvBinary(b); err != nil || ev != "é😀" {
		t.Errorf("non-ASCII event round trip: got %q, %v", ev, err)
	}
	if _, err := AppendEvBinary(nil, strings.Repeat("x", 250), nil); !errors.Is(err, ErrBadEvSocket) {
		t.Errorf("long event name: got %v, want ErrBadEvSocket", err)
	}
	for _, bad := range [][]byte{nil, {5, 0}, {1, '{', 0}} {
		if _, _, err := DecodeEvBinary(bad); !errors.Is(err, ErrBadEvSocket) {
			t.Errorf("DecodeEvBinary(%x): got %v, want ErrBadEvSocket", bad, err)
		}
	}
}

func TestEvText(t *testing.T) {
	m, err := DecodeEvText([]byte(`{"event":"start","data":{"type":"video/webm"}}`))
	if err != nil || m.Event != EvStart || string(m.Data) != `{"type":"video/webm"}` {
		t.Errorf("DecodeEvText: got %+v, %v", m, err)
	}
	for _, bad := range []string{"", "[]x", `{"event":1}`, `{"event":"` + strings.Repeat("x", MaxLiveEvent) + `"}`} {
		if _, err := DecodeEvText([]byte(bad)); !errors.Is(err, ErrBadEvSocket) {
			t.Errorf("DecodeEvText(%.20q): got %v, want ErrBadEvSocket", bad, err)
		}
	}
}

func FuzzDecodeLiveSub(f *testing.F) {
	f.Add(LiveSub{Channel: testItem, Token: "tok"}.AppendFrame(nil)[HeaderLen:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeLiveSub(b)
		if err != nil {
			return
		}
		if got := s.AppendFrame(nil)[HeaderLen:]; !bytes.Equal(got, b) {
			t.Errorf("re-encoded %x, decoded from %x", got, b)
		}
	})
}

func FuzzDecodeLiveEnd(f *testing.F) {
	f.Add(LiveEnd{Status: StatusOverLimit, Reason: "slow"}.AppendFrame(nil)[HeaderLen:])
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeLiveEnd(b)
		if err != nil {
			return
		}
		if e.Status != Status(uint16(b[0])<<8|uint16(b[1])) {
			t.Errorf("status %d from %x", e.Status, b)
		}
	})
}

func FuzzDecodeEvBinary(f *testing.F) {
	seed, _ := AppendEvBinary(nil, EvStreaming, []byte{1, 2, 3})
	f.Add(seed)
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, p, err := DecodeEvBinary(b)
		if err != nil {
			return
		}
		if len(p) > len(b) {
			t.Errorf("payload longer than the message")
		}
		_ = ev
	})
}

func FuzzDecodeEvText(f *testing.F) {
	f.Add([]byte(`{"event":"start","data":{"type":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		DecodeEvText(b)
	})
}

func FuzzLiveID(f *testing.F) {
	f.Add("abcdefghijklmnopqrstuv")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := LiveID(s)
		if err == nil && (len(s) < MinLiveSecret || id.IsZero()) {
			t.Errorf("LiveID(%q) accepted: %v", s, id)
		}
	})
}
