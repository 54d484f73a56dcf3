package relay

// Acknowledged chunks over socket.io (the upload-streams protocol; issue
// 11, protocol 2) at /v1/socket.io/, for socket.io-client 4.x unmodified:
// Engine.IO v4 long-polling (with CORS) upgraded to WebSocket, socket.io
// v5 packets with binary attachments and acknowledgements.
//
//	client                                         relay
//	begin_upload {sessionID, fileName[, size, type]}, ack
//	                                          <--  ack {sessionID, share, url, expires}
//	                                               (or {error, code})
//	upload_chunk_<sessionID> {chunk: <binary>, last: false}, ack
//	                                          <--  ack {received}   (bytes so far)
//	...                                            one chunk at a time: the next is
//	                                               sent after the ack
//	upload_chunk_<sessionID> {chunk: <binary, may be empty>, last: true}, ack
//	                                          <--  ack {received}
//	                                          <--  upload_success_<sessionID> {share, url, expires, size}
//	on refusal                                <--  ack {error, code}, upload_error_<sessionID> {error, code}
//
// Each session is an upload of the core (upload.go) whose size is unknown
// until the last chunk. A chunk's bytes go to the item's readers as they
// are appended; a chunk is acknowledged once appended, which waits while
// the relay's memory budget is full, so the uploader is paced by the
// readers. A chunk over AdapterConfig.MaxChunk, a chunk that is not
// binary, or a chunk sent before the previous one was acknowledged ends
// its session with an error. A session with no chunk for IdleTimeout is
// aborted; a connection that drops aborts its unfinished sessions.
//
// Why github.com/zishang520/socket.io (v3.0.6): a maintained port of the
// reference JavaScript server (Engine.IO v4 polling and WebSocket with the
// upgrade probe, socket.io v5 parser with binary attachments and acks,
// CORS), which mounts as an http.Handler on our mux and takes its limits
// (maxHttpBufferSize, ping interval and timeout, connect timeout) as
// options, so they come from Config. The subset written by hand would be
// ~700 lines of protocol with its own corner cases (polling batches and
// base64 binary, the noop on upgrade). Its cost: a dependency tree of a
// JS-style event emitter and about 7 modules (brotli and compress for
// HTTP compression, which we turn off, msgpack, a colour logger); and it
// dispatches events on a queue of its own, which our handlers never block
// (appending happens on each session's goroutine, and a chunk sent before
// the previous ack is refused), so that queue holds at most one chunk per
// session.
//
// Throughput (measured with BenchmarkUploadProtocols, cmd/internal/e2e):
// one acknowledged chunk at a time is bound by the round trip, and the
// round trip is the client's and the library's, not this adapter's. With
// socket.io-client in Node the upgrade to WebSocket happens before the
// first chunk (polling carries only the handshake), TCP_NODELAY is on at
// both ends (Go's default, ws's), pings are every SocketIOPing (25 s) and
// no flush timer is involved. A minimal zishang520 server that
// acknowledges and keeps nothing is within 10-25% of this relay (1 MiB
// and 10240-byte chunks alike), and Node's own ws package against a bare
// Go WebSocket server, no socket.io at all, is only about twice as fast
// as either: most of the time is the client (masking every frame in JS,
// socket writes) and, on the server, the library reading each message
// into a buffer grown from 512 bytes by doubling (types.Buffer.ReadFrom,
// twice per binary attachment: transport then parser), which no option
// configures. What is ours is one copy into the item and one goroutine
// hand-off per chunk.

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/zishang520/socket.io/servers/engine/v3"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

const (
	sioPath         = "/v1/socket.io/"
	maxSIOSessionID = 128 // bytes of a sessionID
)

// sioState is the socket.io server of a relay, made on the first call to
// socketIOHandler.
type sioState struct {
	once sync.Once
	h    http.Handler

	mu       sync.Mutex            // guards the field below
	sessions map[string]netip.Addr // Engine.IO session id -> source IP, for sessions holding a lease
}

// Engine.IO sessions in the limits per source (limits.go). An Engine.IO
// session is one connection for MaxConnsPerIP, whatever its transport:
// the handshake request's lease (taken in limitHandler) is kept for the
// session's life and released when the session closes, and the session's
// later requests (long-polling GETs and POSTs, the WebSocket upgrade)
// carry its sid and take no lease of their own (nor a token of the
// request rate: like a WebSocket's messages, they are the session's
// traffic), so a polling session does not count once per poll and is not
// refused mid-upload when its IP is at the limit. A handshake over the limit is refused by limitHandler
// (429, "too many connections from your address").

