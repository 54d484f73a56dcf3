package relay_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestPushHandshake checks the WebSocket upgrade of /v1/push: the
// subprotocol is required and browsers' Origins are checked.
func TestPushHandshake(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.AllowedOrigins = []string{"https://app.example.com"}
	e := newEnv(t, cfg)
	r := e.relays[0]
	relayOrigin := r.URL // http://127.0.0.1:PORT: the relay's own host

	tests := []struct {
		name         string
		subprotocols []string
		origin       string
		wantHTTP     int // 101 when the upgrade succeeds
		wantStatus   proto.Status
	}{
		{"no origin", []string{proto.Subprotocol}, "", http.StatusSwitchingProtocols, proto.StatusOK},
		{"no subprotocol", nil, "", http.StatusBadRequest, proto.StatusProtocol},
		{"other subprotocol", []string{"meshup.v0"}, "", http.StatusBadRequest, proto.StatusProtocol},
		{"disallowed origin", []string{proto.Subprotocol}, "https://evil.example", http.StatusForbidden, proto.StatusOriginRefused},
		{"origin like the relay on another port", []string{proto.Subprotocol}, "http://127.0.0.1:1", http.StatusForbidden, proto.StatusOriginRefused},
		{"null origin", []string{proto.Subprotocol}, "null", http.StatusForbidden, proto.StatusOriginRefused},
		{"relay's own origin", []string{proto.Subprotocol}, relayOrigin, http.StatusSwitchingProtocols, proto.StatusOK},
		{"rendezvous origin", []string{proto.Subprotocol}, e.rv.URL, http.StatusSwitchingProtocols, proto.StatusOK},
		{"configured origin", []string{proto.Subprotocol}, "https://app.example.com", http.StatusSwitchingProtocols, proto.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr http.Header
			if tt.origin != "" {
				hdr = http.Header{"Origin": {tt.origin}}
			}
			ws, resp, err := dialPushRaw(r.PushURL(), tt.subprotocols, hdr)
			if tt.wantHTTP == http.StatusSwitchingProtocols {
				if err != nil {
					t.Fatalf("dial: %v (HTTP %v)", err, resp)
				}
				defer ws.Close()
				if got := ws.Subprotocol(); got != proto.Subprotocol {
					t.Errorf("subprotocol: got %q, want %q", got, proto.Subprotocol)
				}
				return
			}
			if err == nil {
				ws.Close()
				t.Fatalf("dial succeeded, want HTTP %d", tt.wantHTTP)
			}
			if resp == nil {
				t.Fatalf("dial: %v, want HTTP %d", err, tt.wantHTTP)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantHTTP {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantHTTP)
			}
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			if got := apiError(t, resp, body[:n]); got != tt.wantStatus {
				t.Errorf("error status: got %d, want %d", got, tt.wantStatus)
			}
		})
	}
}

