package rendezvous_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestNeedOrder(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "https://relay.test:8443")
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)
	key := tokenKey(t, rv)

	if err := relay.Send(&proto.Need{Need: 7, Item: pub.ID, Off: 100, Len: 900, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	o := recvAs[proto.Order](t, c.Recv)
	if o.Item != pub.ID || o.Off != 100 || o.Len != 900 || o.Relay != relay.ID || o.Order == 0 {
		t.Errorf("order: got %+v, want item %s bytes 100+900 to relay %s", o, pub.ID, relay.ID)
	}
	if got, want := o.PushURL, "wss://relay.test:8443/v1/push"; got != want {
		t.Errorf("push_url: got %q, want %q", got, want)
	}
	claims, err := proto.ParseToken(key, o.Token, time.Now())
	if err != nil {
		t.Fatalf("push token: %v", err)
	}
	if err := claims.Check(relay.ID, proto.DirPush, pub.ID, 100, 900); err != nil {
		t.Errorf("push token does not cover the order: %v", err)
	}
	if claims.Ref != 7 {
		t.Errorf("push token ref: got %d, want 7", claims.Ref)
	}
	if err := claims.Check(relay.ID, proto.DirRead, pub.ID, 100, 900); err == nil {
		t.Error("push token also allows reading")
	}
	if exp := time.Unix(claims.Exp, 0); exp.After(time.Now().Add(2*time.Minute + time.Second)) {
		t.Errorf("push token expires at %v, more than PushTokenTTL from now", exp)
	}

	// A second need gets a distinct order.
	if err := relay.Send(&proto.Need{Need: 8, Item: pub.ID, Off: 0, Len: 100, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	if o2 := recvAs[proto.Order](t, c.Recv); o2.Order == o.Order {
		t.Errorf("two needs got the same order id %d", o.Order)
	}
	if st := rv.Server.Stats(); st.OrdersSent != 2 || st.Orders != 2 {
		t.Errorf("stats: orders sent %d outstanding %d, want 2 and 2", st.OrdersSent, st.Orders)
	}
}

func TestNeedFailed(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	c := rendezvoustest.DialControl(t, rv)
	file := publishFile(t, c, 1000)
	msg := c.Publish(t, proto.Publish{Kind: proto.KindMessage, Text: "hi"})
	gone := rendezvoustest.DialControl(t, rv)
	offline := publishFile(t, gone, 1000)
	gone.Close()
	eventually(t, "item to go offline", func() bool { return getStatus(t, rv).ItemsOnline == 2 })

	// Keep one need outstanding to test duplicates.
	if err := relay.Send(&proto.Need{Need: 99, Item: file.ID, Off: 0, Len: 1, Token: rv.ReadToken(t, file.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	recvAs[proto.Order](t, c.Recv)

	tests := []struct {
		name string
		need proto.Need
		want proto.Status
	}{
		{"unknown item", proto.Need{Item: proto.NewItemID(), Len: 1}, proto.StatusNotFound},
		{"message item", proto.Need{Item: msg.ID, Len: 1}, proto.StatusNotFound},
		{"offline", proto.Need{Item: offline.ID, Len: 1}, proto.StatusOffline},
		{"negative offset", proto.Need{Item: file.ID, Off: -1, Len: 1}, proto.StatusMalformed},
		{"zero length", proto.Need{Item: file.ID, Off: 0, Len: 0}, proto.StatusMalformed},
		{"past the end", proto.Need{Item: file.ID, Off: 999, Len: 2}, proto.StatusMalformed},
		{"overflow", proto.Need{Item: file.ID, Off: 10, Len: 1<<63 - 1}, proto.StatusMalformed},
		{"duplicate need", proto.Need{Need: 99, Item: file.ID, Len: 1}, proto.StatusProtocol},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.need.Need == 0 {
				tt.need.Need = uint64(i + 1)
			}
			if err := relay.Send(&tt.need); err != nil {
				t.Fatal(err)
			}
			nf := recvAs[proto.NeedFailed](t, relay.Recv)
			if nf.Need != tt.need.Need || nf.Status != tt.want || nf.Reason == "" {
				t.Errorf("got %+v, want need %d status %d with a reason", nf, tt.need.Need, tt.want)
			}
		})
	}
	if got := rv.Server.Stats().NeedFailed[proto.StatusMalformed]; got != 4 {
		t.Errorf("stats need failed malformed: got %d, want 4", got)
	}
}

func TestNeedCancel(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)
	if err := relay.Send(&proto.Need{Need: 3, Item: pub.ID, Off: 0, Len: 1000, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	o := recvAs[proto.Order](t, c.Recv)
	if err := relay.Send(&proto.NeedCancel{Need: 3}); err != nil {
		t.Fatal(err)
	}
	if got := recvAs[proto.Cancel](t, c.Recv); got.Order != o.Order {
		t.Errorf("cancel of order %d, want %d", got.Order, o.Order)
	}
	eventually(t, "order to be forgotten", func() bool { return rv.Server.Stats().Orders == 0 })

	// The order is forgotten: failing it now reaches no relay, and the
	// need id may be used again.
	if err := c.Send(&proto.OrderFailed{Order: o.Order, Status: proto.StatusSourceError}); err != nil {
		t.Fatal(err)
	}
	if err := relay.Send(&proto.Need{Need: 3, Item: pub.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	if o2 := recvAs[proto.Order](t, c.Recv); o2.Len != 10 {
		t.Errorf("order after reuse of the need id: got %+v, want len 10", o2)
	}
}

func TestOrderFailed(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	c := rendezvoustest.DialControl(t, rv)
	other := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)
	if err := relay.Send(&proto.Need{Need: 5, Item: pub.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	o := recvAs[proto.Order](t, c.Recv)

	// Another session cannot fail someone else's order.
	if err := other.Send(&proto.OrderFailed{Order: o.Order, Status: proto.StatusSourceError}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(&proto.OrderFailed{Order: o.Order, Status: proto.StatusSourceError, Reason: "file vanished"}); err != nil {
		t.Fatal(err)
	}
	nf := recvAs[proto.NeedFailed](t, relay.Recv)
	if *nf != (proto.NeedFailed{Need: 5, Status: proto.StatusSourceError, Reason: "file vanished"}) {
		t.Errorf("got %+v, want need 5 status %d reason %q", nf, proto.StatusSourceError, "file vanished")
	}
	if st := rv.Server.Stats(); st.OrdersFailed != 1 || st.Orders != 0 {
		t.Errorf("stats: orders failed %d outstanding %d, want 1 and 0", st.OrdersFailed, st.Orders)
	}
}

func TestPublisherGone(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)
	for need := uint64(1); need <= 2; need++ {
		if err := relay.Send(&proto.Need{Need: need, Item: pub.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
			t.Fatal(err)
		}
		recvAs[proto.Order](t, c.Recv)
	}
	c.Close()
	got := map[uint64]bool{}
	for range 2 {
		nf := recvAs[proto.NeedFailed](t, relay.Recv)
		if nf.Status != proto.StatusOffline {
			t.Errorf("need %d failed with %d, want %d", nf.Need, nf.Status, proto.StatusOffline)
		}
		got[nf.Need] = true
	}
	if !got[1] || !got[2] {
		t.Errorf("needs failed: got %v, want 1 and 2", got)
	}
	st := getStatus(t, rv)
	if st.Items != 1 || st.ItemsOnline != 0 {
		t.Errorf("status: items %d online %d, want 1 and 0", st.Items, st.ItemsOnline)
	}
	if resp, _ := do(t, "GET", pub.DownloadURL); resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" {
		t.Errorf("GET of the offline item: status %d Retry-After %q, want 503 and 5", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestOfflineItemExpires(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.ItemTTL = 200 * time.Millisecond
	cfg.DeadAfter = 2 * time.Second // the sweeper runs every DeadAfter/4
	rv := rendezvoustest.Start(t, cfg)
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 10)
	c.Close()
	eventually(t, "offline item to expire", func() bool { return getStatus(t, rv).Items == 0 })
	if resp, _ := do(t, "GET", pub.DownloadURL); resp.StatusCode != 404 {
		t.Errorf("GET of an expired item: status %d, want 404", resp.StatusCode)
	}
	if got := rv.Server.Stats().ItemsPurged; got != 1 {
		t.Errorf("stats items purged: got %d, want 1", got)
	}
}

// TestSlowPublisher checks that a publisher that stops reading is busy:
// needs for its item are refused (over limit) instead of stalling the
// scheduler or dropping its session, and others are served meanwhile.
func TestSlowPublisher(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.SessionQueue = 8
	cfg.MaxNeedsPerRelay = 1 << 20
	cfg.NeedRate, cfg.NeedBurst = 1e9, 1<<30 // the flood is the point
	cfg.ItemNeedRate, cfg.ItemNeedBurst = 1e9, 1<<30
	rv := rendezvoustest.Start(t, cfg)
	relay := rendezvoustest.Register(t, rv, "http://relay.test")

	// A publisher with a tiny receive buffer that never reads after
	// publishing.
	d := websocket.Dialer{
		HandshakeTimeout: wait,
		Subprotocols:     []string{proto.Subprotocol},
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				err = c.(*net.TCPConn).SetReadBuffer(4096)
			}
			return c, err
		},
	}
	conn, _, err := d.Dial(rv.ControlURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	slow := &rendezvoustest.Control{Conn: conn}
	recvAs[proto.Welcome](t, slow.Recv)
	slowItem := publishFile(t, slow, 1<<30)
	fast := rendezvoustest.DialControl(t, rv)
	fastItem := publishFile(t, fast, 1000)

	slowTok := rv.ReadToken(t, slowItem.ID, relay.ID)
	stop := make(chan struct{})
	flooded := make(chan int, 1)
	go func() {
		n := 0
		defer func() { flooded <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n++; n > 1<<20 {
				return
			}
			if relay.Send(&proto.Need{Need: uint64(n), Item: slowItem.ID, Off: 0, Len: 1, Token: slowTok}) != nil {
				return
			}
		}
	}()
	for {
		nf := recvAs[proto.NeedFailed](t, relay.Recv)
		if nf.Status == proto.StatusOverLimit && strings.Contains(nf.Reason, "busy") {
			break
		}
	}
	close(stop)
	t.Logf("needs sent before the slow publisher was busy: %d", <-flooded)
	st := rv.Server.Stats()
	if st.Rejected[rendezvous.RejectPublisherBusy] == 0 || st.Rejected[rendezvous.RejectQueueFull] != 0 {
		t.Errorf("rejections %v: want publisher_busy counted and no queue_full", st.Rejected)
	}

	const fastNeed = 1 << 40
	if err := relay.Send(&proto.Need{Need: fastNeed, Item: fastItem.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, fastItem.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	if o := recvAs[proto.Order](t, fast.Recv); o.Item != fastItem.ID {
		t.Errorf("order for %s, want %s", o.Item, fastItem.ID)
	}
	// The busy publisher keeps its session: its readers pause, and are not
	// cut.
	if got := getStatus(t, rv); got.ItemsOnline != 2 || got.Sessions != 2 {
		t.Errorf("items online %d, sessions %d: want both publishers still online", got.ItemsOnline, got.Sessions)
	}
}
