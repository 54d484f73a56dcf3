package relay

import (
	"encoding/json"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// stats are the relay's counters.
type stats struct {
	bytesIn         atomic.Int64 // part bytes received from publishers
	bytesOut        atomic.Int64 // part bytes written to consumers and exit relays
	bytesServed     atomic.Int64 // item bytes written to HTTP consumers
	needs           atomic.Int64 // parts asked of the rendezvous
	partRetries     atomic.Int64 // parts asked again mid-response after a transient failure
	busyWaits       atomic.Int64 // parts asked again mid-response because a busy publisher had not begun them
	cutShort        atomic.Int64 // responses ended before their last byte, not by the consumer
	partsBegun      atomic.Int64
	partsDone       atomic.Int64
	partsFailed     atomic.Int64
	pushConns       atomic.Int64 // open push connections
	openParts       atomic.Int64 // parts bound to push connections
	requests        atomic.Int64 // consumer requests served
	rangeRequests   atomic.Int64 // consumer requests with a satisfiable Range
	unknownFrames   atomic.Int64
	droppedAfterEnd atomic.Int64 // PartData frames for parts we ended
	forwardsOut     atomic.Int64 // parts forwarded to exit relays
	forwardsIn      atomic.Int64 // parts received from entry relays
	forwardedBytes  atomic.Int64 // bytes of parts forwarded out in full
	meshDirect      atomic.Int64 // mesh part streams by connection kind
	meshPunched     atomic.Int64
	meshRelayed     atomic.Int64
	readAhead       atomic.Int64 // parts open ahead of the one being delivered, all requests
	entryFailovers  atomic.Int64 // parts asked again through another entry after theirs failed
	circuitMoves    atomic.Int64 // relayed connections dropped to redial over a current circuit
	uploadCounters               // legacy uploads and held items (store.go)
	clipCounters                 // clips (clip.go)

	entryMu sync.Mutex // guards entries
	// entries counts the parts this relay needed, by the entry relay that
	// carried them (itself included); at most maxEntryStats relays, the
	// rest under "other".
	entries map[string]*EntryStats

	mu       sync.Mutex // guards refusals
	refusals map[string]int64
}

func (s *stats) countKind(k mesh.ConnKind) {
	switch k {
	case mesh.Direct:
		s.meshDirect.Add(1)
	case mesh.HolePunched:
		s.meshPunched.Add(1)
	case mesh.Relayed:
		s.meshRelayed.Add(1)
	}
}

// maxEntryStats bounds the entry relays counted by name in Stats.Entries.
const maxEntryStats = 64

// EntryStats counts the parts that came through one entry relay.
type EntryStats struct {
	Parts int64 `json:"parts"`
	Bytes int64 `json:"bytes"`
}

// partsCarried counts a part of n bytes that arrived whole through entry.
func (s *stats) partsCarried(entry string, n int64) {
	s.entryMu.Lock()
	defer s.entryMu.Unlock()
	if s.entries == nil {
		s.entries = map[string]*EntryStats{}
	}
	e := s.entries[entry]
	if e == nil {
		if len(s.entries) >= maxEntryStats {
			entry = "other"
		}
		if e = s.entries[entry]; e == nil {
			e = &EntryStats{}
			s.entries[entry] = e
		}
	}
	e.Parts++
	e.Bytes += n
}

func (s *stats) refused(reason string) {
	s.mu.Lock()
	s.refusals[reason]++
	s.mu.Unlock()
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	BytesIn     int64            `json:"bytes_in"`
	BytesOut    int64            `json:"bytes_out"`    // part bytes written to consumers and exit relays
	BytesServed int64            `json:"bytes_served"` // item bytes written to HTTP consumers (this relay as exit)
	Needs       int64            `json:"needs"`
	PartRetries int64            `json:"part_retries"` // parts asked again mid-response (source gone, link down)
	BusyWaits   int64            `json:"busy_waits"`   // parts asked again mid-response: the publisher, busy, had not begun them within the need timeout
	CutShort    int64            `json:"cut_short"`    // responses ended before their last byte, not by the consumer
	PartsBegun  int64            `json:"parts_begun"`
	PartsDone   int64            `json:"parts_done"`
	PartsFailed int64            `json:"parts_failed"`
	PushConns   int64            `json:"push_conns"`
	Requests    int64            `json:"requests"`
	Ranges      int64            `json:"range_requests"` // requests answered 206
	OpenParts   int64            `json:"open_parts"`     // parts being pushed
	Waiting     int              `json:"waiting"`        // parts asked for, not yet begun
	Reserved    int64            `json:"reserved"`       // bytes of the budget in use
	Refusals    map[string]int64 `json:"refusals"`       // by reason
	// UnknownFrames counts push frames of unknown types, skipped.
	UnknownFrames int64 `json:"unknown_frames"`
	// Forwarding between relays.
	ForwardsOut    int64            `json:"forwards_out"`    // parts sent on to exit relays
	ForwardsIn     int64            `json:"forwards_in"`     // parts received from entry relays
	ForwardedBytes int64            `json:"forwarded_bytes"` // bytes of parts sent on in full
	MeshStreams    map[string]int64 `json:"mesh_streams"`    // part streams by connection kind
	// The mesh (issue 10). ReadAhead is the parts open now ahead of the
	// ones being delivered, over all consumer requests; EntryFailovers
	// counts parts asked again through another entry relay after theirs
	// died or stalled; Entries counts the parts this relay delivered by the
	// entry relay they came through (this relay's own id when pushed to
	// it directly).
	ReadAhead      int64                 `json:"read_ahead"`
	CircuitMoves   int64                 `json:"circuit_moves"` // relayed connections dropped to redial over a current circuit
	EntryFailovers int64                 `json:"entry_failovers"`
	Entries        map[string]EntryStats `json:"entries"`
	// DialsRefused counts dials to non-public addresses the connection
	// gater refused (mesh.Config.AllowPrivateAddrs off).
	DialsRefused int64 `json:"dials_refused"`
	// Assist counts what the relay did for relays behind NAT: its tunnel
	// and circuits (tunnel.go).
	Assist AssistStats `json:"assist"`
	// Rate counts what the volunteer controls did: rate limits and the
	// monthly volume (ratelimit.go).
	Rate RateStats `json:"rate"`
	// Uploads counts the legacy uploads and the items held (store.go).
	Uploads UploadStats `json:"uploads"`
	// Adapters counts the tus and socket.io adapters' work (adapters.go).
	Adapters AdapterStats `json:"adapters"`
	// Clips counts the clips held here (clip.go).
	Clips ClipStats `json:"clips"`
}

// Stats returns a snapshot of the relay's counters.
func (s *Server) Stats() Stats {
	s.stats.mu.Lock()
	ref := maps.Clone(s.stats.refusals)
	s.stats.mu.Unlock()
	s.mu.Lock()
	waiting := len(s.needs)
	s.mu.Unlock()
	s.stats.entryMu.Lock()
	entries := make(map[string]EntryStats, len(s.stats.entries))
	for id, e := range s.stats.entries {
		entries[id] = *e
	}
	s.stats.entryMu.Unlock()
	return Stats{
		BytesIn:       s.stats.bytesIn.Load(),
		UnknownFrames: s.stats.unknownFrames.Load(),
		BytesOut:      s.stats.bytesOut.Load(),
		BytesServed:   s.stats.bytesServed.Load(),
		Needs:         s.stats.needs.Load(),
		PartRetries:   s.stats.partRetries.Load(),
		BusyWaits:     s.stats.busyWaits.Load(),
		CutShort:      s.stats.cutShort.Load(),
		PartsBegun:    s.stats.partsBegun.Load(),
		PartsDone:     s.stats.partsDone.Load(),
		PartsFailed:   s.stats.partsFailed.Load(),
		PushConns:     s.stats.pushConns.Load(),
		Requests:      s.stats.requests.Load(),
		Ranges:        s.stats.rangeRequests.Load(),
		OpenParts:     s.stats.openParts.Load(),
		Waiting:       waiting,
		Reserved:      s.budget.inUse(),
		Refusals:      ref,

		ForwardsOut:    s.stats.forwardsOut.Load(),
		ForwardsIn:     s.stats.forwardsIn.Load(),
		ForwardedBytes: s.stats.forwardedBytes.Load(),
		ReadAhead:      s.stats.readAhead.Load(),
		CircuitMoves:   s.stats.circuitMoves.Load(),
		EntryFailovers: s.stats.entryFailovers.Load(),
		Entries:        entries,
		MeshStreams: map[string]int64{
			proto.PeerDirect:      s.stats.meshDirect.Load(),
			proto.PeerHolePunched: s.stats.meshPunched.Load(),
			proto.PeerRelayed:     s.stats.meshRelayed.Load(),
		},
		DialsRefused: s.cfg.Node.DialsRefused(),
		Assist:       s.assistStats(),
		Rate:         s.rateStats(),
		Uploads:      s.uploadStats(),
		Adapters:     s.AdapterStats(),
		Clips:        s.clipStats(),
	}
}

// Status is the JSON document served at GET /v1/status. The embedded
// MeshStatus adds nat, addrs, peers and holepunch.
type Status struct {
	ID         string `json:"id"`
	HTTPURL    string `json:"http_url"`
	Public     bool   `json:"public"` // reachable directly, not only through the rendezvous
	Rendezvous string `json:"rendezvous"`
	Registered bool   `json:"registered"`
	Budget     int64  `json:"budget"`
	Window     int    `json:"window"`
	// Uploads are the upload protocols the relay serves (Config.Uploads).
	Uploads []string `json:"uploads"`
	// MeshMemory is what the libp2p node holds reserved (connections,
	// unread stream windows), outside Budget; MeshMemoryLimit its bound
	// (relay --mesh-memory).
	MeshMemory      int64 `json:"mesh_memory"`
	MeshMemoryLimit int64 `json:"mesh_memory_limit"`
	proto.MeshStatus
	Stats Stats     `json:"stats"`
	Time  time.Time `json:"time"`
	// Version is the relay binary's version; Started when it started.
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	// Draining says the relay is shutting down (Drain): it refuses new
	// consumer requests and finishes those in flight.
	Draining bool `json:"draining,omitempty"`
}

// Status returns the relay's status.
func (s *Server) Status() Status {
	meshUsed, meshLimit := s.cfg.Node.Memory()
	return Status{
		ID:         s.id,
		HTTPURL:    s.cfg.PublicURL,
		Public:     s.isPublic(),
		Rendezvous: s.cfg.Rendezvous,
		Registered: s.link.Load() != nil,
		Budget:     s.cfg.Budget,
		Window:     s.cfg.Window,
		Uploads:    s.cfg.Uploads,
		MeshMemory: meshUsed, MeshMemoryLimit: meshLimit,
		MeshStatus: s.meshStatus(),
		Stats:      s.Stats(),
		Time:       s.cfg.Now().UTC(),
		Version:    s.cfg.Version,
		Started:    s.start.UTC(),
		Draining:   s.isDraining(),
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(s.Status())
}