// TestPushConnectionErrors sends frames that break the protocol; each
// must end the connection with the matching close code.
func TestPushConnectionErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	item := proto.NewItemID()
	maxFrame := r.Server.Config().MaxFrame
	valid := e.signPush(r.ID(), item, 0, 100, 1, time.Now().Add(time.Minute))
	begin := func(stream uint32, tok string) []byte {
		return proto.PartBegin{Stream: stream, Item: item, Off: 0, Len: 100, Token: tok}.AppendFrame(nil)
	}
	expired := e.signPush(r.ID(), item, 0, 100, 1, time.Now().Add(-time.Minute))

	tests := []struct {
		name     string
		msgs     [][]byte // binary messages
		text     bool     // send msgs[0] as a text message
		wantEnd  bool     // a PartEnd for stream 1 comes first
		wantCode []int
	}{
		{
			name:     "forged token",
			msgs:     [][]byte{begin(1, valid[:len(valid)-4]+"AAAA")},
			wantCode: []int{proto.StatusUnauthorized.CloseCode()},
		},
		{
			name:     "token signed by another key",
			msgs:     [][]byte{begin(1, proto.SignToken(newEnvKey(t), proto.Claims{Dir: proto.DirPush, Relay: r.ID(), Item: item, Len: 100, Exp: time.Now().Add(time.Minute).Unix()}))},
			wantCode: []int{proto.StatusUnauthorized.CloseCode()},
		},
		{
			name:     "no token",
			msgs:     [][]byte{begin(1, "")},
			wantCode: []int{proto.StatusUnauthorized.CloseCode()},
		},
		{
			name:     "PartBegin shorter than declared",
			msgs:     [][]byte{begin(1, valid)[:proto.HeaderLen+20]},
			wantCode: []int{proto.StatusMalformed.CloseCode()},
		},
		{
			name:     "PartBegin body too short for its layout",
			msgs:     [][]byte{append(proto.AppendHeader(nil, proto.FramePartBegin, 20), make([]byte, 20)...)},
			wantCode: []int{proto.StatusMalformed.CloseCode()},
		},
		{
			name: "PartBegin token length beyond body",
			msgs: [][]byte{func() []byte {
				f := begin(1, "abc")
				binary.BigEndian.PutUint16(f[proto.HeaderLen+36:], 200)
				return f
			}()},
			wantCode: []int{proto.StatusMalformed.CloseCode()},
		},
		{
			name:     "message shorter than a frame header",
			msgs:     [][]byte{{byte(proto.FramePartBegin), 0, 0}},
			wantCode: []int{proto.StatusMalformed.CloseCode()},
		},
		{
			name:     "PartData shorter than its stream prefix",
			msgs:     [][]byte{proto.AppendHeader(nil, proto.FramePartData, 2)},
			wantCode: []int{proto.StatusMalformed.CloseCode()},
		},
		{
			name:     "declared length over MaxFrame",
			msgs:     [][]byte{proto.AppendHeader(nil, proto.FramePartData, maxFrame+1)},
			wantCode: []int{proto.StatusTooLarge.CloseCode()},
		},
		{
			name: "message over MaxFrame",
			msgs: [][]byte{func() []byte {
				f := proto.AppendPartDataHeader(nil, 1, maxFrame)
				return append(f, make([]byte, maxFrame)...)
			}()},
			wantCode: []int{websocket.CloseMessageTooBig, proto.StatusTooLarge.CloseCode()},
		},
		{
			name:     "text message",
			msgs:     [][]byte{[]byte(`{"type":"hello"}`)},
			text:     true,
			wantCode: []int{proto.StatusProtocol.CloseCode()},
		},
		{
			name:     "PartData for a stream never begun",
			msgs:     [][]byte{append(proto.AppendPartDataHeader(nil, 7, 3), 1, 2, 3)},
			wantCode: []int{proto.StatusUnknownStream.CloseCode()},
		},
		{
			name:     "PartData past the last stream begun",
			msgs:     [][]byte{begin(1, expired), append(proto.AppendPartDataHeader(nil, 2, 3), 1, 2, 3)},
			wantEnd:  true,
			wantCode: []int{proto.StatusUnknownStream.CloseCode()},
		},
		{
			name:     "stream id reused",
			msgs:     [][]byte{begin(1, expired), begin(1, expired)},
			wantEnd:  true,
			wantCode: []int{proto.StatusProtocol.CloseCode()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := dialPush(t, r.PushURL(), nil)
			for i, m := range tt.msgs {
				typ := websocket.BinaryMessage
				if tt.text {
					typ = websocket.TextMessage
				}
				p.ws.SetWriteDeadline(time.Now().Add(wait))
				if err := p.ws.WriteMessage(typ, m); err != nil {
					// The relay may close before it has read all of an
					// oversized message; its close frame is still there
					// to read.
					t.Logf("write message %d: %v", i, err)
					break
				}
				if i == 0 && tt.wantEnd {
					if e := p.expectEnd(t, 1); e.Status != proto.StatusExpired {
						t.Fatalf("PartEnd status: got %v, want %v", e.Status, proto.StatusExpired)
					}
				}
			}
			p.expectClose(t, tt.wantCode...)
		})
	}
	eventually(t, "push connections closed", func() bool { return r.Server.Stats().PushConns == 0 })
}

