package rendezvous_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{HeartbeatInterval: 250 * time.Millisecond, DeadAfter: time.Minute})
	relay := rendezvoustest.Register(t, rv, "https://relay.example.org:8443/")
	if relay.Registered.Relay != relay.ID {
		t.Errorf("registered relay id: got %q, want %q", relay.Registered.Relay, relay.ID)
	}
	if got := relay.Registered.HeartbeatMS; got != 250 {
		t.Errorf("heartbeat_ms: got %d, want 250", got)
	}
	st := getStatus(t, rv)
	if len(st.Relays) != 1 {
		t.Fatalf("status lists %d relays, want 1", len(st.Relays))
	}
	r := st.Relays[0]
	if r.ID != relay.ID || r.HTTPURL != "https://relay.example.org:8443" || !r.Alive {
		t.Errorf("status relay: got %+v, want id %s, http_url without trailing slash, alive", r, relay.ID)
	}
	if !slices.Equal(r.Addrs.Advertised, relay.Node.Addrs()) {
		t.Errorf("advertised addrs: got %v, want %v", r.Addrs.Advertised, relay.Node.Addrs())
	}
	if len(r.Addrs.Observed) != 1 || !strings.HasPrefix(r.Addrs.Observed[0], "/ip4/127.0.0.1/tcp/") {
		t.Errorf("observed addrs: got %v, want the relay's address on its register connection", r.Addrs.Observed)
	}
	if r.NAT != proto.NATPublic || !r.Public || r.Reach != r.HTTPURL {
		t.Errorf("nat %q public %v reach %q: want public, reached at %s", r.NAT, r.Public, r.Reach, r.HTTPURL)
	}
	if _, err := time.Parse(time.RFC3339Nano, r.LastSeen); err != nil {
		t.Errorf("last_seen %q: %v", r.LastSeen, err)
	}

	if err := relay.Send(&proto.Heartbeat{Streams: 3, Reserved: 4096, Served: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "heartbeat in status", func() bool {
		st := getStatus(t, rv)
		return len(st.Relays) == 1 && st.Relays[0].Streams == 3 && st.Relays[0].Reserved == 4096 && st.Relays[0].Served == 1<<20
	})
	if got := rv.Server.Stats().RelaysRegistered; got != 1 {
		t.Errorf("stats relays registered: got %d, want 1", got)
	}
}

func TestRegisterRefused(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"old version", &proto.Register{Version: proto.Version + 1, HTTPURL: "http://relay.test"}},
		{"no url", &proto.Register{Version: proto.Version}},
		{"relative url", &proto.Register{Version: proto.Version, HTTPURL: "/relay"}},
		{"ftp url", &proto.Register{Version: proto.Version, HTTPURL: "ftp://relay.test"}},
		{"url with query", &proto.Register{Version: proto.Version, HTTPURL: "http://relay.test/?x=1"}},
		{"heartbeat first", &proto.Heartbeat{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := rendezvoustest.Dial(t, rv, rendezvoustest.NewNode(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Send(tt.msg); err != nil {
				t.Fatal(err)
			}
			// The refusal says why, then the stream ends.
			if m, err := r.Recv(wait); err == nil {
				if e, ok := m.(*proto.ErrorMsg); !ok || e.Status != proto.StatusMalformed || e.Reason == "" {
					t.Errorf("got %T %+v, want an error message with status malformed and a reason", m, m)
				}
				if m, err := r.Recv(wait); err == nil {
					t.Errorf("got %T %+v after the refusal, want the stream closed", m, m)
				}
			}
		})
	}
	t.Cleanup(func() {
		if st := rv.Server.Stats(); st.Relays != 0 || st.Rejected[rendezvous.RejectRegister] != uint64(len(tests)) {
			t.Errorf("stats: %d relays, %d registers refused, want 0 and %d", st.Relays, st.Rejected[rendezvous.RejectRegister], len(tests))
		}
	})
}

