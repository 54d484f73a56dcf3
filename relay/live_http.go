package relay

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// Live channels over HTTP (live.go): readers get a chunked body from the
// live edge; a publisher PUTs a chunked body of unknown length.

// httpLiveWriter writes the data chunks of a channel as a chunked body.
type httpLiveWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	sub     *liveSub
}

func (hw httpLiveWriter) write(c *liveChunk) error {
	hw.rc.SetWriteDeadline(time.Now().Add(hw.timeout))
	if hw.sub.cutF.Load() {
		return errLiveEnded
	}
	_, err := hw.w.Write(c.b)
	return err
}

func (hw httpLiveWriter) flush() error { return hw.rc.Flush() }

// httpSkip passes data chunks (a sealed channel's records) only, and
// stops at an EvSocket "complete".
func httpSkip(c *liveChunk) (send, stop bool) {
	if c.eos {
		return false, true
	}
	return c.kind == proto.FrameLiveData || c.kind == proto.FrameLiveRecord, false
}

// LiveEndTrailer is the trailer of a live channel's body that ended
// cleanly. A body that did not end cleanly (the subscriber was cut off,
// the publisher or an upstream relay was lost) is reset instead, so that
// no reader mistakes it for a whole stream; the reason is logged and
// counted (GET /v1/live/stats).
const LiveEndTrailer = "Meshup-Live-End"

