package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshup/meshup/mesh/meshtest"
)

// waitTimeout bounds every wait for the cluster to converge.
const waitTimeout = 15 * time.Second

var (
	keyA = bytes.Repeat([]byte{0xa}, 32)
	keyB = bytes.Repeat([]byte{0xb}, 32)
)

// fastConfig returns a config for a loopback member with short timings.
func fastConfig(tb testing.TB, name string, key []byte, join ...string) ClusterConfig {
	return ClusterConfig{
		Name:             name,
		BindAddr:         "127.0.0.1:0",
		Key:              key,
		Join:             join,
		Logger:           meshtest.Logger(tb).With("member", name),
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		GossipInterval:   20 * time.Millisecond,
		PushPullInterval: 2 * time.Second,
		SuspicionMult:    2,
		RejoinInterval:   time.Hour, // tests join by hand
		LeaveTimeout:     time.Second,
	}
}

func startCluster(tb testing.TB, cfg ClusterConfig) *Cluster {
	tb.Helper()
	c, err := NewCluster(cfg)
	if err != nil {
		tb.Fatalf("NewCluster %s: %v", cfg.Name, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// startClusters starts n members named m1..mn with key, each joining m1.
func startClusters(tb testing.TB, n int, key []byte) []*Cluster {
	tb.Helper()
	first := startCluster(tb, fastConfig(tb, "m1", key))
	cs := []*Cluster{first}
	for i := 2; i <= n; i++ {
		cs = append(cs, startCluster(tb, fastConfig(tb, fmt.Sprintf("m%d", i), key, first.Addr())))
	}
	for _, c := range cs {
		waitFor(tb, c.Name()+" sees every member", func() bool { return c.Stats().Members == n })
	}
	return cs
}

// kill stops c without leaving, as a crash would.
func (c *Cluster) kill() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.ml.Shutdown()
		c.cancel()
		c.wg.Wait()
	})
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting until %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasRecord(c *Cluster, r RelayRecord) bool {
	for _, got := range c.Directory() {
		if reflect.DeepEqual(got, r) {
			return true
		}
	}
	return false
}

func hasRelay(c *Cluster, relay string) bool {
	for _, got := range c.Directory() {
		if got.Relay == relay {
			return true
		}
	}
	return false
}

func stateOf(c *Cluster, name string) (MemberState, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.State, true
		}
	}
	return 0, false
}

