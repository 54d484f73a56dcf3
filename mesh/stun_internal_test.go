package mesh

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/pion/stun/v2"
)

// FuzzParseBindingAnswer feeds arbitrary datagrams to the probe's answer
// decoder: it must never panic, and what it accepts must be a Binding
// success for one of the probe's transactions with a valid address.
func FuzzParseBindingAnswer(f *testing.F) {
	txid := [stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	answer := func(setters ...stun.Setter) []byte {
		m, err := stun.Build(append([]stun.Setter{stun.NewTransactionIDSetter(txid), stun.BindingSuccess}, setters...)...)
		if err != nil {
			f.Fatal(err)
		}
		return m.Raw
	}
	f.Add(answer(&stun.XORMappedAddress{IP: []byte{198, 51, 100, 7}, Port: 40000}, stun.NewSoftware("meshup"), stun.Fingerprint))
	f.Add(answer(&stun.XORMappedAddress{IP: netip.MustParseAddr("2001:db8::1").AsSlice(), Port: 1}))
	f.Add(answer(stun.RawAttribute{Type: stun.AttrXORMappedAddress, Value: []byte{0}}))
	f.Add(answer(stun.RawAttribute{Type: stun.AttrXORMappedAddress, Value: []byte{0, 1, 0, 0}}))
	f.Add(answer(&stun.MappedAddress{IP: []byte{198, 51, 100, 7}, Port: 40000}))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		i, mapped, ok := parseBindingAnswer(pkt, [][stun.TransactionIDSize]byte{{}, txid})
		if !bytes.Equal(pkt, orig) {
			t.Fatal("parseBindingAnswer modified the datagram")
		}
		if !ok {
			return
		}
		if i != 1 || !bytes.Equal(pkt[8:20], txid[:]) {
			t.Fatalf("accepted transaction %x as index %d", pkt[8:20], i)
		}
		if !mapped.IsValid() || mapped.Port() == 0 || mapped.Addr().Is4In6() {
			t.Fatalf("accepted mapped address %v", mapped)
		}
	})
}

func TestParseBindingAnswer(t *testing.T) {
	t.Parallel()
	txid := [stun.TransactionIDSize]byte{9}
	build := func(tp stun.MessageType, id [stun.TransactionIDSize]byte, setters ...stun.Setter) []byte {
		m, err := stun.Build(append([]stun.Setter{stun.NewTransactionIDSetter(id), tp}, setters...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	xor4 := &stun.XORMappedAddress{IP: []byte{198, 51, 100, 7}, Port: 40000}
	good := build(stun.BindingSuccess, txid, xor4, stun.Fingerprint)
	badFP := bytes.Clone(good)
	badFP[len(badFP)-1] ^= 1
	tests := []struct {
		name string
		pkt  []byte
		want netip.AddrPort // zero: rejected
	}{
		{"ipv4", good, netip.MustParseAddrPort("198.51.100.7:40000")},
		{"ipv6", build(stun.BindingSuccess, txid, &stun.XORMappedAddress{IP: netip.MustParseAddr("2001:db8::1").AsSlice(), Port: 5}),
			netip.MustParseAddrPort("[2001:db8::1]:5")},
		{"other transaction", build(stun.BindingSuccess, [stun.TransactionIDSize]byte{8}, xor4), netip.AddrPort{}},
		{"error answer", build(stun.BindingError, txid, xor4), netip.AddrPort{}},
		{"request", build(stun.BindingRequest, txid, xor4), netip.AddrPort{}},
		{"only MAPPED-ADDRESS", build(stun.BindingSuccess, txid, &stun.MappedAddress{IP: []byte{198, 51, 100, 7}, Port: 40000}), netip.AddrPort{}},
		{"short XOR-MAPPED-ADDRESS", build(stun.BindingSuccess, txid, stun.RawAttribute{Type: stun.AttrXORMappedAddress, Value: []byte{0}}), netip.AddrPort{}},
		{"port zero", build(stun.BindingSuccess, txid, &stun.XORMappedAddress{IP: []byte{198, 51, 100, 7}, Port: 0}), netip.AddrPort{}},
		{"bad fingerprint", badFP, netip.AddrPort{}},
		{"trailing byte", append(bytes.Clone(good), 0), netip.AddrPort{}},
		{"empty XOR-MAPPED-ADDRESS last", build(stun.BindingSuccess, txid, stun.RawAttribute{Type: stun.AttrXORMappedAddress}), netip.AddrPort{}},
		{"junk", []byte("hello, world"), netip.AddrPort{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := slices.Clip(tt.pkt) // as a fuzzer would pass it: no spare capacity
			_, got, ok := parseBindingAnswer(pkt, [][stun.TransactionIDSize]byte{txid})
			if ok != tt.want.IsValid() || got != tt.want {
				t.Errorf("got %v, %v, want %v", got, ok, tt.want)
			}
		})
	}
}
