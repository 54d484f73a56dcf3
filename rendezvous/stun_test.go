package rendezvous_test

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v2"

	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// listenUDP opens a UDP socket on an ephemeral loopback port, closed at
// t's cleanup.
func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// binding sends a Binding request from c to server and returns the mapped
// address of the answer.
func binding(t *testing.T, c *net.UDPConn, server string) (netip.AddrPort, error) {
	t.Helper()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatalf("resolve %s: %v", server, err)
	}
	if _, err := c.WriteToUDP(req.Raw, to); err != nil {
		t.Fatalf("send binding request to %s: %v", server, err)
	}
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, err
		}
		m := &stun.Message{Raw: buf[:n]}
		if m.Decode() != nil || m.TransactionID != req.TransactionID {
			continue
		}
		if from.String() != to.String() {
			t.Errorf("answer from %v, want %v", from, to)
		}
		var xa stun.XORMappedAddress
		if err := xa.GetFrom(m); err != nil {
			t.Fatalf("answer from %s: XOR-MAPPED-ADDRESS: %v", server, err)
		}
		ip, _ := netip.AddrFromSlice(xa.IP)
		return netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), nil
	}
}

// settled polls f until it reports true, for at most wait. The STUN server
// counts an answer just after sending it, so a client holding the answer
// may look at the counters a moment too early.
func settled(f func() bool) bool {
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func localAddrPort(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestSTUNServer(t *testing.T) {
	t.Parallel()
	srv := rendezvous.NewSTUNServer(rendezvous.STUNConfig{Logger: rendezvoustest.Logger(t)})
	ports := []*net.UDPConn{listenUDP(t), listenUDP(t)}
	served := make(chan error, len(ports))
	for _, p := range ports {
		go func() { served <- srv.Serve(p) }()
	}
	client := listenUDP(t)

	// Each port answers with the client's address. Anything else is
	// dropped; a valid request after it proves it was read.
	for _, p := range ports {
		got, err := binding(t, client, p.LocalAddr().String())
		if err != nil {
			t.Fatalf("binding to %v: %v", p.LocalAddr(), err)
		}
		if want := localAddrPort(client); got != want {
			t.Errorf("mapped address from %v: got %v, want %v", p.LocalAddr(), got, want)
		}
	}
	primary := ports[0].LocalAddr().(*net.UDPAddr)
	success := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	for _, junk := range [][]byte{[]byte("hello"), success.Raw, make([]byte, rendezvous.MaxSTUNPacket+1)} {
		if _, err := client.WriteToUDP(junk, primary); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := binding(t, client, primary.String()); err != nil {
		t.Fatalf("binding after junk: %v", err)
	}
	want := rendezvous.STUNStats{Requests: 6, Answered: 3, Dropped: map[string]uint64{
		rendezvous.STUNDropNotSTUN:    1,
		rendezvous.STUNDropNotBinding: 1,
		rendezvous.STUNDropTooLarge:   1,
	}}
	var st rendezvous.STUNStats
	if !settled(func() bool {
		st = srv.Stats()
		return st.Requests == want.Requests && st.Answered == want.Answered && maps.Equal(st.Dropped, want.Dropped)
	}) {
		t.Errorf("stats: got %+v, want %+v", st, want)
	}

	srv.Close()
	for range ports {
		if err := <-served; err != nil {
			t.Errorf("Serve after Close: got %v, want nil", err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	late := listenUDP(t)
	if err := srv.Serve(late); !errors.Is(err, rendezvous.ErrSTUNClosed) {
		t.Errorf("Serve on a closed server: got %v, want %v", err, rendezvous.ErrSTUNClosed)
	}
	if _, err := late.WriteToUDP([]byte("x"), primary); !errors.Is(err, net.ErrClosed) {
		t.Errorf("conn after refused Serve: got %v, want %v", err, net.ErrClosed)
	}
}

func TestRendezvousSTUN(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	info := rv.Info(t)
	if len(info.STUN) != 2 || info.STUN[0] == info.STUN[1] {
		t.Fatalf("stun: got %q, want two distinct addresses", info.STUN)
	}
	client := listenUDP(t)
	for _, a := range info.STUN {
		if ap, err := netip.ParseAddrPort(a); err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("stun address %q: got %v, %v, want a loopback ip:port", a, ap, err)
		}
		got, err := binding(t, client, a)
		if err != nil {
			t.Fatalf("binding to %s: %v", a, err)
		}
		if want := localAddrPort(client); got != want {
			t.Errorf("mapped address from %s: got %v, want %v", a, got, want)
		}
	}
	var st rendezvous.Stats
	if !settled(func() bool {
		st = rv.Server.Stats()
		return st.STUNRequests == 2 && st.STUNAnswered == 2 && len(st.STUNDropped) == 0
	}) {
		t.Errorf("stats: got requests %d answered %d dropped %v, want 2 2 map[]",
			st.STUNRequests, st.STUNAnswered, st.STUNDropped)
	}

	// Close releases the ports: they can be bound again.
	rv.Close()
	for _, a := range info.STUN {
		c, err := net.ListenPacket("udp4", a)
		if err != nil {
			t.Errorf("bind %s after Close: %v", a, err)
			continue
		}
		c.Close()
	}
}

func TestRendezvousSTUNOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.STUNAddr = rendezvous.STUNOff
	rv := rendezvoustest.Start(t, cfg)
	resp, err := rendezvoustest.HTTP.Get(rv.URL + "/v1/info")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if got := string(raw["stun"]); got != "[]" {
		t.Errorf("stun: got %s, want []", got)
	}
	if st := rv.Server.Stats(); st.STUNRequests != 0 || st.STUNDropped == nil {
		t.Errorf("stats: got requests %d dropped %v, want 0 and an empty map", st.STUNRequests, st.STUNDropped)
	}
}

func TestRendezvousSTUNAltOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.STUNAddr, cfg.STUNAltAddr = "127.0.0.1:0", rendezvous.STUNOff
	rv := rendezvoustest.Start(t, cfg)
	if got := rv.Info(t).STUN; len(got) != 1 {
		t.Errorf("stun: got %q, want one address", got)
	}
}

func TestRendezvousSTUNBusy(t *testing.T) {
	t.Parallel()
	busy := listenUDP(t)
	cfg := testConfig()
	cfg.PublicURL = "http://127.0.0.1:1"
	cfg.Node = rendezvoustest.NewNode(t)
	cfg.STUNAddr = "127.0.0.1:0"
	cfg.STUNAltAddr = busy.LocalAddr().String()
	s, err := rendezvous.New(cfg)
	if err == nil {
		s.Close()
		t.Fatal("New with a busy STUN port: got nil error")
	}
	t.Log(err)
}
