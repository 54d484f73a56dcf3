package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sampleMessages returns one message of every type, keyed by type, with
// every field set so that a round trip exercises every JSON tag.
func sampleMessages() map[string]Message {
	id := ItemID{15: 1}
	return map[string]Message{
		"hello":        Hello{Client: "meshup-cli/1.0"},
		"welcome":      Welcome{Session: "s1", MaxMessage: DefaultMaxMessage, PingSeconds: 20, Relays: []RelayInfo{{ID: "12D3KooW", PushURL: "wss://r/v1/push"}}},
		"publish":      Publish{Ref: "r1", ID: id, Owner: "own", Kind: KindFile, Name: "a \"b\".txt", MIME: "text/plain", Size: 1 << 40, Text: "<hi> & \u00e9", Via: "12D3KooWA", Enc: E2EVersion, Meta: "c2VhbGVk", Volunteers: true, Swarm: true, Modified: 1796000000},
		"published":    Published{Ref: "r1", ID: id, Owner: "own", ShareURL: "https://x/s/1", DownloadURL: "https://x/d/1", ExpiresMS: 1764650000123},
		"unpublish":    Unpublish{ID: id},
		"order":        Order{Order: 1<<64 - 1, Item: id, Off: 1 << 20, Len: 1 << 20, Relay: "12D3KooW", PushURL: "wss://r/v1/push", Token: "a.b"},
		"cancel":       Cancel{Order: 7},
		"order_failed": OrderFailed{Order: 7, Status: StatusSourceError, Reason: "EIO"},
		"error":        ErrorMsg{Ref: "r2", Status: StatusNotFound, Reason: "no such item"},
		"register":     Register{Version: Version, HTTPURL: "http://127.0.0.1:1", Addrs: []string{"/ip4/127.0.0.1/tcp/1", "/ip6/::1/udp/2/quic-v1"}, Budget: 64 << 20, Window: 1 << 20, NAT: NATCone, Public: true, Record: []byte{0, 1, 'r', 0xff}, Time: 1764650000123, Admission: "adm.sig", Tunnel: true, Uploads: UploadProtocols},
		"registered":   Registered{Relay: "12D3KooW", HeartbeatMS: 5000, Observed: "/ip4/11.0.0.2/udp/4001/quic-v1", Origins: []string{"https://app.example"}, ReadChecks: new(true)},
		"heartbeat": Heartbeat{Streams: 3, Reserved: 1 << 20, Served: 1 << 33, Mesh: &MeshStatus{
			NAT:       NATSymmetric,
			Addrs:     MeshAddrs{Observed: []string{"/ip4/11.0.0.2/tcp/1"}, Advertised: []string{"/ip4/11.0.0.1/tcp/4001/p2p/12D3KooWR/p2p-circuit"}},
			Peers:     []MeshPeer{{ID: "12D3KooWB", Kind: PeerHolePunched, TimeToDirectMS: 1500}},
			HolePunch: HolePunchStats{Attempts: 2, Successes: 1, Failures: 1},
		}, Record: []byte{0xfb, 0xff}, CapReached: true, Draining: true},
		"need":        Need{Need: 4, Item: id, Off: 5, Len: 6, Token: "a.b", Avoid: []string{"12D3KooWB"}},
		"need_failed": NeedFailed{Need: 4, Status: StatusOffline, Reason: "gone"},
		"need_cancel": NeedCancel{Need: 4},
		"need_done":   NeedDone{Need: 4, Bytes: 8 << 20, MS: 17},
		"hold":        Hold{Ref: "h1", ID: id, Owner: "own", Protocol: UploadSTOR, Name: "a.bin", MIME: "application/octet-stream", Size: -1, Auth: map[string]string{"login": "u"}, Meta: map[string]string{"k": "v"}, Client: "192.0.2.1:5", Done: true, ExpiresMS: 1764650000123, Check: true, Token: "a.b", Sealed: "c2VhbGVk"},
		"held":        Held{Ref: "h1", ID: id, Owner: "own", ShareURL: "https://x/i/1", DownloadURL: "https://x/v1/items/1", ExpiresMS: 1764650000123, MaxSize: 1 << 30, Meta: map[string]string{"user": "42"}, Sealed: "c2VhbGVk"},
		"hold_done":   HoldDone{ID: id, Size: 5 << 20},
		"release":     Release{ID: id, Status: StatusExpired, Reason: "expired"},
		"peers":       Peers{Peers: []PeerInfo{{ID: "12D3KooWB", NAT: NATCone, Addrs: []string{"/ip4/11.0.0.3/udp/4001/quic-v1"}}}, Delta: true, Removed: []string{"12D3KooWC"}},
		"live":        LiveAnnounce{Channel: id, Source: true, Upstream: "12D3KooWU", Volunteers: true, End: true, Enc: LiveEncVersion},

		"read_check":   ReadCheck{Check: 9, Item: id, Client: "192.0.2.1:5", Auth: map[string]string{"authorization": "Bearer x"}},
		"read_verdict": ReadVerdict{Check: 9, Status: StatusForbidden, Reason: "denied"},
	}
}