// sioHold carries a handshake request's lease to the Engine.IO
// connection event (sioState.claim).
type sioHold struct {
	ip      netip.Addr
	release func()

	mu      sync.Mutex // guards the field below
	claimed bool
}

type sioHoldKey struct{}

// sessionIP reports whether sid is an Engine.IO session holding a lease
// for ip (see limitHandler).
func (st *sioState) sessionIP(sid string, ip netip.Addr) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	got, ok := st.sessions[sid]
	return ok && got == ip
}

// claim moves the lease of the handshake that made es to the session:
// it is released when the session closes.
func (st *sioState) claim(es engine.Socket) {
	ctx := es.Request()
	if ctx == nil || ctx.Request() == nil {
		return
	}
	hold, _ := ctx.Request().Context().Value(sioHoldKey{}).(*sioHold)
	if hold == nil {
		return
	}
	hold.mu.Lock()
	defer hold.mu.Unlock()
	if hold.claimed {
		return
	}
	hold.claimed = true
	sid := es.Id()
	st.mu.Lock()
	if st.sessions == nil {
		st.sessions = make(map[string]netip.Addr)
	}
	st.sessions[sid] = hold.ip
	st.mu.Unlock()
	release := hold.release
	es.Once("close", func(...any) {
		st.mu.Lock()
		delete(st.sessions, sid)
		st.mu.Unlock()
		release()
	})
}

// serve passes r to the socket.io server h. A handshake (a request with
// no sid) lends its lease in the limits per source to the session it
// makes; if it made none, the lease is released when h returns.
func (st *sioState) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("sid") != "" {
		st.h.ServeHTTP(w, r)
		return
	}
	ip, _ := srclimit.SourceIP(r.RemoteAddr)
	hold := &sioHold{ip: ip, release: takeLease(r)}
	r = r.WithContext(context.WithValue(r.Context(), sioHoldKey{}, hold))
	st.h.ServeHTTP(w, r)
	hold.mu.Lock()
	claimed := hold.claimed
	hold.claimed = true // a late connection event finds no lease to claim
	hold.mu.Unlock()
	if !claimed {
		hold.release()
	}
}

// socketIOHandler returns the socket.io handler, mounted at sioPath.
func (s *Server) socketIOHandler() http.Handler {
	st := &s.ad.sio
	st.once.Do(func() {
		ac := s.cfg.Adapters
		opts := socket.DefaultServerOptions()
		opts.SetPath(strings.TrimSuffix(sioPath, "/"))
		opts.SetServeClient(false)
		// A chunk is one message; long-polling sends binary as base64
		// (4/3 larger) and may batch it with a few small packets.
		opts.SetMaxHttpBufferSize(int64(ac.MaxChunk)*4/3 + 64<<10)
		opts.SetPingInterval(ac.SocketIOPing)
		opts.SetPingTimeout(ac.SocketIOPingWait)
		opts.SetConnectTimeout(s.cfg.HandshakeTimeout)
		opts.SetUpgradeTimeout(s.cfg.HandshakeTimeout)
		opts.SetHttpCompression(nil)
		opts.SetPerMessageDeflate(nil)
		// Uploads come from pages on any origin, like tus's: what an
		// upload may do is the auth webhook's say, and no cookie is used.
		opts.SetCors(&types.Cors{Origin: "*"})
		io := socket.NewServer(nil, opts)
		io.On("connection", func(a ...any) {
			if len(a) == 0 {
				return
			}
			if sock, ok := a[0].(*socket.Socket); ok {
				s.sioConnect(sock)
			}
		})
		h := io.ServeHandler(opts)
		// The handshake's lease becomes the session's (limits per source).
		io.Engine().On("connection", func(a ...any) {
			if len(a) > 0 {
				if es, ok := a[0].(engine.Socket); ok {
					st.claim(es)
				}
			}
		})
		st.h = h
		context.AfterFunc(s.ctx, func() { io.Close(nil) })
	})
	return http.HandlerFunc(st.serve)
}

// sioConn is one socket.io connection (a socket on the main namespace).
type sioConn struct {
	s    *Server
	sock *socket.Socket
	log  *slog.Logger

	mu       sync.Mutex // guards the fields below
	sessions map[string]*sioSession
	closed   bool
}

// sioSession is one upload on a connection.
type sioSession struct {
	c      *sioConn
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	u      *upload // set once begin_upload was acknowledged

	mu      sync.Mutex // guards pending
	pending bool       // a chunk is being appended

	chunks chan sioChunk // capacity 1: the chunk being appended
}

