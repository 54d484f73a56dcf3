package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/rendezvous"
)

// meshCollector exports the mesh as the relays report it (NAT type, peer
// connections by kind, hole punches) and the rendezvous's own part in it
// (circuits relayed, tunnelled requests).
type meshCollector struct {
	srv       *rendezvous.Server
	nat       *prometheus.Desc
	peers     *prometheus.Desc
	holePunch *prometheus.Desc
	circuit   []statMetric
}

func newMeshCollector(srv *rendezvous.Server) *meshCollector {
	const ns = "meshup_rendezvous_"
	counter := func(name, help string, f func(rendezvous.Stats) int64) statMetric {
		return statMetric{
			desc:  prometheus.NewDesc(ns+name, help, nil, nil),
			typ:   prometheus.CounterValue,
			value: func(s rendezvous.Stats) float64 { return float64(f(s)) },
		}
	}
	gauge := func(name, help string, f func(rendezvous.Stats) int64) statMetric {
		m := counter(name, help, f)
		m.typ = prometheus.GaugeValue
		return m
	}
	return &meshCollector{
		srv:       srv,
		nat:       prometheus.NewDesc(ns+"relay_nat", "1 for each relay and the NAT type it reported.", []string{"relay", "nat"}, nil),
		peers:     prometheus.NewDesc(ns+"relay_peers", "Mesh peers of each relay, by connection kind.", []string{"relay", "kind"}, nil),
		holePunch: prometheus.NewDesc(ns+"relay_holepunch_total", "Hole punches reported by each relay, by result.", []string{"relay", "result"}, nil),
		circuit: []statMetric{
			counter("circuit_bytes_total", "Bytes relayed over circuits between relays.", func(s rendezvous.Stats) int64 { return s.Circuit.Bytes }),
			gauge("circuits", "Relayed connections open.", func(s rendezvous.Stats) int64 { return s.Circuit.Circuits }),
			counter("circuits_opened_total", "Relayed connections opened.", func(s rendezvous.Stats) int64 { return s.Circuit.CircuitsTotal }),
			counter("circuits_denied_total", "Relayed connections refused.", func(s rendezvous.Stats) int64 { return s.Circuit.CircuitsDenied }),
			gauge("reservations", "Circuit reservations held by relays behind NAT.", func(s rendezvous.Stats) int64 { return s.Circuit.Reservations }),
			counter("reservations_denied_total", "Circuit reservations refused.", func(s rendezvous.Stats) int64 { return s.Circuit.ReservationsDenied }),
			counter("tunnelled_total", "HTTP requests tunnelled to relays behind NAT.", func(s rendezvous.Stats) int64 { return int64(s.Tunnelled) }),
			counter("tunnel_failures_total", "Tunnelled requests that could not reach their relay.", func(s rendezvous.Stats) int64 { return int64(s.TunnelFailures) }),
			counter("directories_total", "Relay directories sent.", func(s rendezvous.Stats) int64 { return int64(s.Directories) }),
			counter("forwarded_orders_total", "Orders whose entry relay forwards to another exit relay.", func(s rendezvous.Stats) int64 { return int64(s.Forwarded) }),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *meshCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.nat
	ch <- c.peers
	ch <- c.holePunch
	for _, m := range c.circuit {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *meshCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for _, m := range c.circuit {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(st))
	}
	for id, ms := range c.srv.MeshViews() {
		ch <- prometheus.MustNewConstMetric(c.nat, prometheus.GaugeValue, 1, id, ms.NAT)
		for k, n := range ms.PeerKinds() {
			ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(n), id, k)
		}
		hp := ms.HolePunch
		ch <- prometheus.MustNewConstMetric(c.holePunch, prometheus.CounterValue, float64(hp.Attempts), id, "attempt")
		ch <- prometheus.MustNewConstMetric(c.holePunch, prometheus.CounterValue, float64(hp.Successes), id, "success")
		ch <- prometheus.MustNewConstMetric(c.holePunch, prometheus.CounterValue, float64(hp.Failures), id, "failure")
	}
}
