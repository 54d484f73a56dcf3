package relay

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/proto"
)

// Clips (issue 12). A clip is an item its publisher pushes whole into
// relay memory at publish time, so that it stays readable after the
// publisher leaves, until it expires. The rendezvous orders the whole
// item [0, size) onto up to two relays with a push token whose Claims.Store
// is set; the relay receiving such a part over the push WebSocket writes
// it into a held item (store.go) under the item's own id, counted in its
// memory budget, and acknowledges bytes as they are stored (the same
// credit as any part: a full budget paces the publisher). Once every byte
// is held it tells the rendezvous with a Hold of protocol proto.HoldClip
// carrying the store token (the proof it was ordered to keep it), then
// HoldDone; the rendezvous marks it a holder and redirects reads to it.
// Reads are served by serveHeld, with Range, also through a tunnel.
//
// A clip is held whole (upload.whole): never streamed through the upload
// window, whatever Config.UploadHold says. Like every complete held item
// it is evicted, least recently used first, when a new held item needs
// room (the rendezvous is told with Release), and dropped at its expiry
// (the token's Exp). After the relay registers again it re-announces the
// clip with the same token (upload.go, reannounce).

// beginStore starts receiving part b, ordered with a store token, into a
// held clip. The stream is acknowledged as its bytes are stored.
func (pc *pushConn) beginStore(b proto.PartBegin, claims proto.Claims) {
	s := pc.s
	size := int64(b.Len)
	switch {
	case b.Off != 0 || claims.Size != size:
		s.stats.refused("clip_partial")
		pc.endStream(b.Stream, proto.StatusMalformed, "a clip is stored whole: the store token must cover [0, size)")
		return
	case size > s.cfg.Budget:
		s.stats.refused("clip_too_large")
		pc.endStream(b.Stream, proto.StatusTooLarge, "clip larger than this relay's memory budget")
		return
	}
	if old := s.store.get(b.Item); old != nil {
		// Already held (a repeated order, say from a rendezvous that
		// restarted and did not know): announce it again under the new
		// token, which this rendezvous can check, and take nothing.
		if old.Done() && old.whole {
			old.mu.Lock()
			old.token = b.Token
			old.mu.Unlock()
			s.announceClip(old)
		}
		pc.endStream(b.Stream, proto.StatusNotWanted, "this relay holds the clip already")
		return
	}
	now := s.cfg.Now()
	exp := time.Unix(claims.Exp, 0)
	u := &upload{
		s: s, id: b.Item, protocol: proto.HoldClip, name: claims.Name, mime: claims.MIME, created: now,
		info: uploadInfo{ID: b.Item, Expires: exp},
		wake: make(chan struct{}), size: size, expires: exp,
		rdrs: make(map[*reader]struct{}), lastUsed: now,
		whole: true, token: b.Token,
	}
	if u.mime == "" {
		u.mime = "application/octet-stream"
	}
	ps := &partStream{
		s: s, item: b.Item, off: 0, n: size,
		window: int64(s.cfg.Window),
		wake:   make(chan struct{}, 1),
	}
	if !s.goStart() {
		pc.endStream(b.Stream, proto.StatusUnavailable, errShutdown.Msg)
		return
	}
	s.store.add(u)
	s.store.startSweeper()
	pc.mu.Lock()
	pc.streams[b.Stream] = ps
	pc.mu.Unlock()
	s.stats.openParts.Add(1)
	ps.attach(pc, b.Stream)
	s.stats.partsBegun.Add(1)
	pc.queueAck(ps)
	go func() {
		defer s.wg.Done()
		err := ps.writeTo(s.ctx, clipWriter{ctx: s.ctx, u: u})
		if err != nil {
			pc.log.Info("clip not stored", "item", u.id, "err", err)
			u.Abort(err)
			return
		}
		sealed := s.store.sealedOf(u.id)
		s.announceClip(u)
		if err := u.Finish(); err != nil {
			u.Abort(err)
			return
		}
		if s.store.sealedOf(u.id) != sealed {
			s.announceClip(u) // the sealed metadata came meanwhile (clipSealed): confirm it
		}
		pc.log.Info("clip stored", "item", u.id, "bytes", size, "expires", exp.UTC().Format(time.RFC3339))
	}()
}

// announceClip tells the rendezvous that this relay holds every byte of
// clip u (proto.HoldClip). The rendezvous answers nothing: it marks the
// relay a holder, or ignores a hold it cannot check.
func (s *Server) announceClip(u *upload) {
	l := s.link.Load()
	if l == nil {
		return // re-announced when the relay registers again
	}
	l.send(s.clipHold(u, proto.HoldClip))
}

// clipHold is the Hold that announces clip u, with ref.
func (s *Server) clipHold(u *upload, ref string) proto.Hold {
	sealed := s.store.sealedOf(u.id)
	u.mu.Lock()
	defer u.mu.Unlock()
	return proto.Hold{
		Ref: ref, ID: u.id, Protocol: proto.HoldClip, Name: u.name, MIME: u.mime, Size: u.size, Done: true,
		ExpiresMS: u.expires.UnixMilli(), Token: u.token, Sealed: sealed,
	}
}

