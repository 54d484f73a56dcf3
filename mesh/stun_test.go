package mesh_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// fast makes probes of silent servers short.
var fast = mesh.ProbeConfig{Tries: 2, Interval: 50 * time.Millisecond}

// udpPort opens a UDP socket on an ephemeral loopback port, closed at t's
// cleanup. Nothing reads it unless the test says so: a silent server that
// sends no ICMP errors either.
func udpPort(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stunServer runs the rendezvous's STUN server on n loopback ports and
// returns their addresses.
func stunServer(t *testing.T, n int) []string {
	t.Helper()
	srv := rendezvous.NewSTUNServer(rendezvous.STUNConfig{Logger: rendezvoustest.Logger(t)})
	t.Cleanup(func() { srv.Close() })
	var addrs []string
	for range n {
		c := udpPort(t)
		addrs = append(addrs, c.LocalAddr().String())
		go srv.Serve(c)
	}
	return addrs
}

// fakeNAT answers Binding requests on conn as a NAT would make a STUN
// server see them: with mapped as the XOR-MAPPED-ADDRESS, whatever the
// real source. It is a test double of the network, not of ProbeNAT.
type fakeNAT struct {
	mapped   netip.AddrPort
	replyVia *net.UDPConn // answer from this socket instead of conn
	badTxid  bool         // answer another transaction
}

func (f fakeNAT) serve(t *testing.T, conn *net.UDPConn) {
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed at cleanup
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.BindingRequest {
				continue
			}
			txid := req.TransactionID
			if f.badTxid {
				txid[0] ^= 0xff
			}
			resp, err := stun.Build(stun.NewTransactionIDSetter(txid), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: f.mapped.Addr().AsSlice(), Port: int(f.mapped.Port())}, stun.Fingerprint)
			if err != nil {
				t.Errorf("fake nat: build answer: %v", err)
				return
			}
			via := conn
			if f.replyVia != nil {
				via = f.replyVia
			}
			via.WriteToUDPAddrPort(resp.Raw, from)
		}
	}()
}

func probe(t *testing.T, servers []string, cfg mesh.ProbeConfig) mesh.NATReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := mesh.ProbeNAT(ctx, servers, cfg)
	if err != nil {
		t.Fatalf("ProbeNAT: %v", err)
	}
	return r
}

func TestProbeNATLoopback(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := probe(t, stunServer(t, 2), mesh.ProbeConfig{})
	if el := time.Since(start); el > mesh.DefaultProbeInterval {
		t.Errorf("probe of two answering servers took %v, want well under one interval", el)
	}
	// On loopback nothing translates: the mapped address is the socket's.
	if r.Type != mesh.NATPublic || r.Answers != 2 {
		t.Errorf("got %v with %d answers, want %v with 2", r.Type, r.Answers, mesh.NATPublic)
	}
	if !r.Mapped.Addr().IsLoopback() || r.Mapped != r.Local || r.MappedAlt != r.Mapped {
		t.Errorf("got mapped %v and %v, local %v, want the same loopback address thrice", r.Mapped, r.MappedAlt, r.Local)
	}
}

func TestProbeNATOneAnswer(t *testing.T) {
	t.Parallel()
	servers := append(stunServer(t, 1), udpPort(t).LocalAddr().String())
	r := probe(t, servers, fast)
	if r.Type != mesh.NATUnknown || r.Answers != 1 {
		t.Errorf("got %v with %d answers, want %v with 1", r.Type, r.Answers, mesh.NATUnknown)
	}
	if !r.Mapped.IsValid() || r.MappedAlt.IsValid() {
		t.Errorf("got mapped %v and %v, want the first only", r.Mapped, r.MappedAlt)
	}

	// The alternate answering alone still gives a Mapped address.
	servers[0], servers[1] = servers[1], servers[0]
	r = probe(t, servers, fast)
	if r.Type != mesh.NATUnknown || r.Answers != 1 || !r.Mapped.IsValid() || r.Mapped != r.MappedAlt {
		t.Errorf("second only: got %+v, want unknown, 1 answer, Mapped = MappedAlt", r)
	}

	r = probe(t, stunServer(t, 1), fast)
	if r.Type != mesh.NATUnknown || r.Answers != 1 || !r.Mapped.IsValid() {
		t.Errorf("single server: got %+v, want unknown with its answer", r)
	}
}

func TestProbeNATFake(t *testing.T) {
	t.Parallel()
	ap := netip.MustParseAddrPort
	tests := []struct {
		name          string
		first, second netip.AddrPort
		want          mesh.NATType
	}{
		{"cone", ap("198.51.100.20:4000"), ap("198.51.100.20:4000"), mesh.NATCone},
		{"symmetric ports", ap("198.51.100.20:4000"), ap("198.51.100.20:4001"), mesh.NATSymmetric},
		{"symmetric ips", ap("198.51.100.20:4000"), ap("198.51.100.21:4000"), mesh.NATSymmetric},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := udpPort(t), udpPort(t)
			fakeNAT{mapped: tt.first}.serve(t, a)
			fakeNAT{mapped: tt.second}.serve(t, b)
			r := probe(t, []string{a.LocalAddr().String(), b.LocalAddr().String()}, fast)
			if r.Type != tt.want || r.Answers != 2 {
				t.Errorf("got %v with %d answers, want %v with 2", r.Type, r.Answers, tt.want)
			}
			if r.Mapped != tt.first || r.MappedAlt != tt.second {
				t.Errorf("got mapped %v and %v, want %v and %v", r.Mapped, r.MappedAlt, tt.first, tt.second)
			}
		})
	}
}

func TestProbeNATIgnoresStrangers(t *testing.T) {
	t.Parallel()
	mapped := netip.MustParseAddrPort("198.51.100.20:4000")
	a, b, other := udpPort(t), udpPort(t), udpPort(t)
	fakeNAT{mapped: mapped, badTxid: true}.serve(t, a)   // answers another transaction
	fakeNAT{mapped: mapped, replyVia: other}.serve(t, b) // answers from another port
	r := probe(t, []string{a.LocalAddr().String(), b.LocalAddr().String()}, fast)
	if r.Answers != 0 || r.Type != mesh.NATUnknown || r.Mapped.IsValid() {
		t.Errorf("got %+v, want no answers", r)
	}
}

func TestProbeNATErrors(t *testing.T) {
	t.Parallel()
	silent := udpPort(t).LocalAddr().String()
	tests := []struct {
		name    string
		servers []string
		cfg     mesh.ProbeConfig
		want    error // nil: any error
	}{
		{"no servers", nil, fast, mesh.ErrSTUNServers},
		{"three servers", []string{silent, silent, silent}, fast, mesh.ErrSTUNServers},
		{"no port", []string{"127.0.0.1"}, fast, nil},
		{"ipv6 server, ipv4 socket", []string{"[::1]:3478"}, fast, nil},
		{"bad local address", []string{silent}, mesh.ProbeConfig{LocalAddr: "somewhere"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := mesh.ProbeNAT(context.Background(), tt.servers, tt.cfg)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("got %+v, %v, want error %v", r, err, tt.want)
			}
		})
	}
}

func TestProbeNATContext(t *testing.T) {
	t.Parallel()
	silent := []string{udpPort(t).LocalAddr().String(), udpPort(t).LocalAddr().String()}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := mesh.ProbeNAT(ctx, silent, mesh.ProbeConfig{Tries: 3, Interval: 5 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want %v", err, context.DeadlineExceeded)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("ProbeNAT returned %v after its context ended, want promptly", el)
	}
}
