package rendezvous

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v2"
)

// bindingRequest returns a Binding request with the given extra setters,
// e.g. stun.Fingerprint.
func bindingRequest(tb testing.TB, setters ...stun.Setter) *stun.Message {
	tb.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)...)
	if err != nil {
		tb.Fatalf("build binding request: %v", err)
	}
	return m
}

// checkAnswer checks that resp is a Binding success for req's transaction
// that maps src.
func checkAnswer(tb testing.TB, resp []byte, txid [stun.TransactionIDSize]byte, src netip.AddrPort) {
	tb.Helper()
	m := &stun.Message{Raw: append([]byte(nil), resp...)}
	if err := m.Decode(); err != nil {
		tb.Fatalf("decode answer: %v", err)
	}
	if m.Type != stun.BindingSuccess {
		tb.Errorf("answer type: got %v, want %v", m.Type, stun.BindingSuccess)
	}
	if m.TransactionID != txid {
		tb.Errorf("answer transaction: got %x, want %x", m.TransactionID, txid)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		tb.Fatalf("answer XOR-MAPPED-ADDRESS: %v", err)
	}
	ip, _ := netip.AddrFromSlice(xa.IP)
	if got := netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)); got != src {
		tb.Errorf("mapped address: got %v, want %v", got, src)
	}
	var sw stun.Software
	if err := sw.GetFrom(m); err != nil || sw.String() != STUNSoftware {
		tb.Errorf("software: got %q, %v, want %q", sw.String(), err, STUNSoftware)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		tb.Errorf("answer fingerprint: %v", err)
	}
}

func TestSTUNAnswer(t *testing.T) {
	t.Parallel()
	src4 := netip.MustParseAddrPort("198.51.100.7:40000")
	src6 := netip.MustParseAddrPort("[2001:db8::1]:5")
	plain := bindingRequest(t).Raw
	withFP := bindingRequest(t, stun.NewSoftware("test"), stun.Fingerprint).Raw
	badFP := bytes.Clone(withFP)
	badFP[len(badFP)-1] ^= 1
	// An attribute header that announces more bytes than the message has.
	truncAttr := bytes.Clone(plain[:20])
	truncAttr[3] = 8 // message length 8
	truncAttr = append(truncAttr, 0x80, 0x22, 0, 8, 'm', 'e', 's', 'h')
	typed := func(tp stun.MessageType) []byte {
		m, err := stun.Build(stun.TransactionID, tp)
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	edit := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }

	tests := []struct {
		name string
		pkt  []byte
		src  netip.AddrPort
		want stunDrop // ignored when answered
		ok   bool
	}{
		{"binding", plain, src4, 0, true},
		{"binding with fingerprint", withFP, src4, 0, true},
		{"binding from ipv6", plain, src6, 0, true},
		{"empty", nil, src4, dropNotSTUN, false},
		{"short", plain[:12], src4, dropNotSTUN, false},
		{"no magic cookie", edit(plain, func(b []byte) []byte { b[4] = 0; return b }), src4, dropNotSTUN, false},
		{"top bits set", edit(plain, func(b []byte) []byte { b[0] |= 0x40; return b }), src4, dropMalformed, false},
		{"trailing byte", append(bytes.Clone(plain), 0), src4, dropMalformed, false},
		{"length beyond packet", edit(plain, func(b []byte) []byte { b[3] = 4; return b }), src4, dropMalformed, false},
		{"length not in words", edit(plain, func(b []byte) []byte { b[3] = 2; return append(b, 0, 0) }), src4, dropMalformed, false},
		{"truncated attribute", truncAttr, src4, dropMalformed, false},
		{"binding indication", typed(stun.NewType(stun.MethodBinding, stun.ClassIndication)), src4, dropNotBinding, false},
		{"binding success", typed(stun.BindingSuccess), src4, dropNotBinding, false},
		{"binding error", typed(stun.BindingError), src4, dropNotBinding, false},
		{"allocate request", typed(stun.NewType(stun.MethodAllocate, stun.ClassRequest)), src4, dropNotBinding, false},
		{"bad fingerprint", badFP, src4, dropBadCRC, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, drop := stunAnswer(tt.pkt, tt.src)
			if got := resp != nil; got != tt.ok {
				t.Fatalf("answered: got %v, want %v (drop %v)", got, tt.ok, drop)
			}
			if !tt.ok {
				if drop != tt.want {
					t.Errorf("drop: got %v, want %v", drop, tt.want)
				}
				return
			}
			var txid [stun.TransactionIDSize]byte
			copy(txid[:], tt.pkt[8:20])
			checkAnswer(t, resp, txid, tt.src)
		})
	}
}

