package relay

import (
	"context"
	"errors"
	"fmt"
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
//
// Memory stays bounded by one window on each relay, the one its budget
// reserved for the part. The exit grants credit as its consumer takes
// bytes (Ack frames, as a relay grants a publisher: the entry may send the
// part's bytes below the limit), reads from the stream whatever it
// granted, and so leaves nothing waiting in the stream's receive buffer;
// the entry writes only what it was granted, and acknowledges the
// publisher only what it has written. Without the exit's credit, the
// stream's own flow control would hold the entry back only once the
// stream's receive window (up to mesh.Config.MaxStreamWindow, 4 MiB) was
// full, memory the budget does not count. An entry that ignores the
// credit is still held to that window by the resource manager.

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
	c := &exitCredit{st: st, n: ps.n, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.readLoop()
	w := &creditWriter{w: streamWriter{st, s.cfg.WriteTimeout}, c: c, timeout: s.cfg.WriteTimeout}
	if err := ps.writeTo(s.ctx, s.shaper.writer(s.ctx, w, nil)); err != nil {
		log.Debug("forward ended early", "err", err, "conn", kind)
		st.Reset()
		<-c.done
		return
	}
	st.CloseWrite()
	s.stats.forwardedBytes.Add(ps.n)
	s.stats.countKind(kind)
	// The exit answers with PartEnd once it has every byte.
	st.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
	<-c.done
	if c.err == nil && c.end.Status != proto.StatusOK {
		log.Info("exit relay ended the part", "status", int(c.end.Status), "reason", c.end.Reason)
	}
	st.Close()
	log.Debug("part forwarded", "len", b.Len, "conn", kind)
}

// exitCredit is the entry's side of the exit's flow control on a part
// stream: it reads the exit's Ack frames, each raising the limit below
// which the entry may send the part's bytes, up to the exit's PartEnd.
type exitCredit struct {
	st   mesh.Stream
	n    int64         // the part's length
	wake chan struct{} // cap 1; signalled when the limit rose
	done chan struct{} // closed when the exit's side ended

	mu    sync.Mutex // guards limit
	limit int64

	// Set before done is closed: the exit's PartEnd, or why the stream
	// ended without one.
	end proto.PartEnd
	err error
}

// errNoPartEnd means the exit's side of a part stream ended without a
// PartEnd.
var errNoPartEnd = errors.New("exit relay ended the stream without a PartEnd")

// readLoop reads the exit's frames until its PartEnd or an error, which
// ends the stream.
func (c *exitCredit) readLoop() {
	defer close(c.done)
	buf := make([]byte, proto.MaxPartEndLen)
	for {
		h, body, err := proto.ReadFrame(c.st, buf, proto.MaxPartEndLen)
		if err != nil {
			if err == io.EOF {
				err = errNoPartEnd
			}
			c.err = err
			return
		}
		switch h.Type {
		case proto.FrameAck:
			a, err := proto.DecodeAck(body)
			if err == nil && a.Limit > uint64(c.n) {
				err = fmt.Errorf("exit relay granted credit to %d in a part of %d bytes", a.Limit, c.n)
			}
			if err != nil {
				c.err = err
				c.st.Reset()
				return
			}
			c.mu.Lock()
			c.limit = max(c.limit, int64(a.Limit))
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
		case proto.FramePartEnd:
			c.end, c.err = proto.DecodePartEnd(body)
			return
		}
		// Frames of other types are skipped (proto: peers may add some).
	}
}

// wait returns the exit's limit once it is above sent. It fails when the
// exit's side ended, or granted nothing more within timeout (its consumer
// stopped reading: the stream's write deadline used to say the same).
func (c *exitCredit) wait(sent int64, timeout time.Duration) (int64, error) {
	var timer *time.Timer
	for {
		c.mu.Lock()
		limit := c.limit
		c.mu.Unlock()
		if limit > sent {
			return limit, nil
		}
		if timer == nil {
			timer = time.NewTimer(timeout)
			defer timer.Stop()
		}
		select {
		case <-c.wake:
		case <-c.done:
			if c.err != nil {
				return 0, fmt.Errorf("waiting for credit: %w", c.err)
			}
			return 0, proto.Errorf(c.end.Status, "exit relay ended the part: %s", c.end.Reason)
		case <-timer.C:
			return 0, fmt.Errorf("exit relay granted no credit for %v", timeout)
		}
	}
}

// creditWriter writes a forwarded part to the exit within its credit.
type creditWriter struct {
	w       io.Writer
	c       *exitCredit
	sent    int64 // bytes of the part written
	timeout time.Duration
}

func (w *creditWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		limit, err := w.c.wait(w.sent, w.timeout)
		if err != nil {
			return written, err
		}
		n, err := w.w.Write(p[:min(int64(len(p)), limit-w.sent)])
		written += n
		w.sent += int64(n)
		p = p[n:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
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

	wmu   sync.Mutex // guards the fields below and writes to st
	limit int64      // the credit granted to the entry
	ended bool       // PartEnd sent, or the stream reset
}

// grant gives the entry credit up to the window ahead of what the
// consumer took (an Ack frame), if that is more than it has.
func (m *meshSource) grant(ps *partStream) {
	ps.mu.Lock()
	acked, limit := ps.acked, min(ps.acked+ps.window, ps.n)
	ps.mu.Unlock()
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if m.ended || limit <= m.limit {
		return
	}
	m.limit = limit
	m.st.SetWriteDeadline(time.Now().Add(ps.s.cfg.WriteTimeout))
	if _, err := m.st.Write(proto.Ack{Acked: uint64(acked), Limit: uint64(limit)}.AppendFrame(nil)); err != nil {
		// The entry is gone or reads nothing: the part fails at the next
		// read from the stream, and is asked again elsewhere.
		m.ended = true
		m.st.Reset()
	}
}

// credit implements source: the consumer took bytes, so the reader may
// take more from the stream and the entry may send more.
func (m *meshSource) credit(ps *partStream) {
	ps.mu.Lock()
	ps.acked = ps.delivered
	ps.mu.Unlock()
	m.grant(ps)
	select {
	case m.room <- struct{}{}:
	default:
	}
}

// end implements source: the entry is told how the part ended. A part
// that ended early also resets the stream, so the entry stops at once.
func (m *meshSource) end(ps *partStream, status proto.Status, reason string) {
	m.wmu.Lock()
	if !m.ended {
		m.ended = true
		m.st.SetWriteDeadline(time.Now().Add(ps.s.cfg.WriteTimeout))
		m.st.Write(proto.PartEnd{Status: status, Reason: reason}.AppendFrame(nil))
		if status != proto.StatusOK {
			m.st.Reset()
		} else {
			m.st.Close()
		}
	}
	m.wmu.Unlock()
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
	src.grant(ps) // the first window
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
