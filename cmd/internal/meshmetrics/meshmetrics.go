// Package meshmetrics exports a relay's view of the mesh (proto.MeshStatus:
// NAT type, peers by connection kind, hole punches) as Prometheus metrics,
// for the relay's own /metrics and, per relay, for the rendezvous's.
package meshmetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/proto"
)

// Descs describes the mesh metrics under one name prefix.
type Descs struct {
	nat, peers, holePunch *prometheus.Desc
}

// New returns the descriptions of prefix+"nat", prefix+"peers" and
// prefix+"holepunch_total". labels come before each metric's own label
// (nat, kind, result); Collect takes their values in the same order.
func New(prefix string, labels ...string) Descs {
	with := func(l string) []string { return append(append([]string{}, labels...), l) }
	return Descs{
		nat:       prometheus.NewDesc(prefix+"nat", "1 for the NAT type the relay detected.", with("nat"), nil),
		peers:     prometheus.NewDesc(prefix+"peers", "Mesh peers of the relay, by connection kind.", with("kind"), nil),
		holePunch: prometheus.NewDesc(prefix+"holepunch_total", "Hole punches of the relay, by result.", with("result"), nil),
	}
}

// Describe sends the descriptions to ch.
func (d Descs) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.nat
	ch <- d.peers
	ch <- d.holePunch
}

// Collect sends the metrics of ms to ch, labelled with labelValues.
func (d Descs) Collect(ch chan<- prometheus.Metric, ms proto.MeshStatus, labelValues ...string) {
	with := func(v string) []string { return append(append([]string{}, labelValues...), v) }
	// The NAT type is what a relay reported: a value this version does not
	// know becomes "other", so that labels stay bounded.
	nat := ms.NAT
	switch nat {
	case proto.NATUnknown, proto.NATPublic, proto.NATCone, proto.NATSymmetric:
	default:
		nat = "other"
	}
	ch <- prometheus.MustNewConstMetric(d.nat, prometheus.GaugeValue, 1, with(nat)...)
	for k, n := range ms.PeerKinds() {
		ch <- prometheus.MustNewConstMetric(d.peers, prometheus.GaugeValue, float64(n), with(k)...)
	}
	hp := ms.HolePunch
	ch <- prometheus.MustNewConstMetric(d.holePunch, prometheus.CounterValue, float64(hp.Attempts), with("attempt")...)
	ch <- prometheus.MustNewConstMetric(d.holePunch, prometheus.CounterValue, float64(hp.Successes), with("success")...)
	ch <- prometheus.MustNewConstMetric(d.holePunch, prometheus.CounterValue, float64(hp.Failures), with("failure")...)
}
