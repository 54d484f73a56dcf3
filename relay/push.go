package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// pushConn is one publisher's push WebSocket (subprotocol meshup.v1). One
// goroutine reads (serve), one writes (sendLoop). Frames to send are either
// PartEnd frames in a bounded queue, or acknowledgements, which are
// coalesced per stream so they need no queue at all.
type pushConn struct {
	s   *Server
	ws  *websocket.Conn
	log *slog.Logger

	ctx     context.Context
	ackWake chan struct{} // cap 1; wakes the sender for ends and acks
	done    chan struct{} // closed when the connection is closing
	sender  sync.WaitGroup

	closeOnce sync.Once

	// authed is set by the reader once a PartBegin carried a valid token.
	// Until then only the handshake deadline counts: no frame and no pong
	// extends it.
	authed bool

	mu        sync.Mutex // guards the fields below
	streams   map[uint32]*partStream
	maxStream uint32 // highest stream id begun; ids must increase
	anyStream bool
	dirty     map[*partStream]struct{} // streams owed an Ack
	ends      [][]byte                 // encoded PartEnd frames to send; bounded
	sending   bool                     // the sender goroutine runs
	closing   bool                     // no sender may start any more
}

// maxEnds bounds the PartEnd frames queued on a connection.
func (pc *pushConn) maxEnds() int { return 2*pc.s.cfg.MaxStreamsPerConn + 8 }

func newPushConn(s *Server, ws *websocket.Conn, log *slog.Logger) *pushConn {
	return &pushConn{
		s:       s,
		ws:      ws,
		log:     log,
		ackWake: make(chan struct{}, 1),
		done:    make(chan struct{}),
		streams: make(map[uint32]*partStream),
		dirty:   make(map[*partStream]struct{}),
	}
}

// serve reads frames until the connection ends, then fails every part still
// bound to it. It closes the WebSocket.
//
// The sender goroutine starts with the first frame to send or the first
// valid token, so that a connection that never authenticates costs one
// goroutine, not two (and gets no pings: its deadline is the handshake's).
func (pc *pushConn) serve(ctx context.Context) {
	pc.ctx = ctx
	err := pc.readLoop()
	status, reason := proto.StatusOK, ""
	var pe *proto.Error
	switch {
	case errors.As(err, &pe) && pe.Status == proto.StatusTimeout:
		status, reason = pe.Status, pe.Msg
		pc.log.Debug("push connection timed out", "reason", reason)
	case errors.As(err, &pe):
		status, reason = pe.Status, pe.Msg
		pc.log.Info("push connection refused", "status", int(status), "reason", reason)
	case errors.Is(err, proto.ErrFrameTooLarge):
		status, reason = proto.StatusTooLarge, err.Error()
	case errors.Is(err, proto.ErrMalformed):
		status, reason = proto.StatusMalformed, err.Error()
	case err != nil && !isNormalClose(err):
		pc.log.Debug("push connection ended", "err", err)
	}
	pc.close(status, reason)
	pc.mu.Lock()
	pc.closing = true
	pc.mu.Unlock()
	pc.sender.Wait()

	pc.mu.Lock()
	streams := pc.streams
	pc.streams = map[uint32]*partStream{}
	pc.mu.Unlock()
	pc.s.stats.openParts.Add(-int64(len(streams)))
	for _, ps := range streams {
		ps.fail(errSenderGone)
	}
}

// close starts closing the connection, telling the peer why when status is
// not OK. It is idempotent.
func (pc *pushConn) close(status proto.Status, reason string) {
	pc.closeOnce.Do(func() {
		code := websocket.CloseNormalClosure
		if status != proto.StatusOK {
			code = status.CloseCode()
		}
		msg := websocket.FormatCloseMessage(code, proto.TruncateReason(reason))
		pc.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		close(pc.done)
		pc.ws.Close()
	})
}

func isNormalClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) ||
		errors.Is(err, errConnClosing)
}

var errConnClosing = errors.New("relay: push connection closing")