type sioChunk struct {
	data []byte
	last bool
	ack  socket.Ack
}

func (s *Server) sioConnect(sock *socket.Socket) {
	c := &sioConn{
		s: s, sock: sock,
		log:      s.log.With("peer", sock.Handshake().Address, "socketio", string(sock.Id())),
		sessions: make(map[string]*sioSession),
	}
	s.ad.stats.sioConns.Add(1)
	sock.On("begin_upload", c.onBegin)
	sock.On("disconnect", func(...any) {
		s.ad.stats.sioConns.Add(-1)
		c.mu.Lock()
		c.closed = true
		sessions := c.sessions
		c.sessions = nil
		c.mu.Unlock()
		for _, ss := range sessions {
			ss.cancel()
		}
	})
}

// sioError is the payload of a refusal.
func sioError(err error) map[string]any {
	code := 500
	var pe *proto.Error
	if errors.As(err, &pe) {
		code = pe.Status.HTTPStatus()
	}
	return map[string]any{"error": err.Error(), "code": code}
}

// ackOf returns the acknowledgement callback of an event's arguments.
func ackOf(args []any) (socket.Ack, []any) {
	if n := len(args); n > 0 {
		if ack, ok := args[n-1].(socket.Ack); ok {
			return ack, args[:n-1]
		}
	}
	return func([]any, error) {}, args
}

// onBegin handles begin_upload {sessionID, fileName}.
func (c *sioConn) onBegin(args ...any) {
	ack, args := ackOf(args)
	refuse := func(err error) {
		c.s.ad.stats.sioRefused.Add(1)
		c.log.Debug("socket.io begin_upload refused", "err", err)
		ack([]any{sioError(err)}, nil)
	}
	var m map[string]any
	if len(args) > 0 {
		m, _ = args[0].(map[string]any)
	}
	id, _ := m["sessionID"].(string)
	name, _ := m["fileName"].(string)
	mime, _ := m["type"].(string)
	if id == "" || len(id) > maxSIOSessionID || !utf8.ValidString(id) || strings.ContainsAny(id, "\x00\r\n") {
		refuse(proto.Errorf(proto.StatusMalformed, "begin_upload needs a sessionID of 1 to %d bytes", maxSIOSessionID))
		return
	}
	size := int64(-1)
	if f, ok := m["size"].(float64); ok && f >= 0 && f == float64(int64(f)) {
		size = int64(f)
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return
	case c.sessions[id] != nil:
		c.mu.Unlock()
		refuse(proto.Errorf(proto.StatusConflict, "session %q is open already", id))
		return
	case len(c.sessions) >= c.s.cfg.Adapters.SocketIOSessions:
		c.mu.Unlock()
		refuse(proto.Errorf(proto.StatusOverLimit, "%d upload sessions are open on this connection", c.s.cfg.Adapters.SocketIOSessions))
		return
	}
	ctx, cancel := context.WithCancel(c.s.ctx)
	ss := &sioSession{c: c, id: id, ctx: ctx, cancel: cancel, chunks: make(chan sioChunk, 1)}
	c.sessions[id] = ss
	c.mu.Unlock()
	if !c.s.goStart() {
		c.end(ss)
		return
	}
	c.s.ad.stats.sioSessions.Add(1)
	go func() {
		defer c.s.wg.Done()
		defer c.end(ss)
		spec := uploadSpec{
			Protocol: proto.UploadSocketIO, Name: name, MIME: mime, Size: size,
			Meta: map[string]string{"sessionID": id}, Client: c.sock.Handshake().Address,
		}
		if a := c.sock.Handshake().Auth; len(a) > 0 {
			spec.Auth = map[string]string{}
			for k, v := range a {
				if str, ok := v.(string); ok {
					spec.Auth[k] = str
				}
			}
		}
		if h := c.sock.Handshake().Headers; h != nil {
			if v := h.Header().Get("Authorization"); v != "" {
				if spec.Auth == nil {
					spec.Auth = map[string]string{}
				}
				spec.Auth["authorization"] = v
			}
		}
		cctx, ccancel := context.WithTimeout(ctx, c.s.cfg.NeedTimeout)
		u, err := c.s.createUpload(cctx, spec)
		ccancel()
		if err != nil {
			refuse(err)
			return
		}
		ss.u = u
		// Chunk events are listened to only from now: a chunk before
		// the acknowledgement is an event nobody handles.
		c.sock.On("upload_chunk_"+id, ss.onChunk)
		in := u.Info()
		ack([]any{map[string]any{
			"sessionID": id, "share": in.ShareURL, "url": in.DownloadURL,
			"expires": in.Expires.UTC().Format(time.RFC3339),
		}}, nil)
		ss.serve()
	}()
}

