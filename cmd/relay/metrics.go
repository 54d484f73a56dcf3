package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/cmd/internal/meshmetrics"
	"github.com/meshup/meshup/relay"
)

// statusCollector exports relay.Server.Status to Prometheus, reading a
// fresh snapshot on every scrape.
type statusCollector struct {
	srv      *relay.Server
	mesh     meshmetrics.Descs
	counters []counter
	refused  *prometheus.Desc
	// Parts and bytes delivered by the entry relay they came through.
	entryParts, entryBytes *prometheus.Desc
}

type counter struct {
	desc  *prometheus.Desc
	value func(relay.Stats) int64
	gauge bool // a current value, not a count
}

func newStatusCollector(srv *relay.Server) *statusCollector {
	const ns = "meshup_relay_"
	c := func(name, help string, f func(relay.Stats) int64) counter {
		return counter{desc: prometheus.NewDesc(ns+name, help, nil, nil), value: f}
	}
	return &statusCollector{
		srv:        srv,
		mesh:       meshmetrics.New(ns),
		refused:    prometheus.NewDesc(ns+"refused_total", "Requests, connections, parts and frames refused, by reason.", []string{"reason"}, nil),
		entryParts: prometheus.NewDesc(ns+"entry_parts_total", "Parts this relay needed and delivered, by the entry relay that carried them.", []string{"entry"}, nil),
		entryBytes: prometheus.NewDesc(ns+"entry_bytes_total", "Bytes of the parts this relay needed and delivered, by the entry relay that carried them.", []string{"entry"}, nil),
		counters: []counter{
			c("bytes_in_total", "Part bytes received from publishers and entry relays.", func(s relay.Stats) int64 { return s.BytesIn }),
			c("bytes_out_total", "Part bytes written to consumers and exit relays.", func(s relay.Stats) int64 { return s.BytesOut }),
			c("bytes_served_total", "Item bytes written to HTTP consumers (this relay as exit).", func(s relay.Stats) int64 { return s.BytesServed }),
			c("requests_total", "Consumer requests served.", func(s relay.Stats) int64 { return s.Requests }),
			c("range_requests_total", "Consumer requests answered 206, with a Range.", func(s relay.Stats) int64 { return s.Ranges }),
			c("parts_done_total", "Parts delivered in full.", func(s relay.Stats) int64 { return s.PartsDone }),
			c("parts_failed_total", "Parts ended early.", func(s relay.Stats) int64 { return s.PartsFailed }),
			c("forwards_out_total", "Parts forwarded to exit relays.", func(s relay.Stats) int64 { return s.ForwardsOut }),
			c("forwards_in_total", "Parts received from entry relays.", func(s relay.Stats) int64 { return s.ForwardsIn }),
			c("forwarded_bytes_total", "Bytes of parts forwarded in full to exit relays.", func(s relay.Stats) int64 { return s.ForwardedBytes }),
			c("part_retries_total", "Parts asked again mid-response after a transient failure.", func(s relay.Stats) int64 { return s.PartRetries }),
			c("entry_failovers_total", "Parts asked again through another entry relay after theirs died or stalled.", func(s relay.Stats) int64 { return s.EntryFailovers }),
			{prometheus.NewDesc(ns+"read_ahead", "Parts open ahead of the ones being delivered, over all consumer requests.", nil, nil), func(s relay.Stats) int64 { return s.ReadAhead }, true},
			c("dials_refused_total", "Dials to non-public addresses refused by the connection gater.", func(s relay.Stats) int64 { return s.DialsRefused }),
			// What a public relay carries for relays behind NAT (issue 10).
			c("tunnel_requests_total", "Requests tunnelled into relays behind NAT.", func(s relay.Stats) int64 { return s.Assist.Tunnel.Requests }),
			c("tunnel_bytes_in_total", "Bytes the tunnel read from relays behind NAT (headers included).", func(s relay.Stats) int64 { return s.Assist.Tunnel.BytesIn }),
			c("tunnel_bytes_out_total", "Bytes the tunnel wrote to relays behind NAT (headers included).", func(s relay.Stats) int64 { return s.Assist.Tunnel.BytesOut }),
			c("circuit_bytes_total", "Bytes relayed over circuits between relays behind NAT.", func(s relay.Stats) int64 { return s.Assist.CircuitBytes }),
			// Legacy uploads and the items this relay holds (issue 11).
			c("uploads_total", "Uploads created (STOR, socket.io, PUT, tus).", func(s relay.Stats) int64 { return s.Uploads.Created }),
			c("uploads_done_total", "Uploads complete.", func(s relay.Stats) int64 { return s.Uploads.Done }),
			c("uploads_failed_total", "Uploads aborted (interrupted, over a limit).", func(s relay.Stats) int64 { return s.Uploads.Failed }),
			c("upload_bytes_total", "Bytes received by uploads.", func(s relay.Stats) int64 { return s.Uploads.Bytes }),
			c("upload_waits_total", "Times an uploader waited for memory or for readers.", func(s relay.Stats) int64 { return s.Uploads.Waits }),
			c("held_evicted_total", "Complete held items evicted for memory.", func(s relay.Stats) int64 { return s.Uploads.Evicted }),
			c("held_expired_total", "Held items dropped at their expiry.", func(s relay.Stats) int64 { return s.Uploads.Expired }),
			{prometheus.NewDesc(ns+"held_items", "Items held now.", nil, nil), func(s relay.Stats) int64 { return int64(s.Uploads.Held) }, true},
			{prometheus.NewDesc(ns+"held_bytes", "Bytes of memory held items pin now.", nil, nil), func(s relay.Stats) int64 { return s.Uploads.HeldMem }, true},
		},
	}
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	c.mesh.Describe(ch)
	ch <- c.refused
	ch <- c.entryParts
	ch <- c.entryBytes
	for _, m := range c.counters {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Status()
	for _, m := range c.counters {
		kind := prometheus.CounterValue
		if m.gauge {
			kind = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(m.desc, kind, float64(m.value(st.Stats)))
	}
	for entry, e := range st.Stats.Entries {
		ch <- prometheus.MustNewConstMetric(c.entryParts, prometheus.CounterValue, float64(e.Parts), entry)
		ch <- prometheus.MustNewConstMetric(c.entryBytes, prometheus.CounterValue, float64(e.Bytes), entry)
	}
	for reason, n := range st.Stats.Refusals {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n), reason)
	}
	c.mesh.Collect(ch, st.MeshStatus)
}