// handleLiveGet serves GET /v1/live/{id}: the channel from the live edge,
// as a chunked body. A channel this relay does not carry is subscribed
// from the relay named by the read token's fwd claim (the rendezvous's
// redirect), once for all readers here.
func (s *Server) handleLiveGet(w http.ResponseWriter, r *http.Request) {
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil {
		writeError(w, errLiveNotFound)
		return
	}
	if websocket.IsWebSocketUpgrade(r) {
		s.handleLiveWSPush(w, r, id) // live_ws.go
		return
	}
	proto.SetPublicCORS(w.Header()) // browsers read sealed channels (the link's page)
	ch := s.lookupLive(id)
	if ch == nil {
		up, perr := s.liveUpstreamOf(r, id)
		if perr != nil {
			writeError(w, perr)
			return
		}
		if ch, err = s.subscribeUpstream(id, up); err != nil {
			writeError(w, asProtoError(err))
			return
		}
	}
	select {
	case <-ch.ready:
	case <-r.Context().Done():
		return
	}
	sub, err := ch.subscribe(r.Context(), subHTTP, "")
	if err != nil {
		ch.mu.Lock()
		end := ch.end
		ch.mu.Unlock()
		if err == errLiveEnded && end.Status != proto.StatusOK {
			err = proto.Errorf(end.Status, "%s", end.Reason) // e.g. the upstream relay unreachable
		}
		writeError(w, asProtoError(err))
		return
	}
	defer ch.unsubscribe(sub)
	rc := http.NewResponseController(w)
	sub.setKick(func() { rc.SetWriteDeadline(time.Now().Add(liveCutGrace)) })
	h := w.Header()
	sealed := ch.isSealed()
	if sealed {
		h.Set("Content-Type", proto.LiveContentType)
	} else {
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Meshup-Relay", s.id)
	h.Set("Trailer", LiveEndTrailer)
	w.WriteHeader(http.StatusOK)
	hw := httpLiveWriter{w: w, rc: rc, timeout: s.cfg.WriteTimeout, sub: sub}
	if sub.head != nil { // a sealed channel's head comes first
		if hw.write(&liveChunk{kind: proto.FrameLiveRecord, b: sub.head}) != nil {
			return
		}
	}
	rc.Flush()
	end := sub.run(hw, httpSkip)
	if end.Status == proto.StatusOK {
		h.Set(LiveEndTrailer, "ok")
		return
	}
	s.log.Info("live reader ended", "channel", id, "status", int(end.Status), "reason", end.Reason)
	panic(http.ErrAbortHandler) // reset: never a clean end
}

// liveUpstreamOf checks the read token of r for channel id and returns
// the relay to subscribe to.
func (s *Server) liveUpstreamOf(r *http.Request, id proto.ItemID) (string, *proto.Error) {
	tok := readToken(r)
	if tok == "" {
		return "", errLiveNotFound
	}
	c, err := s.parseToken(tok)
	if err != nil {
		s.stats.refused("token")
		return "", asProtoError(err)
	}
	if c.Relay != s.id {
		return "", proto.ErrTokenAudience
	}
	if c.Dir != proto.DirRead || c.Item != id || c.Fwd == "" {
		return "", proto.ErrTokenScope
	}
	if c.Fwd == s.id {
		// The rendezvous sent the reader to the channel's source: its
		// publisher has not reached this relay yet (the reader came
		// first) or has left. Not found, as without a token; the reader
		// may ask again.
		return "", errLiveNotFound
	}
	return c.Fwd, nil
}

// handleLivePush serves PUT (or POST) /v1/live/{id}: the publisher's
// bytes, a chunked body of unknown length, with the channel's secret as
// bearer token. The body's end is the channel's clean end.
func (s *Server) handleLivePush(w http.ResponseWriter, r *http.Request) {
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil {
		writeError(w, errLiveNotFound)
		return
	}
	secret, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if want, err := proto.LiveID(secret); err != nil || want != id {
		s.stats.refused("live_secret")
		writeError(w, errLiveSecret)
		return
	}
	volunteers, _ := strconv.ParseBool(r.URL.Query().Get("volunteers"))
	sealed := isLive1(r.Header.Get("Content-Type"))
	ch, err := s.takeLivePublisher(id, volunteers, sealed)
	if err != nil {
		writeError(w, asProtoError(err))
		return
	}
	if sealed {
		s.pushLiveRecords(w, r, ch)
		return
	}
	// A live body has no deadline (limits.go leaves /v1/live/ alone): a
	// quiet publisher is not a slow one; TCP keep-alive finds dead peers.
	var n int64
	end := proto.LiveEnd{Status: proto.StatusOK, Reason: "the publisher ended the channel"}
	for {
		buf := make([]byte, s.cfg.Live.MaxChunk)
		k, rerr := r.Body.Read(buf)
		if k > 0 {
			n += int64(k)
			if err := ch.appendChunk(proto.FrameLiveData, buf[:k:k], nil, false); err != nil {
				break
			}
		}
		if rerr != nil {
			if !isEOF(rerr) {
				end = proto.LiveEnd{Status: proto.StatusSourceError, Reason: "the publisher's connection was lost"}
			}
			break
		}
	}
	ch.finish(end)
	writeJSONStatus(w, http.StatusOK, map[string]any{"channel": id, "bytes": n})
}

// isLive1 reports whether a Content-Type names a live1 record stream.
func isLive1(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == proto.LiveContentType
}

// takeLivePublisher opens channel id as its source for a publisher, and
// marks it taken: one publisher per channel, of the right kind.
func (s *Server) takeLivePublisher(id proto.ItemID, volunteers, sealed bool) (*liveChan, error) {
	ch, _, err := s.openLive(id, true, "", volunteers, sealed)
	if err != nil {
		return nil, err
	}
	ch.mu.Lock()
	busy := ch.publisher || !ch.source
	wrong := ch.sealed.Load() != sealed
	if !busy && !wrong {
		ch.publisher = true
	}
	ch.mu.Unlock()
	switch {
	case busy:
		return nil, errLiveBusy
	case wrong && sealed:
		return nil, errLivePlain
	case wrong:
		return nil, errLiveSealed
	}
	return ch, nil
}

// pushLiveRecords reads a sealed channel's records from a PUT body: one
// ring chunk per record, until the last record (the clean end). A
// malformed record, or a body that ends without the last record, ends the
// channel not cleanly.
func (s *Server) pushLiveRecords(w http.ResponseWriter, r *http.Request, ch *liveChan) {
	var n, records int64
	var bad error
	end := proto.LiveEnd{Status: proto.StatusSourceError, Reason: "the publisher's stream ended without its end mark"}
	for {
		rec, kind, _, err := proto.ReadLiveRecord(r.Body, nil)
		if err != nil {
			switch {
			case errors.Is(err, proto.ErrLiveRecord) && !errors.Is(err, io.ErrUnexpectedEOF):
				bad = err
				end = proto.LiveEnd{Status: proto.StatusMalformed, Reason: "the publisher sent a bad record: " + err.Error()}
				s.stats.refused("live_record")
			case !isEOF(err):
				end = proto.LiveEnd{Status: proto.StatusSourceError, Reason: "the publisher's connection was lost"}
			}
			break
		}
		n += int64(len(rec))
		records++
		if ch.appendRecord(rec, kind) != nil || kind == proto.LiveLast {
			end = proto.LiveEnd{Status: proto.StatusOK}
			break
		}
	}
	if end.Status != proto.StatusOK {
		ch.finish(end)
	}
	if bad != nil {
		// The rest of the body is not read: close rather than drain it.
		w.Header().Set("Connection", "close")
		writeError(w, proto.Errorf(proto.StatusMalformed, "%s", end.Reason))
		return
	}
	ch.mu.Lock()
	e := ch.end
	ch.mu.Unlock()
	writeJSONStatus(w, http.StatusOK, map[string]any{"channel": ch.id, "bytes": n, "records": records, "status": int(e.Status), "reason": e.Reason})
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

func writeJSONStatus(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// handleLiveStats serves GET /v1/live/stats.
func (s *Server) handleLiveStats(w http.ResponseWriter, r *http.Request) {
	writeJSONStatus(w, http.StatusOK, s.LiveStats())
}
