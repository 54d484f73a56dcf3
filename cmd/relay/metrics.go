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
	// The libp2p node's memory, outside the budget (--mesh-memory).
	meshMemory, meshMemoryLimit *prometheus.Desc
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
		srv:             srv,
		mesh:            meshmetrics.New(ns),
		refused:         prometheus.NewDesc(ns+"refused_total", "Requests, connections, parts and frames refused, by reason.", []string{"reason"}, nil),
		entryParts:      prometheus.NewDesc(ns+"entry_parts_total", "Parts this relay needed and delivered, by the entry relay that carried them.", []string{"entry"}, nil),
		entryBytes:      prometheus.NewDesc(ns+"entry_bytes_total", "Bytes of the parts this relay needed and delivered, by the entry relay that carried them.", []string{"entry"}, nil),
		meshMemory:      prometheus.NewDesc(ns+"mesh_memory_bytes", "Bytes the libp2p node holds reserved for connections and unread stream windows, outside the budget.", nil, nil),
		meshMemoryLimit: prometheus.NewDesc(ns+"mesh_memory_limit_bytes", "The most the libp2p node may hold (--mesh-memory, or go-libp2p's default).", nil, nil),
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
			c("busy_waits_total", "Parts asked again mid-response because the busy publisher had not begun them within the need timeout.", func(s relay.Stats) int64 { return s.BusyWaits }),
			c("entry_failovers_total", "Parts asked again through another entry relay after theirs died or stalled.", func(s relay.Stats) int64 { return s.EntryFailovers }),
			{prometheus.NewDesc(ns+"read_ahead", "Parts open ahead of the ones being delivered, over all consumer requests.", nil, nil), func(s relay.Stats) int64 { return s.ReadAhead }, true},
			c("dials_refused_total", "Dials to non-public addresses refused by the connection gater.", func(s relay.Stats) int64 { return s.DialsRefused }),
			// What a public relay carries for relays behind NAT (issue 10).
			c("tunnel_requests_total", "Requests tunnelled into relays behind NAT.", func(s relay.Stats) int64 { return s.Assist.Tunnel.Requests }),
			c("tunnel_bytes_in_total", "Bytes the tunnel read from relays behind NAT (headers included).", func(s relay.Stats) int64 { return s.Assist.Tunnel.BytesIn }),
			c("tunnel_bytes_out_total", "Bytes the tunnel wrote to relays behind NAT (headers included).", func(s relay.Stats) int64 { return s.Assist.Tunnel.BytesOut }),
			c("circuit_bytes_total", "Bytes relayed over circuits between relays behind NAT.", func(s relay.Stats) int64 { return s.Assist.CircuitBytes }),
			// Volunteer controls (relay/ratelimit.go).
			c("rate_sent_bytes_total", "Bytes sent under the rate limits: consumer responses and parts forwarded to other relays.", func(s relay.Stats) int64 { return s.Rate.Sent }),
			c("rate_waits_total", "Writes that waited for a rate limiter (--max-rate, --max-rate-per-consumer).", func(s relay.Stats) int64 { return s.Rate.Waits }),
			c("rate_delay_ms_total", "Delay the rate limiters imposed, summed over writes, in milliseconds.", func(s relay.Stats) int64 { return s.Rate.DelayMS }),
			{prometheus.NewDesc(ns+"monthly_sent_bytes", "Bytes sent this calendar month (UTC), counted in memory since start.", nil, nil), func(s relay.Stats) int64 { return s.Rate.MonthlyUsed }, true},
			{prometheus.NewDesc(ns+"monthly_cap_bytes", "The monthly volume cap (--monthly-cap); 0: none.", nil, nil), func(s relay.Stats) int64 { return s.Rate.MonthlyCap }, true},
			{prometheus.NewDesc(ns+"monthly_cap_reached", "1 when the monthly volume cap is reached and the relay takes no new work.", nil, nil), func(s relay.Stats) int64 {
				if s.Rate.CapReached {
					return 1
				}
				return 0
			}, true},
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
			// The tus and socket.io adapters (relay/adapters.go).
			c("tus_created_total", "tus uploads created.", func(s relay.Stats) int64 { return s.Adapters.TusCreated }),
			c("tus_done_total", "tus uploads complete.", func(s relay.Stats) int64 { return s.Adapters.TusDone }),
			c("tus_terminated_total", "tus uploads terminated (DELETE).", func(s relay.Stats) int64 { return s.Adapters.TusTerminated }),
			c("tus_checksum_failed_total", "tus PATCHes refused for a checksum mismatch (460).", func(s relay.Stats) int64 { return s.Adapters.TusChecksumFailed }),
			c("tus_bytes_total", "Bytes appended by tus PATCHes.", func(s relay.Stats) int64 { return s.Adapters.TusBytes }),
			{prometheus.NewDesc(ns+"socketio_conns", "socket.io connections open now.", nil, nil), func(s relay.Stats) int64 { return s.Adapters.SocketIOConns }, true},
			c("socketio_sessions_total", "socket.io upload sessions begun.", func(s relay.Stats) int64 { return s.Adapters.SocketIOSessions }),
			c("socketio_done_total", "socket.io uploads complete.", func(s relay.Stats) int64 { return s.Adapters.SocketIODone }),
			c("socketio_refused_total", "socket.io sessions and chunks refused.", func(s relay.Stats) int64 { return s.Adapters.SocketIORefused }),
			c("socketio_bytes_total", "Bytes appended by socket.io chunks.", func(s relay.Stats) int64 { return s.Adapters.SocketIOBytes }),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	c.mesh.Describe(ch)
	ch <- c.refused
	ch <- c.entryParts
	ch <- c.entryBytes
	ch <- c.meshMemory
	ch <- c.meshMemoryLimit
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
	ch <- prometheus.MustNewConstMetric(c.meshMemory, prometheus.GaugeValue, float64(st.MeshMemory))
	ch <- prometheus.MustNewConstMetric(c.meshMemoryLimit, prometheus.GaugeValue, float64(st.MeshMemoryLimit))
	c.mesh.Collect(ch, st.MeshStatus)
}
