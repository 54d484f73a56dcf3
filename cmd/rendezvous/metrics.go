package main

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/rendezvous"
)

// statsCollector exports rendezvous.Server.Stats to Prometheus, reading a
// fresh snapshot on every scrape.
type statsCollector struct {
	srv        *rendezvous.Server
	metrics    []statMetric
	needFailed *prometheus.Desc
	rejected   *prometheus.Desc
	stunDrop   *prometheus.Desc
}

type statMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(rendezvous.Stats) float64
}

func newStatsCollector(srv *rendezvous.Server) *statsCollector {
	const ns = "meshup_rendezvous_"
	counter := func(name, help string, f func(rendezvous.Stats) uint64) statMetric {
		return statMetric{
			desc:  prometheus.NewDesc(ns+name, help, nil, nil),
			typ:   prometheus.CounterValue,
			value: func(s rendezvous.Stats) float64 { return float64(f(s)) },
		}
	}
	gauge := func(name, help string, f func(rendezvous.Stats) int) statMetric {
		return statMetric{
			desc:  prometheus.NewDesc(ns+name, help, nil, nil),
			typ:   prometheus.GaugeValue,
			value: func(s rendezvous.Stats) float64 { return float64(f(s)) },
		}
	}
	return &statsCollector{
		srv: srv,
		metrics: []statMetric{
			counter("relays_registered_total", "Relay registrations accepted.", func(s rendezvous.Stats) uint64 { return s.RelaysRegistered }),
			counter("relays_dead_total", "Relays dropped.", func(s rendezvous.Stats) uint64 { return s.RelaysDead }),
			gauge("relays", "Relays live.", func(s rendezvous.Stats) int { return s.Relays }),
			counter("sessions_opened_total", "Control sessions accepted.", func(s rendezvous.Stats) uint64 { return s.SessionsOpened }),
			gauge("sessions", "Control sessions open.", func(s rendezvous.Stats) int { return s.Sessions }),
			counter("publishes_total", "Items published.", func(s rendezvous.Stats) uint64 { return s.Publishes }),
			counter("reclaims_total", "Items taken back online by their owner.", func(s rendezvous.Stats) uint64 { return s.Reclaims }),
			counter("unpublishes_total", "Items withdrawn.", func(s rendezvous.Stats) uint64 { return s.Unpublishes }),
			counter("items_purged_total", "Offline items dropped after the item TTL.", func(s rendezvous.Stats) uint64 { return s.ItemsPurged }),
			counter("held_created_total", "Uploads created through relays (legacy protocols, issue 11).", func(s rendezvous.Stats) uint64 { return s.Held.Created }),
			counter("held_refused_total", "Uploads refused (auth webhook, limits, malformed).", func(s rendezvous.Stats) uint64 { return s.Held.Refused }),
			counter("held_reannounced_total", "Held items re-announced by their relay.", func(s rendezvous.Stats) uint64 { return s.Held.Reannounced }),
			counter("held_released_total", "Held items dropped by their relay.", func(s rendezvous.Stats) uint64 { return s.Held.Released }),
			counter("held_expired_total", "Held items swept at their expiry.", func(s rendezvous.Stats) uint64 { return s.Held.Expired }),
			counter("webhook_calls_total", "Auth webhook calls.", func(s rendezvous.Stats) uint64 { return s.Held.WebhookCalls }),
			counter("held_read_checks_total", "Reads of held items on their relay's own URL (tus upload URL) that relays asked about.", func(s rendezvous.Stats) uint64 { return s.Held.ReadChecks }),
			counter("clips_refused_total", "Clips refused at publish: over --max-clip-size or no relay had room (issue 12).", func(s rendezvous.Stats) uint64 { return s.Clips.Refused }),
			counter("clip_orders_total", "Store orders of clips sent, re-replications included.", func(s rendezvous.Stats) uint64 { return s.Clips.Orders }),
			counter("clip_orders_failed_total", "Store orders of clips failed.", func(s rendezvous.Stats) uint64 { return s.Clips.Failed }),
			counter("clip_copies_held_total", "Clip copies announced by relays and checked.", func(s rendezvous.Stats) uint64 { return s.Clips.Held }),
			counter("clip_copies_lost_total", "Clip copies lost: a holder left or dropped it.", func(s rendezvous.Stats) uint64 { return s.Clips.Lost }),
			counter("clips_expired_total", "Clips dropped at their expiry.", func(s rendezvous.Stats) uint64 { return s.Clips.Expired }),
			gauge("items", "Items held.", func(s rendezvous.Stats) int { return s.Items }),
			gauge("items_online", "Items whose publisher is connected.", func(s rendezvous.Stats) int { return s.ItemsOnline }),
			counter("redirects_total", "Item reads redirected to a relay.", func(s rendezvous.Stats) uint64 { return s.Redirects }),
			counter("orders_sent_total", "Orders sent to publishers.", func(s rendezvous.Stats) uint64 { return s.OrdersSent }),
			counter("orders_failed_total", "Orders publishers reported failed.", func(s rendezvous.Stats) uint64 { return s.OrdersFailed }),
			counter("cancels_total", "Cancels sent to publishers.", func(s rendezvous.Stats) uint64 { return s.Cancels }),
			counter("urls_verified_total", "Relay URLs that passed a challenge.", func(s rendezvous.Stats) uint64 { return s.URLsVerified }),
			gauge("orders", "Orders outstanding.", func(s rendezvous.Stats) int { return s.Orders }),
			counter("stun_requests_total", "Datagrams read on the STUN ports.", func(s rendezvous.Stats) uint64 { return s.STUNRequests }),
			counter("stun_answered_total", "STUN Binding requests answered.", func(s rendezvous.Stats) uint64 { return s.STUNAnswered }),
		},
		needFailed: prometheus.NewDesc(ns+"need_failed_total", "Needs refused or failed, by status.", []string{"status"}, nil),
		rejected:   prometheus.NewDesc(ns+"rejected_total", "Control messages and connections refused, by reason.", []string{"reason"}, nil),
		stunDrop:   prometheus.NewDesc(ns+"stun_dropped_total", "STUN datagrams not answered, by reason.", []string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.needFailed
	ch <- c.rejected
	ch <- c.stunDrop
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(st))
	}
	// Labels stay bounded: a status this version does not know (a peer
	// may send any number) counts as "other".
	byLabel := make(map[string]uint64)
	for status, n := range st.NeedFailed {
		label := "other"
		if status.Known() {
			label = strconv.Itoa(int(status))
		}
		byLabel[label] += n
	}
	for label, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(c.needFailed, prometheus.CounterValue, float64(n), label)
	}
	for reason, n := range st.Rejected {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(n), reason)
	}
	for reason, n := range st.STUNDropped {
		ch <- prometheus.MustNewConstMetric(c.stunDrop, prometheus.CounterValue, float64(n), reason)
	}
}