func (pc *pushConn) readLoop() error {
	cfg := &pc.s.cfg
	pc.ws.SetReadLimit(int64(proto.HeaderLen + cfg.MaxFrame))
	pc.ws.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	pc.ws.SetPongHandler(func(string) error {
		if !pc.authed {
			return nil // a pong is no credential
		}
		return pc.ws.SetReadDeadline(time.Now().Add(cfg.IdleTimeout))
	})
	for {
		mt, r, err := pc.ws.NextReader()
		if err != nil {
			select {
			case <-pc.done:
				return errConnClosing
			default:
			}
			if isTimeout(err) {
				if !pc.authed {
					pc.s.stats.refused("handshake_timeout")
					return proto.Errorf(proto.StatusTimeout, "no part begun with a valid token within %v of the upgrade", cfg.HandshakeTimeout)
				}
				pc.s.stats.refused("idle_timeout")
				return proto.Errorf(proto.StatusTimeout, "idle for %v", cfg.IdleTimeout)
			}
			return err
		}
		if mt != websocket.BinaryMessage {
			return proto.Errorf(proto.StatusProtocol, "text message on the push channel")
		}
		h, err := proto.ReadHeader(r, cfg.MaxFrame)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return proto.Errorf(proto.StatusMalformed, "message shorter than a frame header")
			}
			return err
		}
		switch h.Type {
		case proto.FramePartData:
			err = pc.readData(r, int(h.Len))
		case proto.FramePartBegin:
			err = pc.readSmall(r, h, proto.MaxPartBeginLen, pc.handleBegin)
		case proto.FramePartEnd:
			err = pc.readSmall(r, h, proto.MaxPartEndLen, pc.handleEnd)
		default:
			// Skipped by length, never buffered: peers may add frame
			// types, and a stranger's 1 MiB frame costs no memory.
			pc.s.stats.unknownFrames.Add(1)
			if _, derr := io.CopyN(io.Discard, r, int64(h.Len)); derr != nil {
				err = proto.Errorf(proto.StatusMalformed, "%v frame shorter than declared", h.Type)
			}
		}
		if err != nil {
			return err
		}
		if pc.authed {
			pc.ws.SetReadDeadline(time.Now().Add(cfg.IdleTimeout))
		}
	}
}

// readSmall reads the body of a frame of at most max bytes into a buffer
// of its own size and hands it to handle. The length is checked before
// anything is allocated.
func (pc *pushConn) readSmall(r io.Reader, h proto.Header, max int, handle func([]byte) error) error {
	if int(h.Len) > max {
		return proto.Errorf(proto.StatusMalformed, "%v frame of %d bytes, at most %d", h.Type, h.Len, max)
	}
	body := make([]byte, h.Len)
	if _, err := io.ReadFull(r, body); err != nil {
		return proto.Errorf(proto.StatusMalformed, "%v frame shorter than declared", h.Type)
	}
	return handle(body)
}

// readData reads the body of a PartData frame straight into a pooled buffer
// and hands it to its stream.
func (pc *pushConn) readData(r io.Reader, n int) error {
	if n < proto.PartDataPrefixLen {
		return proto.Errorf(proto.StatusMalformed, "PartData of %d bytes", n)
	}
	var sid [proto.PartDataPrefixLen]byte
	if _, err := io.ReadFull(r, sid[:]); err != nil {
		return proto.Errorf(proto.StatusMalformed, "PartData shorter than declared")
	}
	stream := binary.BigEndian.Uint32(sid[:])
	size := n - proto.PartDataPrefixLen

	// Nothing is allocated for bytes nobody may send: the stream and its
	// credit are checked first.
	pc.mu.Lock()
	ps := pc.streams[stream]
	known := pc.anyStream && stream <= pc.maxStream
	pc.mu.Unlock()
	if ps == nil {
		if !known {
			io.CopyN(io.Discard, r, int64(size)) // see admit below
			return proto.Errorf(proto.StatusUnknownStream, "PartData for stream %d, never begun", stream)
		}
		pc.s.stats.droppedAfterEnd.Add(1) // the part ended on our side
		if _, err := io.CopyN(io.Discard, r, int64(size)); err != nil {
			return proto.Errorf(proto.StatusMalformed, "PartData shorter than declared")
		}
		return nil
	}
	if size == 0 {
		return nil
	}
	if err := ps.admit(size); err != nil {
		ps.fail(err)
		// Read the frame to its end (into nothing), so that the close
		// frame reaches a peer still writing it rather than a reset.
		io.CopyN(io.Discard, r, int64(size))
		return err
	}
	buf := pc.s.pool.get(size)
	if _, err := io.ReadFull(r, buf); err != nil {
		pc.s.pool.put(buf)
		return proto.Errorf(proto.StatusMalformed, "PartData shorter than declared")
	}
	pc.s.stats.bytesIn.Add(int64(len(buf)))
	if tap := pc.s.cfg.Tap; tap != nil {
		tap(ps.item, ps.off, buf)
	}
	if err := ps.put(buf); err != nil {
		ps.fail(err)
		return err // a publisher that ignores credit is not to be trusted further
	}
	return nil
}

