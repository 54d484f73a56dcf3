package relay

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// EvSocket (issue 12): the WebSocket protocol of the npm package
// evsocket-client, as binary-streaming uses it, served at
// /v1/evsocket/{channel} over a live channel. The channel name in the URL
// is the channel's secret (proto.LiveID): an unmodified client that only
// knows the URL may send into the channel and receive from it, like a
// room in EvSocket. Every member receives the events of the others (not
// its own): text events as they were sent, binary "streaming" chunks as
// binary messages. HTTP readers of /v1/live/{id} read the "streaming"
// payloads, and their body ends cleanly at "complete". A member that
// joins late gets the last "start" first, then the live edge. The channel
// ends when its last member leaves.
//
// A member that falls behind the live edge by more than LiveConfig.Queue
// bytes is closed with code 1008 and a reason; when its connection is so
// stuck that even the close frame cannot be written within a second, the
// connection is dropped. Either way the reason is logged and counted.

// EvSocket close codes.
const (
	evCloseNormal  = websocket.CloseNormalClosure     // 1000: the channel ended
	evCloseSlow    = websocket.ClosePolicyViolation   // 1008: fell behind the live edge
	evCloseAway    = websocket.CloseGoingAway         // 1001: the relay is shutting down
	evCloseFailure = websocket.CloseInternalServerErr // 1011: the channel's source was lost
)

// wsLiveWriter writes a channel's chunks as EvSocket messages.
type wsLiveWriter struct {
	ws      *websocket.Conn
	timeout time.Duration
	sub     *liveSub
	buf     []byte
}

func (ww *wsLiveWriter) write(c *liveChunk) error {
	ww.ws.SetWriteDeadline(time.Now().Add(ww.timeout))
	if ww.sub.cutF.Load() {
		return errLiveEnded
	}
	switch c.kind {
	case proto.FrameLiveData:
		ww.buf, _ = proto.AppendEvBinary(ww.buf[:0], proto.EvStreaming, c.b)
		return ww.ws.WriteMessage(websocket.BinaryMessage, ww.buf)
	case proto.FrameLiveEvent:
		return ww.ws.WriteMessage(websocket.TextMessage, c.b)
	case proto.FrameLiveBinary:
		return ww.ws.WriteMessage(websocket.BinaryMessage, c.b)
	}
	return nil
}

func (ww *wsLiveWriter) flush() error { return nil }

// handleEvSocket serves GET /v1/evsocket/{channel}.
func (s *Server) handleEvSocket(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	id, err := proto.LiveID(name)
	if err != nil {
		s.stats.refused("live_secret")
		writeError(w, proto.Errorf(proto.StatusForbidden, "an EvSocket channel name is %d to %d characters of A-Z a-z 0-9 - _ . ~", proto.MinLiveSecret, proto.MaxLiveSecret))
		return
	}
	if !s.originAllowed(r) {
		s.stats.refused("origin")
		writeError(w, proto.Errorf(proto.StatusOriginRefused, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	volunteers, _ := strconv.ParseBool(r.URL.Query().Get("volunteers"))
	ch, _, err := s.openLive(id, true, "", volunteers, false)
	if err != nil {
		writeError(w, asProtoError(err))
		return
	}
	if ch.isSealed() {
		writeError(w, errLiveSealed)
		return
	}
	ch.mu.Lock()
	ch.members++
	ch.mu.Unlock()
	defer s.leaveEvSocket(ch)
	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.HandshakeTimeout,
		WriteBufferPool:  s.wbufs,
		Subprotocols:     websocket.Subprotocols(r),                // evsocket-client's options.protocol, echoed
		CheckOrigin:      func(*http.Request) bool { return true }, // checked above
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	ws.SetReadLimit(int64(s.cfg.Live.MaxChunk) + 1 + 2*255)
	sub, err := ch.subscribe(s.ctx, subWS, "")
	if err != nil {
		e := asProtoError(err)
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(evCloseSlow, proto.TruncateReason(e.Msg)), time.Now().Add(time.Second))
		return
	}
	defer ch.unsubscribe(sub)
	sub.setKick(func() { ws.UnderlyingConn().SetWriteDeadline(time.Now().Add(liveCutGrace)) })
	log := s.log.With("channel", id, "member", sub.id, "peer", r.RemoteAddr)

	// The greeting, then the last "start" for a late member: written
	// before the writer starts, which alone writes from then on.
	greet, _ := json.Marshal(proto.EvMessage{Event: proto.EvSync, Data: mustJSON(proto.EvSyncData{ID: strconv.FormatUint(sub.id, 10)})})
	ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if ws.WriteMessage(websocket.TextMessage, greet) != nil {
		return
	}
	ch.mu.Lock()
	start := ch.lastStart
	ch.mu.Unlock()
	if start != nil && ws.WriteMessage(websocket.TextMessage, start) != nil {
		return
	}

	if !s.goStart() {
		return
	}
	readDone := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer s.wg.Done()
		defer close(writerDone)
		end := sub.run(&wsLiveWriter{ws: ws, timeout: s.cfg.WriteTimeout, sub: sub}, func(c *liveChunk) (bool, bool) { return c.origin != sub, false })
		select {
		case <-readDone:
			return // the member left
		default:
		}
		code := evCloseFailure
		switch {
		case end.Status == proto.StatusOK:
			code = evCloseNormal
		case end.Status == proto.StatusOverLimit:
			code = evCloseSlow
		case s.ctx.Err() != nil:
			code = evCloseAway
		}
		if end.Status != proto.StatusOK {
			log.Info("evsocket member closed", "status", int(end.Status), "reason", end.Reason)
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, proto.TruncateReason(end.Reason)), time.Now().Add(liveCutGrace))
		ws.UnderlyingConn().SetReadDeadline(time.Now().Add(liveCutGrace))
	}()
	s.readEvSocket(ws, ch, sub)
	close(readDone)
	ch.unsubscribe(sub)
	sub.notify()
	ws.UnderlyingConn().SetWriteDeadline(time.Now())
	<-writerDone
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// readEvSocket reads a member's messages into the channel until it leaves.
func (s *Server) readEvSocket(ws *websocket.Conn, ch *liveChan, sub *liveSub) {
	for {
		typ, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		switch typ {
		case websocket.TextMessage:
			m, err := proto.DecodeEvText(b)
			if err != nil || len(m.Event) >= len(proto.EvPrefix) && m.Event[:len(proto.EvPrefix)] == proto.EvPrefix {
				continue // the library's own (join-channel, authenticate) or malformed
			}
			if m.Event == proto.EvStart {
				ch.mu.Lock()
				ch.lastStart = b
				ch.mu.Unlock()
			}
			if !ch.source {
				continue
			}
			ch.appendChunk(proto.FrameLiveEvent, b, sub, m.Event == proto.EvComplete)
		case websocket.BinaryMessage:
			ev, payload, err := proto.DecodeEvBinary(b)
			if err != nil || !ch.source {
				continue
			}
			if ev == proto.EvStreaming {
				ch.appendChunk(proto.FrameLiveData, payload, sub, false)
			} else {
				ch.appendChunk(proto.FrameLiveBinary, b, sub, false)
			}
		}
	}
}

// leaveEvSocket counts a member out; the last one ends the channel when
// no HTTP publisher writes into it.
func (s *Server) leaveEvSocket(ch *liveChan) {
	ch.mu.Lock()
	ch.members--
	last := ch.members == 0 && !ch.publisher && ch.source
	ch.mu.Unlock()
	if last {
		ch.finish(proto.LiveEnd{Status: proto.StatusOK, Reason: "the last EvSocket member left"})
	}
}
