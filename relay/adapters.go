package relay

import (
	"cmp"
	"sync/atomic"
	"time"
)

// The tus and socket.io upload adapters (tus.go, socketio.go) and their
// limits. Both sit on the relay's upload core (upload.go): the bytes go
// to the item's readers and the relay's memory budget as they arrive, and
// an adapter holds at most one chunk of an upload whole, when the protocol
// requires it (a socket.io chunk is one message; a tus PATCH with
// Upload-Checksum is verified before its bytes are appended), bounded by
// MaxChunk.

// Defaults for AdapterConfig.
const (
	DefaultMaxChunk         = 1 << 20 // bytes
	DefaultSocketIOSessions = 4
	DefaultSocketIOPing     = 25 * time.Second
	DefaultSocketIOPingWait = 20 * time.Second
)

// AdapterConfig configures the tus and socket.io upload adapters.
type AdapterConfig struct {
	// MaxChunk bounds a chunk an adapter holds whole: a socket.io
	// upload_chunk, and the body of a tus PATCH carrying Upload-Checksum
	// (tus PATCH bodies without a checksum stream, of any size). Defaults
	// to DefaultMaxChunk (1 MiB).
	MaxChunk int
	// SocketIOSessions bounds the upload sessions (begin_upload) open at
	// once on one socket.io connection. Defaults to 4.
	SocketIOSessions int
	// SocketIOPing is the Engine.IO ping interval; SocketIOPingWait the
	// time a client has to answer a ping (Engine.IO pingTimeout) before
	// the connection is dropped. Default to 25s and 20s, Engine.IO's own.
	// A session with no chunk for IdleTimeout (Config) is aborted.
	SocketIOPing     time.Duration
	SocketIOPingWait time.Duration
}

func (c *AdapterConfig) setDefaults() {
	c.MaxChunk = cmp.Or(c.MaxChunk, DefaultMaxChunk)
	c.SocketIOSessions = cmp.Or(c.SocketIOSessions, DefaultSocketIOSessions)
	c.SocketIOPing = cmp.Or(c.SocketIOPing, DefaultSocketIOPing)
	c.SocketIOPingWait = cmp.Or(c.SocketIOPingWait, DefaultSocketIOPingWait)
}

func (c *AdapterConfig) logAttrs() []any {
	return []any{
		"max_chunk", c.MaxChunk, "socketio_sessions", c.SocketIOSessions,
		"socketio_ping", c.SocketIOPing, "socketio_ping_wait", c.SocketIOPingWait,
	}
}

// adapterState is the state of the tus and socket.io adapters on a Server.
type adapterState struct {
	tus   tusState
	sio   sioState
	stats adapterStats
}

// adapterStats counts what the adapters did; see Server.AdapterStats.
type adapterStats struct {
	tusCreated        atomic.Int64
	tusDone           atomic.Int64
	tusTerminated     atomic.Int64
	tusChecksumFailed atomic.Int64
	tusBytes          atomic.Int64

	sioConns    atomic.Int64 // open socket.io connections
	sioSessions atomic.Int64 // upload sessions begun
	sioDone     atomic.Int64
	sioRefused  atomic.Int64 // chunks or sessions refused
	sioBytes    atomic.Int64
}

// AdapterStats is a snapshot of the tus and socket.io adapters' counters.
type AdapterStats struct {
	TusCreated        int64 `json:"tus_created"`
	TusDone           int64 `json:"tus_done"`
	TusTerminated     int64 `json:"tus_terminated"`
	TusChecksumFailed int64 `json:"tus_checksum_failed"`
	TusBytes          int64 `json:"tus_bytes"`
	SocketIOConns     int64 `json:"socketio_conns"`
	SocketIOSessions  int64 `json:"socketio_sessions"`
	SocketIODone      int64 `json:"socketio_done"`
	SocketIORefused   int64 `json:"socketio_refused"`
	SocketIOBytes     int64 `json:"socketio_bytes"`
}

// AdapterStats returns the tus and socket.io adapters' counters.
func (s *Server) AdapterStats() AdapterStats {
	a := &s.ad.stats
	return AdapterStats{
		TusCreated: a.tusCreated.Load(), TusDone: a.tusDone.Load(),
		TusTerminated: a.tusTerminated.Load(), TusChecksumFailed: a.tusChecksumFailed.Load(),
		TusBytes: a.tusBytes.Load(), SocketIOConns: a.sioConns.Load(),
		SocketIOSessions: a.sioSessions.Load(), SocketIODone: a.sioDone.Load(),
		SocketIORefused: a.sioRefused.Load(), SocketIOBytes: a.sioBytes.Load(),
	}
}