// refReannounceClip is the Hold.Ref of the re-announce of a clip with its
// sealed metadata, sent on a new link before reannounce (upload.go) sends
// the generic one (Ref "re") of every held item.
const refReannounceClip = "reclip"

// reannounceClips announces every clip held here, with its sealed
// metadata, to the rendezvous of a new link: one that restarted rebuilds
// the clip from it (rendezvous/clip_restart.go).
func (s *Server) reannounceClips(l *link) {
	for _, u := range s.store.all() {
		u.mu.Lock()
		clip := u.whole && u.token != "" && u.done && !u.gone
		u.mu.Unlock()
		if clip {
			l.send(s.clipHold(u, refReannounceClip))
		}
	}
}

// sealedOf returns the sealed metadata of clip id, or "".
func (st *store) sealedOf(id proto.ItemID) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sealed[id]
}

// clipSealed keeps the sealed metadata the rendezvous hands over for a
// clip held or being received here (proto.Held with Ref HoldClip), in
// memory, counted in the budget (evicting other complete items like any
// held chunk would), and confirms it to the rendezvous by announcing the
// clip again with it once every byte is here: the publisher waits for one
// holder to have it before it may leave (client.WaitClipStored). Nothing
// is kept for a clip not here: the rendezvous hands it over again when the
// clip is announced. Called from the link reader only, one at a time.
func (s *Server) clipSealed(m *proto.Held) {
	if len(m.Sealed) > proto.E2EMaxMeta {
		s.log.Info("sealed clip metadata over the limit ignored", "item", m.ID, "bytes", len(m.Sealed))
		return
	}
	u := s.store.get(m.ID)
	if u == nil || !u.whole {
		return
	}
	old := s.store.sealedOf(m.ID)
	if old == m.Sealed {
		// Handed over again: an announcement went without it (it was sent
		// before the metadata arrived here). Confirm.
		if u.Done() {
			s.announceClip(u)
		}
		return
	}
	grow := int64(len(m.Sealed) - len(old))
	if grow > 0 && !s.store.reserve(grow, u) {
		// Rare: the clip itself fits, 4 KiB more does not and nothing is
		// evictable. The clip stays readable; it is not rebuilt after a
		// restart of the rendezvous from this relay.
		s.stats.refused("clip_sealed_no_memory")
		s.log.Info("sealed clip metadata not kept: memory budget full", "item", m.ID)
		return
	}
	st := &s.store
	st.mu.Lock()
	u.mu.Lock()
	kept := !u.gone && st.items[m.ID] == u
	if kept {
		u.reserved += grow // freed with the clip
		if st.sealed == nil {
			st.sealed = make(map[proto.ItemID]string)
		}
		st.sealed[m.ID] = m.Sealed
	}
	done := u.done
	u.mu.Unlock()
	st.mu.Unlock()
	switch {
	case !kept && grow > 0:
		st.release(grow)
	case kept && grow < 0:
		st.release(-grow)
	}
	if kept && done {
		s.announceClip(u) // the confirmation; a clip still arriving is announced with it when whole
	}
}

// releaseClip drops the clip of m at once, on the rendezvous's word: its
// owner unpublished it. Its memory is freed now (after the responses in
// progress, which finish), and reads that still come with a token are
// answered 410 with m's reason until the clip would have expired.
func (s *Server) releaseClip(m *proto.Release) {
	u := s.store.get(m.ID)
	if u == nil || !u.whole {
		return
	}
	reason := m.Reason
	if reason == "" || len(reason) > 300 {
		reason = "clip " + m.ID.String() + " was unpublished by its owner"
	}
	err := proto.Errorf(proto.StatusGone, "%s", reason)
	u.remove(err, "")
	u.mu.Lock()
	until := u.expires
	u.mu.Unlock()
	s.store.mu.Lock()
	s.store.markDroppedLocked(m.ID, err, until)
	s.store.mu.Unlock()
	s.stats.clipsReleased.Add(1)
	s.log.Info("clip released: unpublished by its owner", "item", m.ID)
}

// clipWriter stores a clip's bytes as the part stream delivers them: a
// Write returns once the bytes are held (it waits while the budget is
// full), so acknowledgements say "stored".
type clipWriter struct {
	ctx context.Context
	u   *upload
}

func (w clipWriter) Write(p []byte) (int, error) { return w.u.Write(w.ctx, p) }

// clipCounters count clips.
type clipCounters struct {
	clipsReleased atomic.Int64 // clips dropped on the rendezvous's Release: unpublished
}

// ClipStats counts the clips held here.
type ClipStats struct {
	Held     int   `json:"held"`     // clips held now, every byte here
	Sealed   int   `json:"sealed"`   // of which with their sealed metadata (encrypted clips)
	Released int64 `json:"released"` // clips dropped because their owner unpublished them
}

func (s *Server) clipStats() ClipStats {
	out := ClipStats{Released: s.stats.clipsReleased.Load()}
	for _, u := range s.store.all() {
		u.mu.Lock()
		clip := u.whole && u.token != "" && u.done && !u.gone
		u.mu.Unlock()
		if clip {
			out.Held++
			if s.store.sealedOf(u.id) != "" {
				out.Sealed++
			}
		}
	}
	return out
}
