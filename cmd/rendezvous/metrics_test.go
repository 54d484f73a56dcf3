package main

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestParseFlagsSTUN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		args          []string
		wantSTUN, alt string
	}{
		{"defaults", nil, ":3478", ""},
		{"off", []string{"--stun", "off"}, "off", ""},
		{"both", []string{"--stun", "0.0.0.0:5000", "--stun-alt", "0.0.0.0:6000"}, "0.0.0.0:5000", "0.0.0.0:6000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if o.cfg.STUNAddr != tt.wantSTUN || o.cfg.STUNAltAddr != tt.alt {
				t.Errorf("got %q %q, want %q %q", o.cfg.STUNAddr, o.cfg.STUNAltAddr, tt.wantSTUN, tt.alt)
			}
		})
	}
}

func TestSTUNMetrics(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{})
	server, err := net.ResolveUDPAddr("udp4", rv.Server.Info().STUN[0])
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp4", nil, server)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Junk first: the answer to the request after it proves both were read.
	if _, err := c.Write([]byte("junk")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1500)); err != nil {
		t.Fatalf("read stun answer: %v", err)
	}

	// The server counts an answer just after sending it.
	for deadline := time.Now().Add(5 * time.Second); rv.Server.Stats().STUNAnswered == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the answer was never counted")
		}
		time.Sleep(5 * time.Millisecond)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatsCollector(rv.Server))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"meshup_rendezvous_stun_requests_total":                 2,
		"meshup_rendezvous_stun_answered_total":                 1,
		"meshup_rendezvous_stun_dropped_total{reason=not_stun}": 1,
	} {
		if got[name] != want {
			t.Errorf("%s: got %v, want %v", name, got[name], want)
		}
	}
}
