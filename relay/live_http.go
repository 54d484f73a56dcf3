package relay

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

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

// httpSkip passes data chunks only, and stops at an EvSocket "complete".
func httpSkip(c *liveChunk) (send, stop bool) {
	if c.eos {
		return false, true
	}
	return c.kind == proto.FrameLiveData, false
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
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Meshup-Relay", s.id)
	h.Set("Trailer", LiveEndTrailer)
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	end := sub.run(httpLiveWriter{w: w, rc: rc, timeout: s.cfg.WriteTimeout, sub: sub}, httpSkip)
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
	if c.Dir != proto.DirRead || c.Item != id || c.Fwd == "" || c.Fwd == s.id {
		return "", proto.ErrTokenScope
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
	ch, _, err := s.openLive(id, true, "", volunteers)
	if err != nil {
		writeError(w, asProtoError(err))
		return
	}
	ch.mu.Lock()
	busy := ch.publisher || !ch.source
	ch.publisher = !busy
	ch.mu.Unlock()
	if busy {
		writeError(w, errLiveBusy)
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