func TestClusterConfigValidate(t *testing.T) {
	ok := ClusterConfig{Name: "n", Key: keyA}
	tests := []struct {
		name    string
		change  func(c *ClusterConfig)
		wantErr string // "" for valid
	}{
		{"defaults", func(c *ClusterConfig) {}, ""},
		{"aes-128", func(c *ClusterConfig) { c.Key = keyA[:16] }, ""},
		{"aes-192", func(c *ClusterConfig) { c.Key = keyA[:24] }, ""},
		{"port zero", func(c *ClusterConfig) { c.BindAddr = "127.0.0.1:0" }, ""},
		{"no name", func(c *ClusterConfig) { c.Name = "" }, "Name or Node is required"},
		{"no key", func(c *ClusterConfig) { c.Key = nil }, "Key is required"},
		{"short key", func(c *ClusterConfig) { c.Key = keyA[:15] }, "Key has 15 bytes"},
		{"bind no port", func(c *ClusterConfig) { c.BindAddr = "127.0.0.1" }, "BindAddr"},
		{"bind hostname", func(c *ClusterConfig) { c.BindAddr = "example.org:7946" }, "BindAddr"},
		{"advertise unspecified", func(c *ClusterConfig) { c.AdvertiseAddr = "0.0.0.0:7946" }, "AdvertiseAddr"},
		{"advertise port zero", func(c *ClusterConfig) { c.AdvertiseAddr = "10.0.0.1:0" }, "AdvertiseAddr"},
		{"join no port", func(c *ClusterConfig) { c.Join = []string{"10.0.0.1"} }, "Join address"},
		{"negative", func(c *ClusterConfig) { c.MaxRecords = -1 }, "MaxRecords is negative"},
		{"tiny records", func(c *ClusterConfig) { c.MaxRecordSize = 100 }, "MaxRecordSize"},
		{"state too big", func(c *ClusterConfig) { c.MaxRecords, c.MaxRecordSize = 1<<20, 1024 }, "push-pull"},
		{"probe timeout", func(c *ClusterConfig) { c.ProbeTimeout = time.Minute }, "ProbeTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "mesh: ")):
				t.Errorf("got %v, want an error starting with mesh: and containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestClusterNameDefaultsToPeerID(t *testing.T) {
	n, err := New(Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	cfg := fastConfig(t, "", keyA)
	cfg.Node = n
	c := startCluster(t, cfg)
	if c.Name() != n.ID() {
		t.Errorf("got %v, want %v", c.Name(), n.ID())
	}
	if _, ok := stateOf(c, n.ID()); !ok {
		t.Errorf("members %+v do not list %s", c.Members(), n.ID())
	}
}

func TestClusterGossipsRecords(t *testing.T) {
	cs := startClusters(t, 3, keyA)
	var mu sync.Mutex
	var seen []RelayRecord
	// A fourth member checks OnRecord.
	cfg := fastConfig(t, "m4", keyA, cs[0].Addr())
	cfg.OnRecord = func(r RelayRecord) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r)
	}
	cs = append(cs, startCluster(t, cfg))
	for _, c := range cs {
		waitFor(t, c.Name()+" sees 4 members", func() bool { return c.Stats().Members == 4 })
	}

	r := signedRecord(t, 1, "m1")
	if err := cs[0].Publish(r); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for _, c := range cs {
		waitFor(t, c.Name()+" holds the record", func() bool { return hasRecord(c, r) })
	}
	// Once, or again when a loaded machine made m4 declare m1 failed for
	// a moment (dropping m1's records) and learn the record anew.
	waitFor(t, "OnRecord is called on m4", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 && reflect.DeepEqual(seen[len(seen)-1], r)
	})
	mu.Lock()
	for _, got := range seen {
		if !reflect.DeepEqual(got, r) {
			t.Errorf("OnRecord on m4 got %+v, want only %+v", got, r)
		}
	}
	mu.Unlock()
	if st := cs[0].Stats(); st.Published != 1 || st.LocalRecords != 1 || st.Records != 1 {
		t.Errorf("m1 stats: got %+v, want 1 published, 1 local record", st)
	}
	if st := cs[2].Stats(); st.Learned != 1 || st.LocalRecords != 0 || st.Records != 1 {
		t.Errorf("m3 stats: got %+v, want 1 learned, no local record", st)
	}

	// Withdraw: gone everywhere.
	cs[0].Withdraw(r.Relay)
	for _, c := range cs {
		waitFor(t, c.Name()+" drops the withdrawn record", func() bool { return !hasRelay(c, r.Relay) })
	}
	// A withdraw from a member that is not the home does nothing.
	r2 := signedRecord(t, 2, "m1")
	if err := cs[0].Publish(r2); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	waitFor(t, "m2 holds the second record", func() bool { return hasRecord(cs[1], r2) })
	cs[1].Withdraw(r2.Relay)
	if !hasRecord(cs[1], r2) {
		t.Errorf("m2 dropped a record homed at m1 on its own Withdraw")
	}

	// The relay signs again (higher Seq): the tombstone does not hold it
	// back, and the newer record replaces nothing older.
	r3 := signedRecord(t, 1, "m1")
	if r3.Seq <= r.Seq {
		t.Fatalf("seq %d after %d", r3.Seq, r.Seq)
	}
	if err := cs[0].Publish(r3); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for _, c := range cs {
		waitFor(t, c.Name()+" holds the re-signed record", func() bool { return hasRecord(c, r3) })
	}
	// The old record, replayed, is refused as stale.
	if err := cs[0].Publish(r); !errors.Is(err, ErrRecordRefused) {
		t.Errorf("publishing an older record: got %v, want ErrRecordRefused", err)
	}
}

func TestClusterWrongKeyCannotJoin(t *testing.T) {
	good := startClusters(t, 2, keyA)
	r := signedRecord(t, 1, "m1")
	if err := good[0].Publish(r); err != nil {
		t.Fatal(err)
	}
	bad := startCluster(t, fastConfig(t, "intruder", keyB))
	if n, err := bad.Join([]string{good[0].Addr()}); err == nil {
		t.Fatalf("Join with the wrong key reached %d members, want an error", n)
	}
	// Give gossip time to leak, if it could: several probe rounds.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if st := bad.Stats(); st.Members != 1 || st.Records != 0 {
			t.Fatalf("intruder: got %d members, %d records, want 1, 0", st.Members, st.Records)
		}
		for _, c := range good {
			if _, ok := stateOf(c, "intruder"); ok {
				t.Fatalf("%s lists the intruder: %+v", c.Name(), c.Members())
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterDropsForgedRecords(t *testing.T) {
	cs := startClusters(t, 2, keyA)
	sender, receiver := cs[0], cs[1]
	host, port, err := splitHostPort(receiver.Addr())
	if err != nil {
		t.Fatal(err)
	}
	to := &memberlist.Node{Name: receiver.Name(), Addr: net.ParseIP(host), Port: uint16(port)}
	send := func(msg []byte) {
		t.Helper()
		if err := sender.ml.SendReliable(to, msg); err != nil {
			t.Fatalf("SendReliable: %v", err)
		}
	}
	recordMsg := func(r RelayRecord) []byte {
		t.Helper()
		b, err := appendRecordMsg(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Signed by another key than the relay's.
	key, _ := testKey(t, 9)
	_, victim := testKey(t, 2)
	forged := RelayRecord{Relay: victim, HTTPURL: "http://evil", Home: "m1", Seq: 1, Expires: time.Now().Add(time.Hour).Unix()}
	if err := signRecord(key, &forged); err != nil {
		t.Fatal(err)
	}
	send(recordMsg(forged))
	// A valid record with a field changed after signing.
	tampered := signedRecord(t, 3, "m1")
	tampered.HTTPURL = "http://evil"
	send(recordMsg(tampered))
	// Validly signed, but expired, or too long-lived, or homed nowhere.
	expired := signedRecord(t, 4, "m1")
	expired.Expires = time.Now().Add(-time.Minute).Unix()
	k4, _ := testKey(t, 4)
	if err := signRecord(k4, &expired); err != nil {
		t.Fatal(err)
	}
	send(recordMsg(expired))
	longLived := signedRecord(t, 5, "m1")
	longLived.Expires = time.Now().Add(48 * time.Hour).Unix()
	k5, _ := testKey(t, 5)
	if err := signRecord(k5, &longLived); err != nil {
		t.Fatal(err)
	}
	send(recordMsg(longLived))
	send(recordMsg(signedRecord(t, 6, "nobody")))
	// Garbage, and a type from the future.
	send([]byte{msgRecord, 0xff})
	send([]byte{99, 1, 2, 3})
	send(append([]byte{msgRecord}, make([]byte, receiver.cfg.MaxRecordSize+1)...))

	want := map[string]uint64{
		DropBadSignature: 2,
		DropExpired:      1,
		DropTTL:          1,
		DropHomeUnknown:  1,
		DropMalformed:    1,
		DropUnknownType:  1,
		DropTooLarge:     1,
	}
	waitFor(t, "m2 counts every forgery", func() bool {
		return reflect.DeepEqual(receiver.Stats().Dropped, want)
	})
	if d := receiver.Directory(); len(d) != 0 {
		t.Errorf("m2 directory: got %+v, want empty", d)
	}
	// The same path accepts a good record.
	good := signedRecord(t, 7, "m1")
	send(recordMsg(good))
	waitFor(t, "m2 takes a valid record", func() bool { return hasRecord(receiver, good) })
}

func TestClusterLateJoinerGetsDirectory(t *testing.T) {
	first := startCluster(t, fastConfig(t, "m1", keyA))
	var want []RelayRecord
	for seed := byte(1); seed <= 3; seed++ {
		r := signedRecord(t, seed, "m1")
		if err := first.Publish(r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	first.queue.Reset() // nothing left to gossip: only push-pull can carry them
	slices.SortFunc(want, func(a, b RelayRecord) int { return strings.Compare(a.Relay, b.Relay) })

	late := startCluster(t, fastConfig(t, "m2", keyA))
	if _, err := late.Join([]string{first.Addr()}); err != nil {
		t.Fatalf("Join: %v", err)
	}
	// Join's push-pull has merged the state before Join returns.
	if got := late.Directory(); !reflect.DeepEqual(got, want) {
		t.Errorf("late joiner's directory: got %+v, want %+v", got, want)
	}
}

func TestClusterFailedHomeDropsRecords(t *testing.T) {
	cs := startClusters(t, 3, keyA)
	r := signedRecord(t, 1, "m1")
	if err := cs[0].Publish(r); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs[1:] {
		waitFor(t, c.Name()+" holds the record", func() bool { return hasRecord(c, r) })
	}
	cs[0].kill()
	for _, c := range cs[1:] {
		waitFor(t, c.Name()+" declares m1 dead", func() bool {
			st, ok := stateOf(c, "m1")
			return ok && st == MemberDead
		})
		if hasRelay(c, r.Relay) {
			t.Errorf("%s still holds the record of dead m1", c.Name())
		}
		if st := c.Stats(); st.MemberFailures != 1 || st.HomeGone != 1 || st.Members != 2 {
			t.Errorf("%s stats: got %+v, want 1 failure, 1 record gone, 2 members", c.Name(), st)
		}
	}
}

func TestClusterCloseLeaves(t *testing.T) {
	var mu sync.Mutex
	var left []string
	cfg := fastConfig(t, "m1", keyA)
	cfg.OnLeave = func(node string) {
		mu.Lock()
		defer mu.Unlock()
		left = append(left, node)
	}
	first := startCluster(t, cfg)
	second := startCluster(t, fastConfig(t, "m2", keyA, first.Addr()))
	waitFor(t, "m1 sees m2", func() bool { return first.Stats().Members == 2 })
	r := signedRecord(t, 1, "m2")
	if err := second.Publish(r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "m1 holds m2's record", func() bool { return hasRecord(first, r) })

	second.Close()
	second.Close() // idempotent
	waitFor(t, "m1 sees m2 leave", func() bool {
		st, ok := stateOf(first, "m2")
		return ok && st == MemberLeft
	})
	if hasRelay(first, r.Relay) {
		t.Errorf("m1 still holds the record of m2, which left")
	}
	waitFor(t, "OnLeave is called", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(left, []string{"m2"})
	})
	if st := first.Stats(); st.MemberLeaves != 1 || st.MemberFailures != 0 {
		t.Errorf("m1 stats: got %+v, want 1 leave, no failure", st)
	}
	if err := second.Publish(signedRecord(t, 2, "m2")); !errors.Is(err, ErrClusterClosed) {
		t.Errorf("Publish after Close: got %v, want ErrClusterClosed", err)
	}
	if _, err := second.Join([]string{first.Addr()}); !errors.Is(err, ErrClusterClosed) {
		t.Errorf("Join after Close: got %v, want ErrClusterClosed", err)
	}
}

func TestClusterRejoinsWhenAlone(t *testing.T) {
	first := startCluster(t, fastConfig(t, "m1", keyA))
	addr := first.Addr()
	cfg := fastConfig(t, "m2", keyA, addr)
	cfg.RejoinInterval = 50 * time.Millisecond
	second := startCluster(t, cfg)
	waitFor(t, "m2 joins", func() bool { return second.Stats().Members == 2 })

	// m1 goes away and comes back on the same address: m2, alone, joins
	// it again by itself.
	first.Close()
	waitFor(t, "m2 is alone", func() bool { return second.Stats().Members == 1 })
	again := fastConfig(t, "m1", keyA)
	again.BindAddr = addr
	restarted := startCluster(t, again)
	waitFor(t, "m2 rejoins the restarted m1", func() bool {
		return second.Stats().Members == 2 && restarted.Stats().Members == 2
	})
}

func TestClusterPublishRefuses(t *testing.T) {
	c := startCluster(t, fastConfig(t, "m1", keyA))
	big := signedRecord(t, 1, "m1")
	big.Addrs = nil
	for range 20 {
		big.Addrs = append(big.Addrs, "/ip6/2001:db8::1/udp/4001/quic-v1/p2p/"+big.Relay)
	}
	k1, _ := testKey(t, 1)
	if err := signRecord(k1, &big); err != nil {
		t.Fatal(err)
	}
	expired := signedRecord(t, 1, "m1")
	expired.Expires = time.Now().Unix() - 1
	if err := signRecord(k1, &expired); err != nil {
		t.Fatal(err)
	}
	tampered := signedRecord(t, 1, "m1")
	tampered.Seq++
	tests := []struct {
		name    string
		r       RelayRecord
		wantErr error
	}{
		{"other home", signedRecord(t, 1, "m2"), ErrNotHome},
		{"bad signature", tampered, ErrBadSignature},
		{"too large", big, ErrRecordRefused},
		{"expired", expired, ErrRecordRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Publish(tt.r); !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
	if n := len(c.Directory()); n != 0 {
		t.Errorf("directory holds %d records, want 0", n)
	}
}

func TestClusterDirectoryLimitAndExpiry(t *testing.T) {
	cfg := fastConfig(t, "m1", keyA)
	cfg.MaxRecords = 2
	c := startCluster(t, cfg)
	for seed := byte(1); seed <= 2; seed++ {
		if err := c.Publish(signedRecord(t, seed, "m1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Publish(signedRecord(t, 3, "m1")); !errors.Is(err, ErrRecordRefused) {
		t.Errorf("third record with MaxRecords 2: got %v, want ErrRecordRefused", err)
	}
	// An update of a held relay still fits.
	if err := c.Publish(signedRecord(t, 1, "m1")); err != nil {
		t.Errorf("update of a held record: %v", err)
	}
	c.sweep(time.Now().Add(2 * time.Hour))
	if st := c.Stats(); st.Records != 0 || st.Expired != 2 {
		t.Errorf("after expiry: got %+v, want 0 records, 2 expired", st)
	}
}

func TestClusterMergeRemoteStateMalformed(t *testing.T) {
	c := startCluster(t, fastConfig(t, "m1", keyA))
	d := (*clusterDelegate)(c)
	valid := d.LocalState(false)
	tests := []struct {
		name   string
		in     []byte
		reason string
	}{
		{"version", []byte{9}, DropUnknownType},
		{"short header", []byte{stateVersion, 0}, DropMalformed},
		{"count beyond data", []byte{stateVersion, 0, 0, 0, 1}, DropMalformed},
		{"length beyond data", []byte{stateVersion, 0, 0, 0, 1, 0, 0, 1, 0}, DropMalformed},
		{"trailing", append(append([]byte{}, valid...), 1), DropMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.Stats().Dropped[tt.reason]
			d.MergeRemoteState(tt.in, false)
			if got := c.Stats().Dropped[tt.reason]; got != before+1 {
				t.Errorf("%s drops: got %d, want %d", tt.reason, got, before+1)
			}
		})
	}
}

func TestMemberlistLogLevels(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4\n", slog.LevelDebug, "memberlist: Stream connection from=1.2.3.4"},
		{"[INFO] memberlist: Marking m2 as failed\n", slog.LevelDebug, "memberlist: Marking m2 as failed"},
		{"[WARN] memberlist: Refuting a dead message\n", slog.LevelWarn, "memberlist: Refuting a dead message"},
		{"[ERR] memberlist: Failed to decrypt\n", slog.LevelWarn, "memberlist: Failed to decrypt"},
		{"no prefix", slog.LevelDebug, "memberlist: no prefix"},
	}
	for _, tt := range tests {
		var got []slog.Record
		h := &recordHandler{fn: func(r slog.Record) { got = append(got, r) }}
		w := &memberlistLog{log: slog.New(h)}
		w.Write([]byte(tt.line))
		if len(got) != 1 || got[0].Level != tt.wantLevel || got[0].Message != tt.wantMsg {
			t.Errorf("%q: got %+v, want one record at %v with %q", tt.line, got, tt.wantLevel, tt.wantMsg)
		}
	}
}

type recordHandler struct{ fn func(slog.Record) }

func (h *recordHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h *recordHandler) WithGroup(string) slog.Handler                 { return h }

// FuzzClusterMessage feeds gossip messages and push-pull states to a
// member: nothing may panic, and whatever enters the directory verifies.
func FuzzClusterMessage(f *testing.F) {
	r := signedRecord(f, 1, "m1")
	rec, _ := appendRecordMsg(nil, &r)
	f.Add(rec)
	f.Add(appendWithdrawMsg(nil, r.Relay, "m1", r.Seq))
	f.Add([]byte{msgWithdraw, 0, 1})
	f.Add([]byte{stateVersion, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3})
	f.Add([]byte{})
	c := &Cluster{
		cfg:       ClusterConfig{Name: "m2", Key: keyA}.withDefaults(),
		log:       slog.New(slog.DiscardHandler),
		callbacks: make(chan func(), 1),
		queue:     &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 2 }, RetransmitMult: 1},
		records:   map[string]RelayRecord{},
		tombs:     map[string]tombstone{},
		members:   map[string]Member{"m1": {Name: "m1"}, "m2": {Name: "m2"}},
		departed:  map[string]departure{},
		dropped:   map[string]uint64{},
	}
	d := (*clusterDelegate)(c)
	f.Fuzz(func(t *testing.T, data []byte) {
		d.NotifyMsg(data)
		d.MergeRemoteState(data, false)
		for _, r := range c.Directory() {
			if err := VerifyRecord(r); err != nil {
				t.Fatalf("directory holds %+v: %v", r, err)
			}
		}
		d.GetBroadcasts(0, 1400)
	})
}