// TestPushRefusals checks the refusals of one part that leave the push
// connection usable: the relay answers with PartEnd and reads on.
func TestPushRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig(), testRelayConfig())
	r, other := e.relays[0], e.relays[1]
	item := proto.NewItemID()
	hour := time.Now().Add(time.Hour)
	read := proto.SignToken(e.key, proto.Claims{Dir: proto.DirRead, Relay: r.ID(), Item: item, Len: 100, Size: 100, Exp: hour.Unix()})

	p := dialPush(t, r.PushURL(), nil)
	stream := uint32(0)
	tests := []struct {
		name   string
		before [][]byte // frames sent before the PartBegin
		tok    string
		off, n uint64
		want   proto.Status
	}{
		{name: "expired token", tok: e.signPush(r.ID(), item, 0, 100, 1, time.Now().Add(-time.Minute)), n: 100, want: proto.StatusExpired},
		{name: "token for another relay", tok: e.signPush(other.ID(), item, 0, 100, 1, hour), n: 100, want: proto.StatusWrongRelay},
		{name: "token for another item", tok: e.signPush(r.ID(), proto.NewItemID(), 0, 100, 1, hour), n: 100, want: proto.StatusForbidden},
		{name: "range outside the token", tok: e.signPush(r.ID(), item, 0, 100, 1, hour), off: 50, n: 100, want: proto.StatusForbidden},
		{name: "range inside but not the ordered one", tok: e.signPush(r.ID(), item, 0, 100, 1, hour), off: 0, n: 50, want: proto.StatusForbidden},
		{name: "read token", tok: read, n: 100, want: proto.StatusForbidden},
		{name: "nobody waits", tok: e.signPush(r.ID(), item, 0, 100, 12345, hour), n: 100, want: proto.StatusNotWanted},
		{
			name:   "unknown frame type skipped",
			before: [][]byte{append(proto.AppendHeader(nil, 0x7f, 3), 1, 2, 3), proto.AppendHeader(nil, 0x7e, 0)},
			tok:    e.signPush(r.ID(), item, 0, 100, 12346, hour), n: 100, want: proto.StatusNotWanted,
		},
		{
			name: "late PartData for a refused stream dropped",
			before: [][]byte{
				append(proto.AppendPartDataHeader(nil, 1, 4), 1, 2, 3, 4),
				proto.PartEnd{Stream: 2, Status: proto.StatusCancelled, Reason: "late"}.AppendFrame(nil),
			},
			tok: e.signPush(r.ID(), item, 0, 100, 12347, hour), n: 100, want: proto.StatusNotWanted,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range tt.before {
				p.send(t, f)
			}
			stream++
			p.send(t, proto.PartBegin{Stream: stream, Item: item, Off: tt.off, Len: tt.n, Token: tt.tok}.AppendFrame(nil))
			end := p.expectEnd(t, stream)
			if end.Status != tt.want {
				t.Errorf("PartEnd status: got %d (%v, %q), want %d (%v)", end.Status, end.Status, end.Reason, tt.want, tt.want)
			}
		})
	}
	st := r.Server.Stats()
	if st.PushConns != 1 || st.PartsBegun != 0 || st.OpenParts != 0 {
		t.Errorf("push conns, parts begun, open parts: got %d, %d, %d, want 1, 0, 0", st.PushConns, st.PartsBegun, st.OpenParts)
	}
	if st.Refusals["token_token expired"] != 1 || st.Refusals["not_wanted"] != 3 {
		t.Errorf("refusals: got %v, want 1 expired token and 3 not wanted", st.Refusals)
	}
}

// TestFlowViolation pushes a real part for a waiting consumer, then sends
// more than the credit granted. The relay must close that push connection
// with StatusFlowViolation and end the consumer's response short, with
// only correct bytes, while another transfer through the same relay goes
// on intact.
func TestFlowViolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]

	// A good transfer, paused after its first MiB until the bad one is
	// over.
	good := meshtest.RandomBytes(6*partSize+3, 3)
	_, goodItem := e.publish(t, good, client.Config{})
	gd := startDownload(t, e.itemURL(goodItem.ID, r), partSize)
	gd.waitPaused(t)

	// The bad publisher drives its control session and push connection by
	// hand.
	bad := meshtest.RandomBytes(3*partSize, 4)
	ctl := rendezvoustest.DialControl(t, e.rv)
	pub := ctl.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "bad.bin", MIME: "application/x-test", Size: int64(len(bad))})
	bd := startDownload(t, e.itemURL(pub.ID, r), -1)
	o := recvOrder(t, ctl)
	if o.Off != 0 || o.Len != partSize || o.Relay != r.ID() {
		t.Fatalf("first order: got %+v, want bytes 0+%d at relay %s", o, partSize, r.ID())
	}
	p := dialPush(t, o.PushURL, nil)
	const stream = 1
	p.send(t, proto.PartBegin{Stream: stream, Item: o.Item, Off: uint64(o.Off), Len: uint64(o.Len), Token: o.Token}.AppendFrame(nil))
	a := p.expectAck(t, stream, func(proto.Ack) bool { return true })
	if a.Acked != 0 || a.Limit != window {
		t.Fatalf("first Ack: got acked %d limit %d, want 0, %d", a.Acked, a.Limit, window)
	}
	// Send 100 KiB within the credit and wait until the consumer has
	// taken all of it: the relay then grants acked+window and no more.
	const first = 100 << 10
	p.send(t, append(proto.AppendPartDataHeader(nil, stream, first), bad[:first]...))
	a = p.expectAck(t, stream, func(a proto.Ack) bool { return a.Acked == first })
	if a.Limit != first+window {
		t.Fatalf("Ack after %d bytes: got limit %d, want %d", first, a.Limit, first+window)
	}
	over := int(a.Limit-a.Acked) + 1
	p.send(t, append(proto.AppendPartDataHeader(nil, stream, over), bad[first:first+over]...))
	p.expectClose(t, proto.StatusFlowViolation.CloseCode())

	code, got, err := bd.wait(t)
	if code != http.StatusOK {
		t.Fatalf("bad item: status %d, want 200 (headers go out once the part has begun)", code)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("bad item body: got error %v after %d bytes, want io.ErrUnexpectedEOF", err, len(got))
	}
	if len(got) != first {
		t.Errorf("bad item body: got %d bytes, want the %d sent within credit", len(got), first)
	}
	checkPrefix(t, got, bad)

	// The good transfer was in flight all along and completes intact.
	select {
	case <-gd.done:
		t.Fatalf("good download ended while paused: %v", gd.err)
	default:
	}
	gd.resume()
	code, got, err = gd.wait(t)
	if code != http.StatusOK || err != nil {
		t.Fatalf("good item: status %d, error %v after %d bytes, want 200 and no error", code, err, len(got))
	}
	if i := meshtest.FirstDiff(got, good); i >= 0 {
		t.Fatalf("good item: %d bytes differ from the item at byte %d", len(got), i)
	}
}

