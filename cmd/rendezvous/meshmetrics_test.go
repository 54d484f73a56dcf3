package main

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestMeshMetrics(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{})
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	err := relay.Send(&proto.Heartbeat{Mesh: &proto.MeshStatus{
		NAT: proto.NATCone,
		Peers: []proto.MeshPeer{
			{ID: "12D3KooWa", Kind: proto.PeerHolePunched, TimeToDirectMS: 900},
			{ID: "12D3KooWb", Kind: proto.PeerRelayed},
		},
		HolePunch: proto.HolePunchStats{Attempts: 3, Successes: 1, Failures: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMeshCollector(rv.Server))
	want := map[string]float64{
		"meshup_rendezvous_relay_nat{nat=cone,relay=" + relay.ID + "}":                   1,
		"meshup_rendezvous_relay_peers{kind=hole-punched,relay=" + relay.ID + "}":        1,
		"meshup_rendezvous_relay_peers{kind=relayed,relay=" + relay.ID + "}":             1,
		"meshup_rendezvous_relay_peers{kind=direct,relay=" + relay.ID + "}":              0,
		"meshup_rendezvous_relay_holepunch_total{relay=" + relay.ID + ",result=failure}": 2,
	}
	var got map[string]float64
	deadline := time.Now().Add(rendezvoustest.Timeout)
	for {
		got = gather(t, reg)
		ok := true
		for name, v := range want {
			if g, present := got[name]; !present || g != v {
				ok = false
			}
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s: got %v, want %v", name, got[name], v)
		}
	}
}

// gather returns every metric of reg by name and sorted labels.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			if len(m.GetLabel()) > 0 {
				name += "{"
				for i, l := range m.GetLabel() {
					if i > 0 {
						name += ","
					}
					name += l.GetName() + "=" + l.GetValue()
				}
				name += "}"
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[name] = v
		}
	}
	return out
}
