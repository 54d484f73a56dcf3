package relay

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Forwarding between relays. When the relay a publisher pushes to (the
// entry) is not the relay the consumer reads from (the exit), the push
// token names the exit in Claims.Fwd. The entry reads the part from the
// publisher like a consumer would and writes it to a mesh stream
// (proto.ProtoPart) to the exit, which feeds it to the waiting consumer.
// Memory stays bounded by one window on each relay: the exit reads from
// the mesh stream only as its consumer takes bytes, libp2p's stream flow
// control holds the entry back, and the entry acknowledges the publisher
// only what it has written into the stream.

// Errors of forwarded parts.
var (
	// errEntryGone means the entry relay's stream ended mid-part.
	errEntryGone = &proto.Error{Status: proto.StatusOffline, Msg: "entry relay stream ended mid-part"}
	// errExitUnreachable means the entry relay could not reach the exit.
	errExitUnreachable = &proto.Error{Status: proto.StatusUnavailable, Msg: "exit relay unreachable"}
)

// meshChunk is the most the exit reads from a mesh stream at once. Each
// read fills its buffer (io.ReadFull), so that buffers held are full and
// memory stays close to the window.
const meshChunk = 64 << 10

// beginForward starts carrying the part begun on pc to the exit relay
// named by claims.Fwd.
func (pc *pushConn) beginForward(b proto.PartBegin, claims proto.Claims) {
	s := pc.s
	if s.capReached() {
		// Forwarding sends bytes: no new ones past the monthly cap
		// (ratelimit.go). The rendezvous learns it from the heartbeat.
		s.shaper.capRefused.Add(1)
		s.stats.refused("monthly_cap")
		pc.endStream(b.Stream, proto.StatusUnavailable, "relay's monthly volume cap is reached")
		return
	}
	ps := &partStream{
		s: s, item: b.Item, off: int64(b.Off), n: int64(b.Len),
		window: int64(s.cfg.Window),
		wake:   make(chan struct{}, 1),
	}
	pc.mu.Lock()
	pc.streams[b.Stream] = ps
	pc.mu.Unlock()
	s.stats.openParts.Add(1)
	ps.attach(pc, b.Stream)
	if !s.goStart() {
		ps.cancel(proto.StatusUnavailable, errShutdown.Msg)
		return
	}
	s.stats.partsBegun.Add(1)
	s.stats.forwardsOut.Add(1)
	pc.queueAck(ps)
	go func() {
		defer s.wg.Done()
		s.forward(ps, b, claims.Fwd)
	}()
}

// forward writes ps to a new mesh stream to exit.
func (s *Server) forward(ps *partStream, b proto.PartBegin, exit string) {
	log := s.log.With("exit", shortID(exit), "item", b.Item, "off", b.Off)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	st, err := s.cfg.Node.Open(ctx, exit, proto.ProtoPart)
	cancel()
	if err != nil {
		log.Info("forward: cannot reach the exit relay", "err", err)
		s.stats.refused("exit_unreachable")
		ps.cancel(errExitUnreachable.Status, errExitUnreachable.Msg)
		return
	}
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	b.Stream = 0
	st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := st.Write(b.AppendFrame(nil)); err != nil {
		st.Reset()
		ps.cancel(errExitUnreachable.Status, errExitUnreachable.Msg)
		return
	}
	st.SetWriteDeadline(time.Time{})
	kind := st.Kind()
	if err := ps.writeTo(s.ctx, s.shaper.writer(s.ctx, streamWriter{st, s.cfg.WriteTimeout}, nil)); err != nil {
		log.Debug("forward ended early", "err", err, "conn", kind)
		st.Reset()
		return
	}
	st.CloseWrite()
	s.stats.forwardedBytes.Add(ps.n)
	s.stats.countKind(kind)
	// The exit answers with PartEnd once it has every byte.
	st.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	h, body, err := proto.ReadFrame(st, nil, proto.MaxPartEndLen)
	if err == nil && h.Type == proto.FramePartEnd {
		var e proto.PartEnd
		if e, err = proto.DecodePartEnd(body); err == nil && e.Status != proto.StatusOK {
			log.Info("exit relay ended the part", "status", int(e.Status), "reason", e.Reason)
		}
	}
	st.Close()
	log.Debug("part forwarded", "len", b.Len, "conn", kind)
}

// streamWriter sets a write deadline on a mesh stream before each write.
type streamWriter struct {
	st      mesh.Stream
	timeout time.Duration
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.st.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.st.Write(p)
}

// meshSource is the exit's side of a forwarded part: the stream from the
// entry relay.
type meshSource struct {
	st   mesh.Stream
	room chan struct{} // cap 1; signalled when the consumer took bytes
	once sync.Once
}

// credit implements source: the reader may take more from the stream.
func (m *meshSource) credit(ps *partStream) {
	ps.mu.Lock()
	ps.acked = ps.delivered
	ps.mu.Unlock()
	select {
	case m.room <- struct{}{}:
	default:
	}
}

// end implements source: the entry is told how the part ended. A part
// that ended early also resets the stream, so the entry stops at once.
func (m *meshSource) end(ps *partStream, status proto.Status, reason string) {
	m.once.Do(func() {
		m.st.SetWriteDeadline(time.Now().Add(ps.s.cfg.WriteTimeout))
		m.st.Write(proto.PartEnd{Status: status, Reason: reason}.AppendFrame(nil))
		if status != proto.StatusOK {
			m.st.Reset()
			return
		}
		m.st.Close()
	})
	select {
	case m.room <- struct{}{}:
	default:
	}
}

// handlePart serves a mesh stream from an entry relay carrying a part this
// relay asked for.
func (s *Server) handlePart(st mesh.Stream) {
	if !s.goStart() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	log := s.log.With("entry", shortID(st.RemotePeer()))

	st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	h, body, err := proto.ReadFrame(st, nil, proto.MaxPartBeginLen)
	if err == nil && h.Type != proto.FramePartBegin {
		err = proto.Errorf(proto.StatusProtocol, "mesh part stream begins with %v", h.Type)
	}
	var b proto.PartBegin
	if err == nil {
		b, err = proto.DecodePartBegin(body)
	}
	if err != nil {
		s.stats.refused("mesh_malformed")
		log.Info("mesh part refused", "err", err)
		st.Reset()
		return
	}
	claims, err := s.parseToken(b.Token)
	if err == nil {
		// The token was issued to the entry relay for this relay's need.
		err = claims.Check(st.RemotePeer(), proto.DirPush, b.Item, int64(b.Off), int64(b.Len))
	}
	if err == nil && (claims.Fwd != s.id || claims.Off != int64(b.Off) || claims.Len != int64(b.Len)) {
		err = proto.Errorf(proto.StatusForbidden, "token does not forward this part to this relay")
	}
	if err != nil {
		s.stats.refused("mesh_token")
		s.refusedForward(claims, st.RemotePeer(), b, err)
		refuse(st, proto.TokenStatus(err), err.Error())
		return
	}
	ps := s.takeNeed(claims.Ref, b.Item, int64(b.Off), int64(b.Len))
	if ps == nil {
		s.stats.refused("not_wanted")
		refuse(st, proto.StatusNotWanted, "nobody waits for this part")
		return
	}
	src := &meshSource{st: st, room: make(chan struct{}, 1)}
	if !ps.attach(src, 0) {
		refuse(st, proto.StatusNotWanted, "the consumer went away")
		return
	}
	s.stats.forwardsIn.Add(1)
	s.stats.countKind(st.Kind())
	if err := s.readMesh(ps, src); err != nil {
		if ended, _ := ps.fail(err); ended {
			st.Reset()
		}
		log.Debug("mesh part ended early", "err", err)
	}
}

// readMesh copies the part from the mesh stream into ps, never more than
// the window ahead of the consumer.
func (s *Server) readMesh(ps *partStream, src *meshSource) error {
	for {
		ps.mu.Lock()
		room := min(ps.acked+ps.window, ps.n) - ps.received
		finished, left := ps.finished, ps.n-ps.received
		ps.mu.Unlock()
		if finished || left == 0 {
			return nil
		}
		if room <= 0 {
			select {
			case <-src.room:
				continue
			case <-s.ctx.Done():
				return errShutdown
			}
		}
		buf := s.pool.get(int(min(room, left, meshChunk)))
		src.st.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		n, err := io.ReadFull(src.st, buf)
		if n > 0 {
			s.stats.bytesIn.Add(int64(n))
			if perr := ps.put(buf[:n]); perr != nil {
				return perr
			}
		} else {
			s.pool.put(buf)
		}
		if err != nil {
			return errEntryGone
		}
	}
}

// refuse ends a mesh part stream before it began.
func refuse(st mesh.Stream, status proto.Status, reason string) {
	st.SetWriteDeadline(time.Now().Add(time.Second))
	st.Write(proto.PartEnd{Status: status, Reason: reason}.AppendFrame(nil))
	st.Close()
}