// end forgets a session and its chunk listener.
func (c *sioConn) end(ss *sioSession) {
	ss.cancel()
	c.sock.RemoveAllListeners(types.EventName("upload_chunk_" + ss.id))
	c.mu.Lock()
	if c.sessions[ss.id] == ss {
		delete(c.sessions, ss.id)
	}
	c.mu.Unlock()
}

// onChunk handles upload_chunk_<sessionID> {chunk, last}. It never blocks:
// the chunk is handed to the session's goroutine.
func (ss *sioSession) onChunk(args ...any) {
	ack, args := ackOf(args)
	var m map[string]any
	if len(args) > 0 {
		m, _ = args[0].(map[string]any)
	}
	last, lastOK := m["last"].(bool)
	var data []byte
	chunkOK := true
	switch b := m["chunk"].(type) {
	case types.BufferInterface:
		data = b.Bytes()
	case []byte:
		data = b
	case nil:
		chunkOK = last // the last chunk may be left out
	default:
		chunkOK = false
	}
	if _, has := m["last"]; !has {
		lastOK = true // last: false may be left out
	}
	var err error
	switch {
	case m == nil || !chunkOK || !lastOK:
		err = proto.Errorf(proto.StatusMalformed, "upload_chunk_%s needs {chunk: <binary>, last: bool}", ss.id)
	case len(data) > ss.c.s.cfg.Adapters.MaxChunk:
		err = proto.Errorf(proto.StatusTooLarge, "chunk of %d bytes is over the limit of %d", len(data), ss.c.s.cfg.Adapters.MaxChunk)
	}
	ss.mu.Lock()
	if err == nil && ss.pending {
		err = proto.Errorf(proto.StatusProtocol, "chunk sent before the previous one was acknowledged")
	}
	if err == nil {
		ss.pending = true
	}
	ss.mu.Unlock()
	if err != nil {
		ss.fail(err, ack)
		return
	}
	select {
	case ss.chunks <- sioChunk{data: data, last: last, ack: ack}:
	default: // cannot happen: pending guards the one slot
		ss.fail(proto.Errorf(proto.StatusProtocol, "chunk sent before the previous one was acknowledged"), ack)
	}
}

// fail refuses a chunk and ends the session: its upload is aborted.
func (ss *sioSession) fail(err error, ack socket.Ack) {
	ss.c.s.ad.stats.sioRefused.Add(1)
	ss.c.log.Debug("socket.io upload refused", "session", ss.id, "err", err)
	// Aborted first: once the uploader is told, readers are too.
	if ss.u != nil && !ss.u.Done() {
		ss.u.Abort(err)
	}
	body := sioError(err)
	ack([]any{body}, nil)
	ss.c.sock.Emit("upload_error_"+ss.id, body)
	ss.cancel()
}

// serve appends the session's chunks in order until the last one, an
// error, the idle timeout, or the connection's end.
func (ss *sioSession) serve() {
	s := ss.c.s
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
	for {
		var ch sioChunk
		select {
		case ch = <-ss.chunks:
		case <-idle.C:
			ss.fail(proto.Errorf(proto.StatusTimeout, "no chunk for %s", s.cfg.IdleTimeout), func([]any, error) {})
			return
		case <-ss.ctx.Done():
			if !ss.u.Done() {
				ss.u.Abort(nil)
			}
			return
		}
		if len(ch.data) > 0 {
			if _, err := ss.u.Write(ss.ctx, ch.data); err != nil {
				if ss.ctx.Err() != nil {
					ss.u.Abort(nil)
					return
				}
				ss.fail(err, ch.ack)
				return
			}
			s.ad.stats.sioBytes.Add(int64(len(ch.data)))
		}
		if ch.last {
			if err := ss.u.Finish(); err != nil {
				ss.fail(err, ch.ack)
				return
			}
		}
		ss.mu.Lock()
		ss.pending = false
		ss.mu.Unlock()
		ch.ack([]any{map[string]any{"received": ss.u.Offset()}}, nil)
		if ch.last {
			s.ad.stats.sioDone.Add(1)
			in := ss.u.Info()
			ss.c.sock.Emit("upload_success_"+ss.id, map[string]any{
				"sessionID": ss.id, "share": in.ShareURL, "url": in.DownloadURL,
				"expires": in.Expires.UTC().Format(time.RFC3339), "size": in.Size,
			})
			return
		}
		idle.Reset(s.cfg.IdleTimeout)
	}
}
