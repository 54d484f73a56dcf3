package rendezvous

import (
	"maps"
	"time"

	"github.com/meshup/meshup/proto"
)

// Clips across a restart of the rendezvous, and clips unpublished by their
// owner (issue 12).
//
// Soft state. A relay keeps, with each clip it holds, the store token it
// received the clip under and, for an encrypted clip, its sealed metadata,
// which this rendezvous hands it (proto.Held with Ref proto.HoldClip and
// Sealed) when it marks it a holder and whenever the publisher delivers
// the metadata later (an encrypted item's metadata follows its Published).
// After it registers again it announces both (proto.Hold.Sealed). A
// rendezvous that does not know the clip any more (it restarted) rebuilds
// it from the first announcement that checks out: the token, signed with
// this rendezvous's key (the same key across restarts with --identity),
// gives the id, size, encryption, name, type, validator time and expiry;
// the announcement gives the sealed metadata. The publisher need not come
// back. A relay confirms it keeps the metadata by announcing the clip again
// with it; GET /v1/items/{id}/meta counts those holders (sealed_holders),
// and the publisher waits for one before it leaves. A token of a
// rendezvous that predates these fields (no Enc, no Modified) rebuilds
// nothing: it cannot tell an encrypted clip from a plaintext one.
//
// Hostile holders. A relay can announce only clips it was ordered to store
// (the token names it, the clip and its size), so it cannot make up a clip
// id or take over one published by someone else. What it could forge is
// the sealed metadata: a holder never replaces metadata the clip has; it
// fills it in only for a clip without one and without a publisher online
// (rebuilt after a restart), and a later announcement that differs is not
// taken (counted in ClipStats.MetaIgnored). The publisher, reclaiming its
// clip with the owner secret, replaces it. Forged metadata cannot pass at
// the reader either: it is sealed with a key derived from the link's key
// and the item id, and a reader whose metadata does not open refuses the
// item (client.ErrWrongKey: "its sealed name and type do not open"); the
// bytes are authenticated chunk by chunk in the same way.
//
// Unpublish. When its owner unpublishes a clip, the rendezvous tells every
// holder, and every relay receiving a copy, to drop it (proto.Release,
// rendezvous -> relay): the relay frees the memory at once and answers
// reads that still come with 410. The rendezvous remembers the id until
// the clip would have expired (at most Config.MaxUnpublishedClips ids), so that a
// holder whose link was down, re-announcing it, is told again rather than
// bringing it back.

// checkSealed checks the sealed metadata of clip announcement m, whose
// store token gave c: bounded, and only for an encrypted clip.
func checkSealed(c proto.Claims, m *proto.Hold) error {
	switch {
	case len(m.Sealed) > proto.E2EMaxMeta:
		return proto.Errorf(proto.StatusTooLarge, "sealed metadata of %d bytes over the limit of %d", len(m.Sealed), proto.E2EMaxMeta)
	case m.Sealed != "" && c.Enc == "":
		return proto.Errorf(proto.StatusMalformed, "sealed metadata for a plaintext clip")
	}
	return nil
}

// rebuildClipLocked makes the clip of announcement m, which this
// rendezvous does not know, from its store token c (checked) and m's
// sealed metadata, held by relay r. It returns nil when a limit refuses
// it. The caller holds s.mu.
func (s *Server) rebuildClipLocked(r *relayConn, m *proto.Hold, c proto.Claims, now time.Time) *item {
	if !describesClip(c) {
		r.log.Debug("clip not rebuilt: its store token predates Enc and Modified", "item", m.ID)
		return nil
	}
	if _, ok := s.clips.unpublished[m.ID]; ok {
		// Released while the relay's link was down: tell it again.
		r.enqueue(&proto.Release{ID: m.ID, Status: proto.StatusGone, Reason: "clip " + m.ID.String() + " was unpublished by its owner"})
		s.stats.clipReleased.Add(1)
		return nil
	}
	if len(s.items) >= s.cfg.MaxItems {
		r.log.Info("clip not rebuilt: the server holds the most items", "item", m.ID, "limit", s.cfg.MaxItems)
		return nil
	}
	expires := time.Unix(c.Exp, 0)
	if !now.Before(expires) {
		return nil
	}
	mime := c.MIME
	if mime == "" {
		mime = defaultMIME
	}
	it := &item{
		id: m.ID, kind: proto.KindClip, name: c.Name, mime: mime, size: c.Size,
		enc: c.Enc, meta: m.Sealed, modified: max(c.Modified, 0),
		published: now, expires: expires, offlineSince: now,
	}
	s.countItemLocked(it, 1)
	s.items[it.id] = it
	s.stats.clipRebuilt.Add(1)
	r.log.Info("clip rebuilt from its holder's announcement", "item", it.id, "size", it.size, "encrypted", it.enc != "", "expires", expires.UTC().Format(time.RFC3339))
	return it
}

// refReannounceClip is the Hold.Ref of a relay's re-announce of a clip
// with its sealed metadata (relay/clip.go), sent before the generic
// re-announce of every held item (Ref "re"), which carries none.
const refReannounceClip = "reclip"

// describesClip reports whether store token c describes its clip fully:
// it says the encryption. Tokens of rendezvous before Enc and Modified
// were added have neither; since then a plaintext clip's token always has
// a Modified (its validator time), an encrypted one's an Enc. Such an old
// token cannot tell an encrypted clip from a plaintext one, so no clip is
// rebuilt from it.
func describesClip(c proto.Claims) bool { return c.Enc != "" || c.Modified != 0 }