func (pc *pushConn) handleBegin(body []byte) error {
	b, err := proto.DecodePartBegin(body)
	if err != nil {
		return err
	}
	pc.mu.Lock()
	if pc.anyStream && b.Stream <= pc.maxStream {
		pc.mu.Unlock()
		return proto.Errorf(proto.StatusProtocol, "stream id %d not above %d", b.Stream, pc.maxStream)
	}
	pc.anyStream, pc.maxStream = true, b.Stream
	open := len(pc.streams)
	pc.mu.Unlock()

	if open >= pc.s.cfg.MaxStreamsPerConn {
		pc.s.stats.refused("streams_per_conn")
		pc.endStream(b.Stream, proto.StatusOverLimit, "too many open parts on this connection")
		return nil
	}
	claims, err := pc.s.parseToken(b.Token)
	if err == nil {
		err = claims.Check(pc.s.id, proto.DirPush, b.Item, int64(b.Off), int64(b.Len))
	}
	if err == nil && (claims.Off != int64(b.Off) || claims.Len != int64(b.Len)) {
		err = proto.Errorf(proto.StatusForbidden, "part %d+%d differs from the ordered %d+%d", b.Off, b.Len, claims.Off, claims.Len)
	}
	if err == nil && !pc.authed {
		pc.authed = true
		pc.wakeSender() // pings from now on
	}
	if err != nil {
		status := proto.TokenStatus(err)
		pc.s.stats.refused("token_" + status.String())
		if status == proto.StatusUnauthorized {
			// A forged or garbled token: nothing more from this peer.
			return proto.Errorf(status, "stream %d: %v", b.Stream, err)
		}
		pc.endStream(b.Stream, status, err.Error())
		return nil
	}
	if claims.Store { // a clip kept whole in memory (clip.go)
		pc.beginStore(b, claims)
		return nil
	}
	if claims.Fwd != "" && claims.Fwd != pc.s.id {
		pc.beginForward(b, claims)
		return nil
	}
	ps := pc.s.takeNeed(claims.Ref, b.Item, int64(b.Off), int64(b.Len))
	if ps != nil {
		// Bind the stream before attaching: once attached, the consumer
		// may cancel at once, and its endStream must find the stream to
		// forget it, or it would stay open on this connection for good.
		pc.mu.Lock()
		pc.streams[b.Stream] = ps
		pc.mu.Unlock()
		pc.s.stats.openParts.Add(1)
		if !ps.attach(pc, b.Stream) {
			pc.removeStream(b.Stream)
			ps = nil
		}
	}
	if ps == nil {
		pc.s.stats.refused("not_wanted")
		pc.endStream(b.Stream, proto.StatusNotWanted, "nobody waits for this part")
		return nil
	}
	pc.s.stats.partsBegun.Add(1)
	pc.queueAck(ps)
	return nil
}

func (pc *pushConn) handleEnd(body []byte) error {
	e, err := proto.DecodePartEnd(body)
	if err != nil {
		return err
	}
	ps := pc.removeStream(e.Stream)
	if ps != nil {
		status := e.Status
		if status == proto.StatusOK {
			status = proto.StatusSourceError // OK is ours to say, not the sender's
		}
		ps.fail(proto.Errorf(status, "publisher ended the part: %s", e.Reason))
	}
	return nil
}

