package relay

import (
	"encoding/json"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// stats are the relay's counters.
type stats struct {
	bytesIn         atomic.Int64 // part bytes received from publishers
	bytesOut        atomic.Int64 // part bytes written to consumers
	needs           atomic.Int64 // parts asked of the rendezvous
	partsBegun      atomic.Int64
	partsDone       atomic.Int64
	partsFailed     atomic.Int64
	pushConns       atomic.Int64 // open push connections
	openParts       atomic.Int64 // parts bound to push connections
	requests        atomic.Int64 // consumer requests served
	unknownFrames   atomic.Int64
	droppedAfterEnd atomic.Int64 // PartData frames for parts we ended

	mu       sync.Mutex // guards refusals
	refusals map[string]int64
}

func (s *stats) refused(reason string) {
	s.mu.Lock()
	s.refusals[reason]++
	s.mu.Unlock()
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	BytesIn     int64            `json:"bytes_in"`
	BytesOut    int64            `json:"bytes_out"`
	Needs       int64            `json:"needs"`
	PartsBegun  int64            `json:"parts_begun"`
	PartsDone   int64            `json:"parts_done"`
	PartsFailed int64            `json:"parts_failed"`
	PushConns   int64            `json:"push_conns"`
	Requests    int64            `json:"requests"`
	OpenParts   int64            `json:"open_parts"` // parts being pushed
	Waiting     int              `json:"waiting"`    // parts asked for, not yet begun
	Reserved    int64            `json:"reserved"`   // bytes of the budget in use
	Refusals    map[string]int64 `json:"refusals"`   // by reason
}

// Stats returns a snapshot of the relay's counters.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	ref := maps.Clone(s.stats.refusals)
	s.stats.mu.Unlock()
	s.mu.Lock()
	waiting := len(s.needs)
	s.mu.Unlock()
	return Stats{
		BytesIn:     s.stats.bytesIn.Load(),
		BytesOut:    s.stats.bytesOut.Load(),
		Needs:       s.stats.needs.Load(),
		PartsBegun:  s.stats.partsBegun.Load(),
		PartsDone:   s.stats.partsDone.Load(),
		PartsFailed: s.stats.partsFailed.Load(),
		PushConns:   s.stats.pushConns.Load(),
		Requests:    s.stats.requests.Load(),
		OpenParts:   s.stats.openParts.Load(),
		Waiting:     waiting,
		Reserved:    s.budget.inUse(),
		Refusals:    ref,
	}
}

// Status is the JSON document served at GET /v1/status.
type Status struct {
	ID         string    `json:"id"`
	HTTPURL    string    `json:"http_url"`
	Addrs      []string  `json:"addrs"`
	Rendezvous string    `json:"rendezvous"`
	Registered bool      `json:"registered"`
	Budget     int64     `json:"budget"`
	Window     int       `json:"window"`
	Stats      Stats     `json:"stats"`
	Time       time.Time `json:"time"`
}

// Status returns the relay's status.
func (s *Server) Status() Status {
	return Status{
		ID:         s.id,
		HTTPURL:    s.cfg.PublicURL,
		Addrs:      s.cfg.Node.Addrs(),
		Rendezvous: s.cfg.Rendezvous,
		Registered: s.link.Load() != nil,
		Budget:     s.cfg.Budget,
		Window:     s.cfg.Window,
		Stats:      s.Stats(),
		Time:       s.cfg.Now().UTC(),
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(s.Status())
}
