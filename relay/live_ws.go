package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// The WebSocket publish of sealed live channels (proto/livee2e.go):
// browsers cannot stream a PUT body over HTTP/1.1, so they publish over a
// WebSocket at the same push URL (GET /v1/live/{id}, Upgrade: websocket):
//
//	client -> text   {"secret": SECRET, "enc": "live1"}   first message, within HandshakeTimeout
//	relay  -> text   {"ok": true}                         or a close 4000+proto.Status with a reason
//	client -> binary one whole record per message
//	relay  -> text   {"subscribers": N}                   when the count on this relay changed (at most once a second)
//	...      a last record ends the channel: the relay closes 1000 after it
//
// A message that is not exactly one record (length out of bounds, an
// unknown kind, bytes after the record), a message over LiveMaxRecord
// bytes, or a text message after the first, ends the channel with the
// reason and closes 4000+StatusMalformed (4200) or 4000+StatusTooLarge
// (4201). A channel ended from elsewhere closes with 4000+its status, or
// 1001 when the relay shuts down. A WebSocket lost without a last record ends the channel not
// cleanly: readers see it end without its end mark. Origins are checked
// as for the relay's other browser endpoints (AllowedOrigins, and the
// rendezvous's origins).

// liveWSHello is the first message of a WebSocket publisher.
type liveWSHello struct {
	Secret string `json:"secret"`
	Enc    string `json:"enc"`
}

// liveWSSubsEvery is how often a WebSocket publisher is told the
// subscriber count, when it changed.
const liveWSSubsEvery = time.Second