// TestRegisterClock checks that a relay whose clock is 25 s off registers
// and one 40 s off (either way) is refused with a reason naming the clock,
// counted as relay_clock.
func TestRegisterClock(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	for _, tc := range []struct {
		name   string
		off    time.Duration
		reason string // "" if accepted
	}{
		{"25s ahead", 25 * time.Second, ""},
		{"25s behind", -25 * time.Second, ""},
		{"40s ahead", 40 * time.Second, "relay clock ahead of the rendezvous's by 40s"},
		{"40s behind", -40 * time.Second, "relay clock behind the rendezvous's by 40s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := rendezvoustest.Dial(t, rv, rendezvoustest.NewNode(t))
			if err != nil {
				t.Fatal(err)
			}
			reg := &proto.Register{Version: proto.Version, HTTPURL: "http://relay.test", Time: time.Now().Add(tc.off).UnixMilli()}
			if err := r.Send(reg); err != nil {
				t.Fatal(err)
			}
			m, err := r.Recv(wait)
			if err != nil {
				t.Fatal(err)
			}
			if tc.reason == "" {
				if _, ok := m.(*proto.Registered); !ok {
					t.Errorf("got %T %+v, want registered", m, m)
				}
				return
			}
			e, ok := m.(*proto.ErrorMsg)
			if !ok || e.Status != proto.StatusExpired || !strings.Contains(e.Reason, tc.reason) || !strings.Contains(e.Reason, "check the clock") {
				t.Errorf("got %T %+v, want status expired with %q and \"check the clock\"", m, m, tc.reason)
			}
		})
	}
	if got := rv.Server.Stats().Rejected[rendezvous.RejectRelayClock]; got != 2 {
		t.Errorf("relay_clock refusals: got %d, want 2", got)
	}
}

func TestRelayDead(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 300 * time.Millisecond})
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	relay.KeepAlive(50*time.Millisecond, proto.Heartbeat{Streams: 1})
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)

	// Heartbeats keep it listed well past DeadAfter.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if st := getStatus(t, rv); len(st.Relays) != 1 {
			t.Fatalf("heartbeating relay dropped: %d relays listed", len(st.Relays))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := relayOf(t, rv, pub.DownloadURL); got != relay.ID {
		t.Errorf("redirect to %s, want %s", got, relay.ID)
	}

	relay.StopHeartbeat()
	eventually(t, "silent relay to leave the status", func() bool { return len(getStatus(t, rv).Relays) == 0 })
	if _, err := relay.Recv(wait); err == nil {
		t.Error("silent relay's stream still open")
	}
	if resp, _ := do(t, "GET", pub.DownloadURL); resp.StatusCode != 503 {
		t.Errorf("GET with the only relay dead: status %d, want 503", resp.StatusCode)
	}
	// The status stops listing a relay once it is silent for DeadAfter;
	// the sweeper drops it (and counts it) on its next pass.
	eventually(t, "the silent relay counted dead", func() bool { return rv.Server.Stats().RelaysDead == 1 })
}

func TestRelayStreamEnds(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)
	if err := relay.Send(&proto.Need{Need: 1, Item: pub.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	o := recvAs[proto.Order](t, c.Recv)

	relay.Close()
	// The relay is gone: the publisher need not push to it.
	if got := recvAs[proto.Cancel](t, c.Recv); got.Order != o.Order {
		t.Errorf("cancel of order %d, want %d", got.Order, o.Order)
	}
	eventually(t, "relay to leave the status", func() bool { return len(getStatus(t, rv).Relays) == 0 })
}

func TestRelayReregister(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	first := rendezvoustest.Register(t, rv, "http://old.test")
	second, err := rendezvoustest.Dial(t, rv, first.Node)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://new.test"}); err != nil {
		t.Fatal(err)
	}
	recvAs[proto.Registered](t, second.Recv)
	if _, err := first.Recv(wait); err == nil {
		t.Error("replaced register stream still open")
	}
	st := getStatus(t, rv)
	if len(st.Relays) != 1 || st.Relays[0].HTTPURL != "http://new.test" {
		t.Errorf("status relays: got %+v, want only http://new.test", st.Relays)
	}
}

func TestRelayDisconnect(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	if err := relay.Node.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "relay to leave the status", func() bool { return len(getStatus(t, rv).Relays) == 0 })
}