// FuzzSTUNAnswer feeds arbitrary datagrams to the STUN request handling:
// it must never panic, and whatever it answers must be a Binding success
// for the datagram's transaction that maps the sender.
func FuzzSTUNAnswer(f *testing.F) {
	f.Add(bindingRequest(f).Raw, []byte{198, 51, 100, 7}, uint16(40000))
	f.Add(bindingRequest(f, stun.NewSoftware("seed"), stun.Fingerprint).Raw, []byte{192, 0, 2, 1}, uint16(1))
	f.Add(bindingRequest(f, stun.NewUsername("a:b"), stun.Fingerprint).Raw, []byte(net.ParseIP("2001:db8::2")), uint16(65535))
	f.Add([]byte{0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x80, 0x28, 0, 0}, []byte{127, 0, 0, 1}, uint16(0))
	f.Fuzz(func(t *testing.T, pkt, ip []byte, port uint16) {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			addr = netip.MustParseAddr("203.0.113.9")
		}
		src := netip.AddrPortFrom(addr.Unmap(), port)
		if len(pkt) > MaxSTUNPacket {
			pkt = pkt[:MaxSTUNPacket]
		}
		orig := bytes.Clone(pkt)
		resp, drop := stunAnswer(pkt, src)
		if !bytes.Equal(pkt, orig) {
			t.Fatal("stunAnswer modified the request")
		}
		if resp == nil {
			if drop >= numDrops {
				t.Fatalf("drop reason %d out of range", drop)
			}
			return
		}
		if len(resp) > MaxSTUNPacket {
			t.Fatalf("answer of %d bytes", len(resp))
		}
		var txid [stun.TransactionIDSize]byte
		copy(txid[:], pkt[8:20])
		checkAnswer(t, resp, txid, src)
	})
}

func TestAdvertisedSTUN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		bound     string
		publicURL string
		want      string
	}{
		{"loopback", "127.0.0.1:3478", "https://share.example.org", "127.0.0.1:3478"},
		{"specific ip", "192.0.2.5:3479", "https://share.example.org", "192.0.2.5:3479"},
		{"unspecified v4", "0.0.0.0:3478", "https://share.example.org", "share.example.org:3478"},
		{"unspecified v6", "[::]:3478", "https://share.example.org:8443/", "share.example.org:3478"},
		{"url with ipv6 host", "[::]:3479", "http://[2001:db8::5]:8080", "[2001:db8::5]:3479"},
		{"url with ip host", "0.0.0.0:9", "http://198.51.100.1", "198.51.100.1:9"},
		{"bad url", "0.0.0.0:9", "::", "0.0.0.0:9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bound := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tt.bound))
			if got := advertisedSTUN(bound, tt.publicURL); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSTUNAltDefault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		primary string
		want    string // "" means an error
	}{
		{":3478", ":3479"},
		{"0.0.0.0:3478", "0.0.0.0:3479"},
		{"[::1]:1000", "[::1]:1001"},
		{"127.0.0.1:0", "127.0.0.1:0"},
		{"127.0.0.1:65535", ""},
		{"3478", ""},
		{":x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.primary, func(t *testing.T) {
			got, err := stunAltDefault(tt.primary)
			if (err != nil) != (tt.want == "") || got != tt.want {
				t.Errorf("got %q, %v, want %q", got, err, tt.want)
			}
		})
	}
}