// syncSealedLocked settles the sealed metadata of clip it with what its
// holder r announced in m: a clip without metadata and without a
// publisher online takes it; a holder whose copy differs is handed the
// clip's own. The caller holds s.mu.
func (s *Server) syncSealedLocked(r *relayConn, it *item, m *proto.Hold) {
	sealed := m.Sealed
	if sealed != "" {
		if s.clips.sealedBy == nil {
			s.clips.sealedBy = map[proto.ItemID]map[string]string{}
		}
		if s.clips.sealedBy[it.id] == nil {
			s.clips.sealedBy[it.id] = map[string]string{}
		}
		s.clips.sealedBy[it.id][r.id] = sealed
	}
	if it.enc == "" || sealed == it.meta || sealed == "" && m.Ref == "re" {
		return // the generic re-announce follows the relay's own, with it
	}
	if it.meta == "" && len(it.members) == 0 {
		it.meta = sealed
		return
	}
	if sealed != "" {
		s.stats.clipMetaSkip.Add(1)
		r.log.Info("clip's announced sealed metadata not taken: the clip has its own", "item", it.id)
	}
	if it.meta != "" {
		r.enqueue(&proto.Held{Ref: proto.HoldClip, ID: it.id, ExpiresMS: it.expires.UnixMilli(), Sealed: it.meta})
	}
}

// sealedHoldersLocked sets m.SealedHolders for encrypted clip it: the
// live holders whose last announcement carried its sealed metadata. The
// caller holds s.mu.
func (s *Server) sealedHoldersLocked(it *item, m *ItemMeta, now time.Time) {
	if it.enc == "" || it.meta == "" {
		return
	}
	n := 0
	for id := range it.holders {
		if r := s.relays[id]; r != nil && s.relayAlive(r, now) && s.clips.sealedBy[it.id][id] == it.meta {
			n++
		}
	}
	m.SealedHolders = &n
}

// clipMetaChangedLocked hands the new sealed metadata of clip it to its
// holders and to the relays receiving a copy. The caller holds s.mu.
func (s *Server) clipMetaChangedLocked(it *item) {
	if it.kind != proto.KindClip || it.meta == "" {
		return
	}
	for _, r := range s.clipRelaysLocked(it) {
		r.enqueue(&proto.Held{Ref: proto.HoldClip, ID: it.id, ExpiresMS: it.expires.UnixMilli(), Sealed: it.meta})
	}
}

// releaseClipLocked tells the holders of clip it, which its owner
// unpublished, and the relays receiving a copy of it, to drop it, and
// forgets its store orders (their publishers are told to stop). The caller
// holds s.mu.
func (s *Server) releaseClipLocked(it *item) {
	if it.kind != proto.KindClip {
		return
	}
	rel := &proto.Release{ID: it.id, Status: proto.StatusGone, Reason: "clip " + it.id.String() + " was unpublished by its owner"}
	for _, r := range s.clipRelaysLocked(it) {
		if r.enqueue(rel) {
			s.stats.clipReleased.Add(1)
		}
		if r.held != nil {
			delete(r.held, it.id)
		}
	}
	clear(it.holders)
	for id, o := range s.clips.orders {
		if o.item == it.id {
			delete(s.clips.orders, id)
			o.sess.enqueue(&proto.Cancel{Order: o.id})
		}
	}
	delete(s.clips.failed, it.id)
	delete(s.clips.srcFailed, it.id)
	delete(s.clips.sealedBy, it.id)
	s.noteUnpublishedLocked(it.id, it.expires)
}

// noteUnpublishedLocked remembers that clip id was unpublished, until
// expires. The caller holds s.mu.
func (s *Server) noteUnpublishedLocked(id proto.ItemID, expires time.Time) {
	if expires.IsZero() {
		return
	}
	if s.clips.unpublished == nil {
		s.clips.unpublished = map[proto.ItemID]time.Time{}
	}
	if limit := s.cfg.MaxUnpublishedClips; len(s.clips.unpublished) >= limit {
		// The expired ones go first; then the soonest to expire, which
		// are the oldest (one ClipTTL for all), until there is room.
		now := s.cfg.Now()
		maps.DeleteFunc(s.clips.unpublished, func(_ proto.ItemID, exp time.Time) bool { return !now.Before(exp) })
		for len(s.clips.unpublished) >= limit {
			var first proto.ItemID
			var firstExp time.Time
			for k, exp := range s.clips.unpublished {
				if firstExp.IsZero() || exp.Before(firstExp) {
					first, firstExp = k, exp
				}
			}
			delete(s.clips.unpublished, first)
		}
	}
	s.clips.unpublished[id] = expires
}

// clipRelaysLocked returns the registered relays holding clip it or
// receiving a copy of it. The caller holds s.mu.
func (s *Server) clipRelaysLocked(it *item) []*relayConn {
	seen := map[*relayConn]bool{}
	var out []*relayConn
	add := func(r *relayConn) {
		if r != nil && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for id := range it.holders {
		add(s.relays[id])
	}
	for _, o := range s.clips.orders {
		if o.item == it.id {
			add(o.relay)
		}
	}
	return out
}