func TestSampleMessagesCoverAllTypes(t *testing.T) {
	samples := sampleMessages()
	for typ, mk := range messageTypes {
		if got := mk().MessageType(); got != typ {
			t.Errorf("messageTypes[%q] makes a message of type %q", typ, got)
		}
		m, ok := samples[typ]
		if !ok {
			t.Errorf("no sample for message type %q", typ)
			continue
		}
		if got := m.MessageType(); got != typ {
			t.Errorf("sample %q: got type %v, want %v", typ, got, typ)
		}
		v := reflect.ValueOf(m)
		for i := 0; i < v.NumField(); i++ {
			if v.Field(i).IsZero() {
				t.Errorf("sample %q: field %s is zero, want every field set", typ, v.Type().Field(i).Name)
			}
		}
	}
	if len(samples) != len(messageTypes) {
		t.Errorf("got %d samples, want %d", len(samples), len(messageTypes))
	}
}

func TestEncodeMessageGolden(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"empty hello", Hello{}, `{"type":"hello"}`},
		{"hello", Hello{Client: "meshup/1"}, `{"type":"hello","client":"meshup/1"}`},
		{"cancel", Cancel{Order: 7}, `{"type":"cancel","order":7}`},
		{"pointer", &Cancel{Order: 8}, `{"type":"cancel","order":8}`},
		{
			"need",
			Need{Need: 3, Item: ItemID{0: 0x08}, Len: 1024},
			`{"type":"need","need":3,"item":"baaaaaaaaaaaaaaaaaaaaaaaaa","off":0,"len":1024}`,
		},
		{
			"publish omits zero id",
			Publish{Kind: KindMessage, Name: "n", MIME: "text/plain", Size: 5, Text: "hello"},
			`{"type":"publish","kind":"message","name":"n","mime":"text/plain","size":5,"text":"hello"}`,
		},
		{
			"unpublish",
			Unpublish{ID: ItemID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
			`{"type":"unpublish","id":"77777777777777777777777774"}`,
		},
		{
			"error",
			ErrorMsg{Ref: "r1", Status: StatusNotFound, Reason: "not found"},
			`{"type":"error","ref":"r1","status":107,"reason":"not found"}`,
		},
		{
			"welcome",
			Welcome{Session: "s1", MaxMessage: 65536, PingSeconds: 15, Relays: []RelayInfo{{ID: "12D3KooW", PushURL: "ws://127.0.0.1:1/v1/push"}}},
			`{"type":"welcome","session":"s1","max_message":65536,"ping_seconds":15,"relays":[{"id":"12D3KooW","push_url":"ws://127.0.0.1:1/v1/push"}]}`,
		},
		{
			"welcome without relays",
			Welcome{Session: "s1", MaxMessage: 65536, PingSeconds: 15},
			`{"type":"welcome","session":"s1","max_message":65536,"ping_seconds":15,"relays":null}`,
		},
		{
			"register",
			Register{Version: 1, HTTPURL: "http://r", Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Budget: 1048576, Window: 65536},
			`{"type":"register","version":1,"http_url":"http://r","addrs":["/ip4/127.0.0.1/tcp/1"],"budget":1048576,"window":65536}`,
		},
		{
			"register with record",
			Register{Version: 1, HTTPURL: "http://r", Addrs: []string{}, Record: []byte{0, 1, 'R', 0xff}},
			`{"type":"register","version":1,"http_url":"http://r","addrs":[],"budget":0,"window":0,"record":"AAFS/w=="}`,
		},
		{
			"published clip",
			Published{ID: ItemID{0: 0x08}, Owner: "o", ShareURL: "s", DownloadURL: "d", ExpiresMS: 1764650000123},
			`{"type":"published","id":"baaaaaaaaaaaaaaaaaaaaaaaaa","owner":"o","share_url":"s","download_url":"d","expires_ms":1764650000123}`,
		},
		{
			"hold of a clip",
			Hold{ID: ItemID{0: 0x08}, Protocol: HoldClip, Size: 5, Done: true, ExpiresMS: 1764650000123, Token: "a.b"},
			`{"type":"hold","ref":"","id":"baaaaaaaaaaaaaaaaaaaaaaaaa","protocol":"clip","name":"","mime":"","size":5,"done":true,"expires_ms":1764650000123,"token":"a.b"}`,
		},
		{
			"need with token",
			Need{Need: 3, Item: ItemID{0: 0x08}, Len: 1024, Token: "a.b"},
			`{"type":"need","need":3,"item":"baaaaaaaaaaaaaaaaaaaaaaaaa","off":0,"len":1024,"token":"a.b"}`,
		},
		{
			"peers delta",
			Peers{Peers: []PeerInfo{{ID: "A", NAT: NATCone, Addrs: []string{"/ip4/11.0.0.3/tcp/1"}}}, Delta: true, Removed: []string{"B"}},
			`{"type":"peers","peers":[{"id":"A","nat":"cone","addrs":["/ip4/11.0.0.3/tcp/1"]}],"delta":true,"removed":["B"]}`,
		},
		{
			"peers full",
			Peers{Peers: []PeerInfo{}},
			`{"type":"peers","peers":[]}`,
		},
		{
			"register with admission",
			Register{Version: 1, HTTPURL: "http://r", Addrs: []string{}, Admission: "a.b"},
			`{"type":"register","version":1,"http_url":"http://r","addrs":[],"budget":0,"window":0,"admission":"a.b"}`,
		},
		{
			"hold",
			Hold{Ref: "h1", Protocol: UploadPUT, Name: "v.mp4", MIME: "video/mp4", Size: -1, Auth: map[string]string{"authorization": "Bearer x"}},
			`{"type":"hold","ref":"h1","protocol":"put","name":"v.mp4","mime":"video/mp4","size":-1,"auth":{"authorization":"Bearer x"}}`,
		},
		{
			"held",
			Held{Ref: "h1", ID: ItemID{0: 0x08}, Owner: "o", ShareURL: "https://x/i/b", DownloadURL: "https://x/v1/items/b", ExpiresMS: 1000},
			`{"type":"held","ref":"h1","id":"baaaaaaaaaaaaaaaaaaaaaaaaa","owner":"o","share_url":"https://x/i/b","download_url":"https://x/v1/items/b","expires_ms":1000}`,
		},
		{
			"hold_done",
			HoldDone{ID: ItemID{0: 0x08}, Size: 7},
			`{"type":"hold_done","id":"baaaaaaaaaaaaaaaaaaaaaaaaa","size":7}`,
		},
		{
			"release",
			Release{ID: ItemID{0: 0x08}, Status: StatusExpired, Reason: "expired"},
			`{"type":"release","id":"baaaaaaaaaaaaaaaaaaaaaaaaa","status":101,"reason":"expired"}`,
		},
		{
			"registered with read checks off",
			Registered{Relay: "R", HeartbeatMS: 1000, ReadChecks: new(false)},
			`{"type":"registered","relay":"R","heartbeat_ms":1000,"read_checks":false}`,
		},
		{
			"read_check",
			ReadCheck{Check: 3, Item: ItemID{0: 0x08}, Client: "192.0.2.1:5", Auth: map[string]string{"authorization": "Bearer x"}},
			`{"type":"read_check","check":3,"item":"baaaaaaaaaaaaaaaaaaaaaaaaa","client":"192.0.2.1:5","auth":{"authorization":"Bearer x"}}`,
		},
		{
			"read_verdict allows",
			ReadVerdict{Check: 3},
			`{"type":"read_verdict","check":3,"status":0}`,
		},
		{
			"heartbeat without record",
			Heartbeat{Streams: 1},
			`{"type":"heartbeat","streams":1,"reserved":0,"served":0}`,
		},
		{
			"heartbeat with record",
			Heartbeat{Record: []byte{0xfb, 0xff}},
			`{"type":"heartbeat","streams":0,"reserved":0,"served":0,"record":"+/8="}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeMessage(tt.m)
			if err != nil {
				t.Fatalf("EncodeMessage: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for typ, m := range sampleMessages() {
		t.Run(typ, func(t *testing.T) {
			b, err := EncodeMessage(m)
			if err != nil {
				t.Fatalf("EncodeMessage: %v", err)
			}
			if want := `{"type":"` + typ + `"`; !bytes.HasPrefix(b, []byte(want)) {
				t.Errorf("got %s, want it to start with %s", b, want)
			}
			got, err := DecodeMessage(b, DefaultMaxMessage)
			if err != nil {
				t.Fatalf("DecodeMessage(%s): %v", b, err)
			}
			if g := reflect.ValueOf(got).Elem().Interface(); !reflect.DeepEqual(g, m) {
				t.Errorf("got %+v, want %+v", g, m)
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{"unknown fields ignored", `{"type":"cancel","order":3,"later":{"x":[1]}}`, &Cancel{Order: 3}},
		{"type not first", `{"order":3,"type":"cancel"}`, &Cancel{Order: 3}},
		{"missing fields zero", `{"type":"need"}`, &Need{}},
		{"item id uppercase", `{"type":"unpublish","id":"BAAAAAAAAAAAAAAAAAAAAAAAAA"}`, &Unpublish{ID: ItemID{0: 0x08}}},
		{"whitespace", " {\n\"type\" : \"hello\" }\n", &Hello{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeMessage([]byte(tt.in), DefaultMaxMessage)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		wantErr error
	}{
		{"empty", ``, DefaultMaxMessage, ErrBadMessage},
		{"not json", `hello`, DefaultMaxMessage, ErrBadMessage},
		{"truncated", `{"type":"hello"`, DefaultMaxMessage, ErrBadMessage},
		{"array", `[{"type":"hello"}]`, DefaultMaxMessage, ErrBadMessage},
		{"null", `null`, DefaultMaxMessage, ErrBadMessage},
		{"no type", `{"order":1}`, DefaultMaxMessage, ErrBadMessage},
		{"null type", `{"type":null}`, DefaultMaxMessage, ErrBadMessage},
		{"type not a string", `{"type":5}`, DefaultMaxMessage, ErrBadMessage},
		{"field wrong type", `{"type":"cancel","order":"7"}`, DefaultMaxMessage, ErrBadMessage},
		{"negative unsigned", `{"type":"cancel","order":-1}`, DefaultMaxMessage, ErrBadMessage},
		{"fraction", `{"type":"need","off":1.5}`, DefaultMaxMessage, ErrBadMessage},
		{"status out of range", `{"type":"error","status":65536}`, DefaultMaxMessage, ErrBadMessage},
		{"addrs not a list", `{"type":"register","addrs":"x"}`, DefaultMaxMessage, ErrBadMessage},
		{"record not base64", `{"type":"register","record":"!!"}`, DefaultMaxMessage, ErrBadMessage},
		{"bad item id", `{"type":"need","item":"abc"}`, DefaultMaxMessage, ErrBadMessage},
		{"item id as bytes", `{"type":"need","item":[1,2]}`, DefaultMaxMessage, ErrBadMessage},
		{"unknown type", `{"type":"teleport"}`, DefaultMaxMessage, ErrUnknownType},
		{"empty type", `{"type":""}`, DefaultMaxMessage, ErrUnknownType},
		{"type case matters", `{"type":"Hello"}`, DefaultMaxMessage, ErrUnknownType},
		{"over max", `{"type":"hello"}`, 15, ErrMessageTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMessage([]byte(tt.in), tt.max)
			if !errors.Is(err, tt.wantErr) || m != nil {
				t.Errorf("got %v, %v, want nil, %v", m, err, tt.wantErr)
			}
		})
	}
}

func TestDecodeMessageAtMax(t *testing.T) {
	in := `{"type":"hello"}`
	if _, err := DecodeMessage([]byte(in), len(in)); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

func TestItemIDJSON(t *testing.T) {
	id := ItemID{15: 1}
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"aaaaaaaaaaaaaaaaaaaaaaaaae"`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	var got ItemID
	if err := json.Unmarshal(b, &got); err != nil || got != id {
		t.Errorf("got %v, %v, want %v, nil", got, err, id)
	}
	for _, bad := range []string{`"abc"`, `"aaaaaaaaaaaaaaaaaaaaaaaaa1"`, `""`, `16`} {
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("Unmarshal(%s): got nil error, want one", bad)
		}
	}
}

// checkMessageStable decodes data as a control message. Whatever decodes
// must encode, with its type first, to JSON that decodes to an equal
// message and encodes to the same bytes again; failures must carry one of
// the message sentinels.
func checkMessageStable(t *testing.T, data []byte) {
	t.Helper()
	m, err := DecodeMessage(data, DefaultMaxMessage)
	if err != nil {
		if m != nil {
			t.Fatalf("got message %+v with error %v", m, err)
		}
		if !errors.Is(err, ErrBadMessage) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("DecodeMessage: unexpected error %v", err)
		}
		return
	}
	if _, ok := messageTypes[m.MessageType()]; !ok {
		t.Fatalf("got message of unknown type %q", m.MessageType())
	}
	enc, err := EncodeMessage(m)
	if err != nil {
		t.Fatalf("EncodeMessage(%+v): %v", m, err)
	}
	if want := `{"type":"` + m.MessageType() + `"`; !strings.HasPrefix(string(enc), want) {
		t.Fatalf("got %s, want it to start with %s", enc, want)
	}
	m2, err := DecodeMessage(enc, len(enc))
	if err != nil {
		t.Fatalf("DecodeMessage(%s): %v", enc, err)
	}
	if !reflect.DeepEqual(m2, m) && !emptyIsNil(m, m2) {
		t.Fatalf("got %+v after re-encoding, want %+v", m2, m)
	}
	enc2, err := EncodeMessage(m2)
	if err != nil || !bytes.Equal(enc2, enc) {
		t.Fatalf("got %s, %v on second encoding, want %s", enc2, err, enc)
	}
}

// emptyIsNil reports whether a and b differ only in slices that are empty
// in one and nil in the other: an empty list (`"removed":[]`) and an
// absent one (omitempty) mean the same.
func emptyIsNil(a, b Message) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := EncodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"type":"need","item":"BAAAAAAAAAAAAAAAAAAAAAAAAA","off":1.5}`))
	f.Add([]byte(`{"type":"register","addrs":[],"TYPE":"x"}`))
	f.Add([]byte(`{"type":"teleport"}`))
	f.Add([]byte(`{"type":null}`))
	f.Add([]byte(`{"type":"publish","text":"\ud800\u00e9\xff"}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		checkMessageStable(t, data)
	})
}

func TestInfoJSON(t *testing.T) {
	info := Info{
		Version:   Version,
		PeerID:    "12D3KooW",
		Addrs:     []string{"/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooW"},
		TokenKey:  "AAEC",
		PublicURL: "https://rv.example",
		STUN:      []string{"rv.example:3478", "rv.example:3479"},
	}
	want := `{"version":1,"peer_id":"12D3KooW","addrs":["/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooW"],"token_key":"AAEC","public_url":"https://rv.example","stun":["rv.example:3478","rv.example:3479"]}`
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	var got Info
	if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, info) {
		t.Errorf("got %+v, %v, want %+v, nil", got, err, info)
	}
}

func TestPeerKinds(t *testing.T) {
	ms := MeshStatus{Peers: []MeshPeer{{Kind: PeerRelayed}, {Kind: PeerHolePunched}, {Kind: PeerRelayed}, {Kind: "carrier-pigeon"}}}
	got := ms.PeerKinds()
	want := map[string]int{PeerDirect: 0, PeerHolePunched: 1, PeerRelayed: 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