// handleLiveWSPush serves the WebSocket publish of sealed channel id.
func (s *Server) handleLiveWSPush(w http.ResponseWriter, r *http.Request, id proto.ItemID) {
	if !s.originAllowed(r) {
		s.stats.refused("origin")
		writeError(w, proto.Errorf(proto.StatusOriginRefused, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.HandshakeTimeout,
		WriteBufferPool:  s.wbufs,
		CheckOrigin:      func(*http.Request) bool { return true }, // checked above
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	log := s.log.With("channel", id, "peer", r.RemoteAddr)
	closeWith := func(code int, reason string) {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, proto.TruncateReason(reason)), time.Now().Add(s.cfg.WriteTimeout))
		// Let the client read the close before the connection goes.
		ws.SetReadDeadline(time.Now().Add(liveCutGrace))
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	}
	fail := func(e *proto.Error) {
		log.Info("live WebSocket publisher refused", "status", int(e.Status), "reason", e.Msg)
		closeWith(e.Status.CloseCode(), e.Msg)
	}

	// The first message: the secret and the format.
	ws.SetReadLimit(4 << 10)
	ws.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	typ, b, err := ws.ReadMessage()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			return // gorilla closed with 1009
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			fail(&proto.Error{Status: proto.StatusTimeout, Msg: "no first message {\"secret\",\"enc\"} in time"})
		}
		return
	}
	var hello liveWSHello
	if typ != websocket.TextMessage || json.Unmarshal(b, &hello) != nil {
		s.stats.refused("live_hello")
		fail(&proto.Error{Status: proto.StatusMalformed, Msg: `the first message must be the text {"secret": SECRET, "enc": "live1"}`})
		return
	}
	if hello.Enc != proto.LiveEncVersion {
		s.stats.refused("live_hello")
		fail(proto.Errorf(proto.StatusMalformed, "enc %q: this relay takes %q only over a WebSocket", hello.Enc, proto.LiveEncVersion))
		return
	}
	if want, err := proto.LiveID(hello.Secret); err != nil || want != id {
		s.stats.refused("live_secret")
		fail(errLiveSecret)
		return
	}
	volunteers, _ := strconv.ParseBool(r.URL.Query().Get("volunteers"))
	ch, err := s.takeLivePublisher(id, volunteers, true)
	if err != nil {
		fail(asProtoError(err))
		return
	}
	ws.SetReadDeadline(time.Time{}) // a quiet publisher is not a slow one
	ws.SetReadLimit(0)              // bounded below, message by message
	ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"ok":true}`)); err != nil {
		ch.finish(proto.LiveEnd{Status: proto.StatusSourceError, Reason: "the publisher's WebSocket was lost"})
		return
	}
	log.Info("live WebSocket publisher", "volunteers", volunteers)
	// A channel ended from elsewhere (the relay shutting down, a full
	// budget) closes the socket with its reason.
	stopEnd := context.AfterFunc(ch.ctx, func() {
		ch.mu.Lock()
		end, ended := ch.end, ch.ended
		ch.mu.Unlock()
		if ended && end.Status == proto.StatusOK {
			return // the publisher's own last record: closed below
		}
		if !ended { // the relay's context: shutting down
			end = proto.LiveEnd{Status: proto.StatusUnavailable, Reason: errShutdown.Msg}
		}
		code := end.Status.CloseCode()
		if s.ctx.Err() != nil {
			code = websocket.CloseGoingAway
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, proto.TruncateReason(end.Reason)), time.Now().Add(liveCutGrace))
		ws.UnderlyingConn().SetReadDeadline(time.Now().Add(liveCutGrace))
	})
	defer stopEnd()

	// The subscriber count, now and then, from one goroutine (the only
	// writer of data messages; closes are control frames).
	stopSubs := make(chan struct{})
	subsDone := make(chan struct{})
	go func() {
		defer close(subsDone)
		t := time.NewTicker(liveWSSubsEvery)
		defer t.Stop()
		last := -1
		for {
			ch.mu.Lock()
			n := len(ch.subs)
			ch.mu.Unlock()
			if n != last {
				last = n
				ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
				if ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"subscribers":%d}`, n)) != nil {
					return
				}
			}
			select {
			case <-t.C:
			case <-stopSubs:
				return
			case <-ch.ctx.Done():
				return
			}
		}
	}()
	defer func() {
		close(stopSubs)
		<-subsDone
	}()

	var records int64
	for {
		typ, mr, err := ws.NextReader()
		if err != nil {
			ch.finish(proto.LiveEnd{Status: proto.StatusSourceError, Reason: "the publisher's WebSocket was lost before the channel's end mark"})
			log.Info("live WebSocket publisher lost", "records", records, "err", err)
			return
		}
		if typ != websocket.BinaryMessage {
			e := &proto.Error{Status: proto.StatusMalformed, Msg: "a text message after the first: records are binary messages"}
			ch.finish(proto.LiveEnd{Status: e.Status, Reason: "the publisher sent a bad record: " + e.Msg})
			fail(e)
			return
		}
		rec, err := io.ReadAll(io.LimitReader(mr, proto.LiveMaxRecord+1))
		if err != nil {
			ch.finish(proto.LiveEnd{Status: proto.StatusSourceError, Reason: "the publisher's WebSocket was lost before the channel's end mark"})
			return
		}
		if len(rec) > proto.LiveMaxRecord {
			s.stats.refused("live_record")
			e := proto.Errorf(proto.StatusTooLarge, "a message over %d bytes: a record is at most that", proto.LiveMaxRecord)
			ch.finish(proto.LiveEnd{Status: e.Status, Reason: "the publisher sent a bad record: " + e.Msg})
			fail(e)
			return
		}
		kind, _, err := proto.ParseLiveRecord(rec)
		if err != nil {
			s.stats.refused("live_record")
			e := proto.Errorf(proto.StatusMalformed, "message %d is not one record: %v", records, err)
			ch.finish(proto.LiveEnd{Status: e.Status, Reason: "the publisher sent a bad record: " + e.Msg})
			fail(e)
			return
		}
		records++
		if err := ch.appendRecord(rec, kind); err != nil {
			fail(asProtoError(err))
			return
		}
		if kind == proto.LiveLast {
			log.Info("live WebSocket publisher ended the channel", "records", records)
			closeWith(websocket.CloseNormalClosure, "the channel ended")
			return
		}
	}
}