// TestPushLimits checks the per-relay limit on push connections and the
// per-connection limit on open parts.
func TestPushLimits(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.MaxConns = 1
	cfg.MaxStreamsPerConn = 1
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(2*partSize, 11)
	ctl := rendezvoustest.DialControl(t, e.rv)
	pub := ctl.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "l.bin", MIME: "application/x-test", Size: int64(len(data))})
	d := startDownload(t, e.itemURL(pub.ID, r), -1)
	o1, o2 := recvOrder(t, ctl), recvOrder(t, ctl)
	if o1.Off != 0 || o2.Off != partSize {
		t.Fatalf("orders: got offsets %d, %d, want 0, %d", o1.Off, o2.Off, partSize)
	}

	p := dialPush(t, r.PushURL(), nil)
	_, resp, err := dialPushRaw(r.PushURL(), []string{proto.Subprotocol}, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second push connection: got %v, %v, want HTTP 429", resp, err)
	}
	resp.Body.Close()

	begin := func(stream uint32, o *proto.Order) []byte {
		return proto.PartBegin{Stream: stream, Item: o.Item, Off: uint64(o.Off), Len: uint64(o.Len), Token: o.Token}.AppendFrame(nil)
	}
	p.send(t, begin(1, o1))
	limit := p.expectAck(t, 1, func(proto.Ack) bool { return true }).Limit
	p.send(t, begin(2, o2)) // over the limit of one open part
	if end := p.expectEnd(t, 2); end.Status != proto.StatusOverLimit {
		t.Fatalf("second open part: got PartEnd %v, want %v", end.Status, proto.StatusOverLimit)
	}

	// The refusal cost nothing: the first part is pushed, then the second
	// one, still wanted, on a fresh stream id.
	var sent uint64
	for {
		k := limit - sent
		p.send(t, append(proto.AppendPartDataHeader(nil, 1, int(k)), data[sent:sent+k]...))
		sent += k
		if sent == uint64(o1.Len) {
			break
		}
		limit = p.expectAck(t, 1, func(a proto.Ack) bool { return a.Limit > sent }).Limit
	}
	if end := p.expectEnd(t, 1); end.Status != proto.StatusOK {
		t.Fatalf("first part: got PartEnd %v (%s), want OK", end.Status, end.Reason)
	}
	if end := p.pushPart(t, 3, o2, data); end.Status != proto.StatusOK {
		t.Fatalf("second part: got PartEnd %v (%s), want OK", end.Status, end.Reason)
	}
	code, got, err := d.wait(t)
	if code != http.StatusOK || err != nil || meshtest.FirstDiff(got, data) >= 0 {
		t.Fatalf("download: status %d, %d bytes, error %v, want 200 and the %d bytes of the item", code, len(got), err, len(data))
	}
	if n := r.Server.Stats().Refusals["max_conns"]; n != 1 {
		t.Errorf("max_conns refusals: got %d, want 1", n)
	}
}
