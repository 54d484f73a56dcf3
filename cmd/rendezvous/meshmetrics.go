package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/cmd/internal/meshmetrics"
	"github.com/meshup/meshup/rendezvous"
)

// meshCollector exports the mesh as the relays report it (NAT type, peer
// connections by kind, hole punches) and the rendezvous's own part in it
// (circuits relayed, tunnelled requests).
type meshCollector struct {
	srv      *rendezvous.Server
	relays   meshmetrics.Descs
	circuit  []statMetric
	dataPath []dataPathMetric
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
		srv:    srv,
		relays: meshmetrics.New(ns+"relay_", "relay"),
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
		dataPath: []dataPathMetric{
			{prometheus.NewDesc(ns+"tunnel_bytes_in_total", "Bytes the rendezvous's tunnel read from relays behind NAT (responses, headers included).", nil, nil), func(d rendezvous.DataPath) int64 { return d.Tunnel.BytesIn }},
			{prometheus.NewDesc(ns+"tunnel_bytes_out_total", "Bytes the rendezvous's tunnel wrote to relays behind NAT (requests and pushed parts, headers included).", nil, nil), func(d rendezvous.DataPath) int64 { return d.Tunnel.BytesOut }},
			{prometheus.NewDesc(ns+"data_path_bytes_total", "Bytes that crossed the rendezvous: tunnel in and out plus circuits (paths of last resort).", nil, nil), func(d rendezvous.DataPath) int64 { return d.Bytes }},
		},
	}
}

// dataPathMetric is a counter of rendezvous.DataPath.
type dataPathMetric struct {
	desc  *prometheus.Desc
	value func(rendezvous.DataPath) int64
}

// Describe implements prometheus.Collector.
func (c *meshCollector) Describe(ch chan<- *prometheus.Desc) {
	c.relays.Describe(ch)
	for _, m := range c.circuit {
		ch <- m.desc
	}
	for _, m := range c.dataPath {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *meshCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for _, m := range c.circuit {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(st))
	}
	dp := c.srv.DataPath()
	for _, m := range c.dataPath {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(dp)))
	}
	for id, ms := range c.srv.MeshViews() {
		c.relays.Collect(ch, ms, id)
	}
}