// credit implements source: an acknowledgement is owed to the publisher.
func (pc *pushConn) credit(ps *partStream) { pc.queueAck(ps) }

// end implements source: the publisher is told the part ended.
func (pc *pushConn) end(ps *partStream, status proto.Status, reason string) {
	pc.endStream(ps.stream, status, reason)
}

// endStream forgets stream and tells the publisher it ended with status.
func (pc *pushConn) endStream(stream uint32, status proto.Status, reason string) {
	pc.removeStream(stream)
	if status == proto.StatusOK {
		pc.s.stats.partsDone.Add(1)
	} else {
		pc.s.stats.partsFailed.Add(1)
	}
	frame := proto.PartEnd{Stream: stream, Status: status, Reason: reason}.AppendFrame(nil)
	pc.mu.Lock()
	full := len(pc.ends) >= pc.maxEnds()
	if !full {
		pc.ends = append(pc.ends, frame)
	}
	pc.mu.Unlock()
	if full {
		// Cannot happen while streams are bounded; if it does, the
		// publisher is not reading and is cut off.
		pc.close(proto.StatusOverLimit, "publisher not reading")
		return
	}
	pc.wakeSender()
}

// wakeSender starts the sender if it does not run yet, and wakes it.
func (pc *pushConn) wakeSender() {
	pc.mu.Lock()
	if !pc.sending && !pc.closing {
		pc.sending = true
		pc.sender.Add(1)
		go func() {
			defer pc.sender.Done()
			pc.sendLoop(pc.ctx)
		}()
	}
	pc.mu.Unlock()
	select {
	case pc.ackWake <- struct{}{}:
	default:
	}
}

// removeStream forgets stream and returns it, if it was open.
func (pc *pushConn) removeStream(stream uint32) *partStream {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	ps := pc.streams[stream]
	if ps != nil {
		delete(pc.streams, stream)
		delete(pc.dirty, ps)
		pc.s.stats.openParts.Add(-1)
	}
	return ps
}

// queueAck marks ps as owed an acknowledgement.
func (pc *pushConn) queueAck(ps *partStream) {
	pc.mu.Lock()
	if pc.streams[ps.stream] == ps {
		pc.dirty[ps] = struct{}{}
	}
	pc.mu.Unlock()
	pc.wakeSender()
}

// sendLoop is the connection's only writer.
func (pc *pushConn) sendLoop(ctx context.Context) {
	ping := time.NewTicker(pc.s.cfg.PingInterval)
	defer ping.Stop()
	var frame []byte
	for {
		select {
		case <-pc.done:
			return
		case <-ctx.Done():
			pc.close(proto.StatusUnavailable, errShutdown.Msg)
			return
		case <-ping.C:
			if err := pc.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(pc.s.cfg.WriteTimeout)); err != nil {
				pc.close(proto.StatusOK, "")
				return
			}
			continue
		case <-pc.ackWake:
		}
		// Acks after ends in the same round are harmless: an Ack for an
		// ended stream is ignored by the publisher.
		pc.mu.Lock()
		ends := pc.ends
		pc.ends = nil
		pc.mu.Unlock()
		for _, f := range ends {
			if !pc.write(f) {
				return
			}
		}
		pc.mu.Lock()
		var owed []*partStream
		for ps := range pc.dirty {
			owed = append(owed, ps)
		}
		clear(pc.dirty)
		pc.mu.Unlock()
		for _, ps := range owed {
			a, ok := ps.ackState()
			if !ok {
				continue
			}
			frame = a.AppendFrame(frame[:0])
			if !pc.write(frame) {
				return
			}
		}
	}
}

func (pc *pushConn) write(frame []byte) bool {
	pc.ws.SetWriteDeadline(time.Now().Add(pc.s.cfg.WriteTimeout))
	if err := pc.ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		pc.log.Debug("push write failed", "err", err)
		pc.close(proto.StatusOK, "")
		return false
	}
	return true
}
