package rendezvous_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// statusWithCluster is GET /v1/status as a clustered rendezvous serves it.
type statusWithCluster struct {
	Relays  []statusRelay `json:"relays"`
	Cluster *struct {
		Name    string            `json:"name"`
		Members []statusMember    `json:"members"`
		Records int               `json:"records"`
		Dropped map[string]uint64 `json:"dropped"`
	} `json:"cluster"`
}

type statusRelay struct {
	ID    string `json:"id"`
	Addrs struct {
		Advertised []string `json:"advertised"`
	} `json:"addrs"`
	HTTPURL string `json:"http_url"`
	Local   bool   `json:"local"`
	Home    string `json:"home"`
	Expires string `json:"expires"`
}

type statusMember struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	State string `json:"state"`
}

func getClusterStatus(t *testing.T, rv *rendezvoustest.Server) statusWithCluster {
	t.Helper()
	var st statusWithCluster
	rendezvoustest.GetJSONAuth(t, rv.URL+"/v1/status", clusterStatusToken, &st)
	return st
}

// clusterStatusToken shows the full status of the rendezvous of
// clusterPair, addresses of gossiped relays included.
const clusterStatusToken = "operator-eyes-only"

// clusterPair starts two rendezvous sharing a cluster key, the second
// joined to the first, and waits until each sees both.
func clusterPair(t *testing.T) (rv1, rv2 *rendezvoustest.Server, c1, c2 *mesh.Cluster) {
	t.Helper()
	key := bytes.Repeat([]byte{0x42}, 32)
	n1, n2 := rendezvoustest.NewNode(t), rendezvoustest.NewNode(t)
	c1 = rendezvoustest.StartCluster(t, n1, key)
	c2 = rendezvoustest.StartCluster(t, n2, key, c1.Addr())
	rv1 = rendezvoustest.Start(t, rendezvous.Config{Node: n1, Cluster: c1, StatusToken: clusterStatusToken})
	rv2 = rendezvoustest.Start(t, rendezvous.Config{Node: n2, Cluster: c2, StatusToken: clusterStatusToken})
	eventually(t, "both members see each other", func() bool {
		return c1.Stats().Members == 2 && c2.Stats().Members == 2
	})
	return rv1, rv2, c1, c2
}

// listed reports whether rv's status lists relay id, and how: local, home.
func listed(t *testing.T, rv *rendezvoustest.Server, id string) (local bool, home string, ok bool) {
	t.Helper()
	for _, r := range getClusterStatus(t, rv).Relays {
		if r.ID == id {
			return r.Local, r.Home, true
		}
	}
	return false, "", false
}

func TestClusterSharesRelays(t *testing.T) {
	rv1, rv2, c1, c2 := clusterPair(t)
	home := rv1.Node.ID()

	// A relay registered with rendezvous 1 appears at rendezvous 2, homed
	// at rendezvous 1, with a record that its own key signed.
	a := relaytest.Start(t, rv1.URL, relay.Config{})
	eventually(t, "rendezvous 2 lists relay A", func() bool {
		_, _, ok := listed(t, rv2, a.ID())
		return ok
	})
	st := getClusterStatus(t, rv2)
	i := slices.IndexFunc(st.Relays, func(r statusRelay) bool { return r.ID == a.ID() })
	got := st.Relays[i]
	if got.Local || got.Home != home || got.HTTPURL != a.URL || len(got.Addrs.Advertised) == 0 || got.Expires == "" {
		t.Errorf("relay A at rendezvous 2: got %+v, want local false, home %s, http_url %s, addrs, expires", got, home, a.URL)
	}
	if local, h, _ := listed(t, rv1, a.ID()); !local || h != home {
		t.Errorf("relay A at rendezvous 1: got local %v, home %q, want true, %q", local, h, home)
	}
	dir := c2.Directory()
	if len(dir) != 1 || dir[0].Relay != a.ID() || dir[0].Home != home {
		t.Fatalf("rendezvous 2's directory: got %+v, want relay A homed at %s", dir, home)
	}
	if err := mesh.VerifyRecord(dir[0]); err != nil {
		t.Errorf("relay A's record: %v", err)
	}
	if st.Cluster == nil || st.Cluster.Name != rv2.Node.ID() || st.Cluster.Records != 1 || len(st.Cluster.Members) != 2 || len(st.Cluster.Dropped) != 0 {
		t.Errorf("cluster status of rendezvous 2: got %+v, want itself, 1 record, 2 members, no drops", st.Cluster)
	}
	for _, m := range st.Cluster.Members {
		if m.State != "alive" || m.Addr == "" {
			t.Errorf("member %+v: want alive with an address", m)
		}
	}

	// Relay A goes away: rendezvous 1 withdraws its record.
	a.Close()
	eventually(t, "rendezvous 2 drops relay A", func() bool {
		_, _, ok := listed(t, rv2, a.ID())
		return !ok
	})

	// Relay B is listed until rendezvous 1 closes, the way the binary
	// does: the server, then the cluster.
	b := relaytest.Start(t, rv1.URL, relay.Config{})
	eventually(t, "rendezvous 2 lists relay B", func() bool {
		_, _, ok := listed(t, rv2, b.ID())
		return ok
	})
	rv1.Close()
	c1.Close()
	eventually(t, "rendezvous 2 drops relay B and sees rendezvous 1 gone", func() bool {
		_, _, ok := listed(t, rv2, b.ID())
		st := getClusterStatus(t, rv2)
		return !ok && st.Cluster.Records == 0 && slices.ContainsFunc(st.Cluster.Members, func(m statusMember) bool {
			return m.Name == home && m.State == "left"
		})
	})
}

// A record that the registered relay did not sign is refused and counted;
// the relay stays registered, only not gossiped.
func TestClusterRefusesForeignRecord(t *testing.T) {
	rv1, _, c1, _ := clusterPair(t)
	node, other := rendezvoustest.NewNode(t), rendezvoustest.NewNode(t)
	rec := mesh.RelayRecord{HTTPURL: "http://127.0.0.1:1", Home: rv1.Node.ID()}
	if err := other.SignRecord(&rec); err != nil {
		t.Fatal(err)
	}
	enc, err := mesh.EncodeRecord(&rec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rendezvoustest.Dial(t, rv1, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://127.0.0.1:1", Addrs: node.Addrs(), Record: enc}); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Recv(wait); err != nil {
		t.Fatalf("read registered: %v", err)
	} else if _, ok := m.(*proto.Registered); !ok {
		t.Fatalf("got %T, want *proto.Registered", m)
	}
	eventually(t, "the record is refused", func() bool { return rv1.Server.Stats().Rejected[rendezvous.RejectRecord] == 1 })
	if d := c1.Directory(); len(d) != 0 {
		t.Errorf("directory: got %+v, want empty", d)
	}
	if local, _, ok := listed(t, rv1, node.ID()); !ok || !local {
		t.Errorf("relay not listed as local at its rendezvous")
	}
}

func TestConfigClusterNameMustBePeerID(t *testing.T) {
	node := rendezvoustest.NewNode(t)
	cfg := rendezvoustest.ClusterConfig(t, node, bytes.Repeat([]byte{1}, 16))
	cfg.Name = "not-the-peer-id"
	c, err := mesh.NewCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = rendezvous.New(rendezvous.Config{PublicURL: "http://127.0.0.1:1", Node: node, Cluster: c})
	if err == nil || !strings.Contains(err.Error(), node.ID()) {
		t.Errorf("got %v, want an error naming the peer id", err)
	}
}
