package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/relay"
)

// liveCollector exports the relay's live channel counters (relay.LiveStats,
// also served as JSON at GET /v1/live/stats) to Prometheus.
type liveCollector struct {
	srv                       *relay.Server
	channels, subscribers     *prometheus.Desc
	bytesIn, bytesOut         *prometheus.Desc
	forwarded, forwardedBytes *prometheus.Desc
	cutoffs                   *prometheus.Desc
}

func newLiveCollector(srv *relay.Server) *liveCollector {
	const ns = "meshup_relay_live_"
	return &liveCollector{
		srv:            srv,
		channels:       prometheus.NewDesc(ns+"channels", "Live channels carried now (sources and downstream copies).", nil, nil),
		subscribers:    prometheus.NewDesc(ns+"subscribers", "Live channel subscribers now: HTTP readers, EvSocket members, downstream relays.", nil, nil),
		bytesIn:        prometheus.NewDesc(ns+"bytes_in_total", "Bytes appended to live channels (data, events, sealed records).", nil, nil),
		bytesOut:       prometheus.NewDesc(ns+"bytes_out_total", "Live channel bytes written to subscribers, downstream relays included.", nil, nil),
		forwarded:      prometheus.NewDesc(ns+"forwarded_bytes_total", "Live channel bytes sent to downstream relays, all of them.", nil, nil),
		forwardedBytes: prometheus.NewDesc(ns+"forwarded_peer_bytes_total", "Live channel bytes sent to each downstream relay: one copy per relay.", []string{"peer"}, nil),
		cutoffs:        prometheus.NewDesc(ns+"cutoffs_total", "Live channel subscribers cut off, by reason.", []string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.channels, c.subscribers, c.bytesIn, c.bytesOut, c.forwarded, c.forwardedBytes, c.cutoffs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.LiveStats()
	ch <- prometheus.MustNewConstMetric(c.channels, prometheus.GaugeValue, float64(st.Channels))
	ch <- prometheus.MustNewConstMetric(c.subscribers, prometheus.GaugeValue, float64(st.Subscribers))
	ch <- prometheus.MustNewConstMetric(c.bytesIn, prometheus.CounterValue, float64(st.BytesIn))
	ch <- prometheus.MustNewConstMetric(c.bytesOut, prometheus.CounterValue, float64(st.BytesOut))
	var fwd int64
	for peer, n := range st.Forwarded {
		fwd += n
		ch <- prometheus.MustNewConstMetric(c.forwardedBytes, prometheus.CounterValue, float64(n), peer)
	}
	ch <- prometheus.MustNewConstMetric(c.forwarded, prometheus.CounterValue, float64(fwd))
	for reason, n := range st.Cutoffs {
		ch <- prometheus.MustNewConstMetric(c.cutoffs, prometheus.CounterValue, float64(n), reason)
	}
}
