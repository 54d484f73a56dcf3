package rendezvous

import (
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/proto"
)

// Clips (issue 12). A clip (proto.KindClip: text or an image from the
// clipboard, or any small file, up to Config.MaxClipSize) is pushed whole
// into relay memory at publish time, so that it stays readable after its
// publisher leaves, until it expires (Config.ClipTTL, told to the
// publisher in Published.ExpiresMS and to readers in an Expires header).
//
//	publisher                 rendezvous                        relay
//	publish {kind clip}  -->  refuse now if over MaxClipSize, or if no
//	                          live relay has the room (budget less
//	                          reserved, from heartbeats)
//	                     <--  published {expires_ms}
//	                     <--  order [0,size) to up to clipReplicas relays,
//	                          token Claims.Store, Exp = the clip's expiry
//	part [0,size) with the store token  ----------------------->  held item,
//	                                                               acked as stored
//	                          <--  hold {protocol clip, token, done}
//	                          the relay is a holder; reads go to it
//
// The rendezvous knows where each clip lives (item.holders) and keeps
// clipReplicas copies while it can: when a holder leaves or drops the
// clip (eviction, Release) and the publisher is still online, it orders
// the publisher to push the clip to another relay; the sweeper tops up
// too (a second relay that registers later gets a copy). Reads of a clip
// go to a live holder, whether or not the publisher is online, and to the
// publisher through the ordinary need path while no holder has it yet.
// Soft state: a relay that registers again re-announces the clips it
// holds with their store tokens (relay/upload.go reannounce).
//
// The store token is the relay's proof that it was ordered to keep that
// clip; it lives as long as the clip (its Exp is the expiry), so a
// re-announce checks out until then. It lets its relay push nothing else.

// clipReplicas is how many relays hold each clip when that many are live.
const clipReplicas = 2

// clipCounters count clips.
type clipCounters struct {
	clipRefused  atomic.Uint64 // clips refused at publish: too large, no room
	clipOrders   atomic.Uint64 // store orders sent
	clipFailed   atomic.Uint64 // store orders failed
	clipHeld     atomic.Uint64 // holders marked (announcements checked)
	clipLostCopy atomic.Uint64 // copies lost: holder left or dropped it
	clipExpired  atomic.Uint64 // clips dropped at their expiry

	clipRebuilt  atomic.Uint64 // clips rebuilt from a holder's announcement (clip_restart.go)
	clipMetaSkip atomic.Uint64 // announced sealed metadata not taken: the clip has its own
	clipReleased atomic.Uint64 // releases sent to holders: the owner unpublished
}

// ClipStats counts clips (clip.go).
type ClipStats struct {
	Refused uint64 `json:"refused"` // at publish: over --max-clip-size, or no relay had room
	Orders  uint64 `json:"orders"`  // store orders sent, re-replications included
	Failed  uint64 `json:"failed"`  // store orders the publisher reported failed
	Held    uint64 `json:"held"`    // copies announced by relays and checked
	Lost    uint64 `json:"lost"`    // copies lost: a holder left or dropped the clip
	Expired uint64 `json:"expired"` // clips dropped at their expiry
	// Rebuilt counts clips this rendezvous did not know (it restarted)
	// and rebuilt from a holder's announcement.
	Rebuilt uint64 `json:"rebuilt"`
	// MetaIgnored counts announcements whose sealed metadata differed
	// from the clip's own and was not taken.
	MetaIgnored uint64 `json:"meta_ignored"`
	// Released counts holders told to drop a clip its owner unpublished.
	Released uint64 `json:"released"`
}

func (c *counters) clipStats() ClipStats {
	k := &c.clipCounters
	return ClipStats{
		Refused: k.clipRefused.Load(), Orders: k.clipOrders.Load(), Failed: k.clipFailed.Load(),
		Held: k.clipHeld.Load(), Lost: k.clipLostCopy.Load(), Expired: k.clipExpired.Load(),
		Rebuilt: k.clipRebuilt.Load(), MetaIgnored: k.clipMetaSkip.Load(), Released: k.clipReleased.Load(),
	}
}

// clipState holds the clips' store orders. Guarded by Server.mu.
type clipState struct {
	orders map[uint64]*clipOrder
	// failed lists, per clip, the relays a store order failed on: the
	// next copy goes elsewhere.
	failed map[proto.ItemID]map[string]bool
	// srcFailed counts, per clip, the store orders its publisher failed
	// on its own side (its source); at maxClipSourceFailures no more are
	// sent.
	srcFailed map[proto.ItemID]int
	// unpublished lists the clips their owner unpublished, until they
	// would have expired (at most Config.MaxUnpublishedClips): a holder that
	// re-announces one is told to drop it (clip_restart.go).
	unpublished map[proto.ItemID]time.Time
	// sealedBy holds, per clip, the sealed metadata each holder last
	// announced (clip_restart.go), pruned with the clip.
	sealedBy map[proto.ItemID]map[string]string
}

// maxClipSourceFailures is how many store orders of one clip may fail on
// the publisher's side before the rendezvous stops ordering it.
const maxClipSourceFailures = 3

// clipOrder is a store order sent to a clip's publisher and not yet
// settled by the relay's Hold.
type clipOrder struct {
	id      uint64
	item    proto.ItemID
	relay   *relayConn
	sess    *session
	size    int64
	created time.Time
}

// publishMsg answers a Publish from session c: a clip is checked for size
// and room first, and once published its store orders follow the reply.
func (s *Server) publishMsg(c *session, m *proto.Publish) {
	now := s.cfg.Now()
	if m.Kind == proto.KindClip && m.ID.IsZero() {
		if perr := s.checkClip(m, now); perr != nil {
			s.stats.clipRefused.Add(1)
			c.enqueue(s.publishRefused(c, m.Ref, perr))
			return
		}
	}
	reply := s.publish(c, m)
	pub, ok := reply.(*proto.Published)
	if !ok {
		c.enqueue(reply)
		return
	}
	s.mu.Lock()
	it := s.items[pub.ID]
	if it == nil || it.kind != proto.KindClip {
		s.mu.Unlock()
		c.enqueue(reply)
		return
	}
	if it.expires.IsZero() {
		it.expires = now.Add(s.cfg.ClipTTL)
	}
	pub.ExpiresMS = it.expires.UnixMilli()
	// Published goes before the orders, which name the item; both under
	// the lock, so that a meta request never sees the clip with neither
	// a holder nor a copy on its way.
	c.enqueue(pub)
	s.storeClipLocked(it, now)
	s.mu.Unlock()
}

// checkClip refuses a new clip that cannot be held: over MaxClipSize, or
// larger than the free memory of every live relay that may carry it.
func (s *Server) checkClip(m *proto.Publish, now time.Time) *proto.Error {
	if m.Size > s.cfg.MaxClipSize {
		return proto.Errorf(proto.StatusTooLarge, "clip of %d bytes over the limit of %d bytes (--max-clip-size): send it as a file", m.Size, s.cfg.MaxClipSize)
	}
	operatorOnly := m.Enc == "" && !m.Volunteers
	s.mu.Lock()
	defer s.mu.Unlock()
	var most int64 = -1
	for _, r := range s.liveRelaysLocked(now) {
		if operatorOnly && r.class != ClassOperator {
			continue
		}
		_, room := s.clipRoomLocked(r)
		most = max(most, room)
	}
	switch {
	case most < 0 && operatorOnly:
		return proto.Errorf(proto.StatusUnavailable, "no operator relay is live to hold a plaintext clip")
	case most < 0:
		return proto.Errorf(proto.StatusUnavailable, "no relay is live to hold the clip")
	case most < m.Size:
		return proto.Errorf(proto.StatusOverLimit, "no relay has room for a clip of %d bytes: the most relay memory free or freeable is %d bytes", m.Size, most)
	}
	return nil
}

// clipRoomLocked returns relay r's free memory as its last heartbeat
// said, less the clips ordered onto it since, and the memory it can make
// free: that plus the complete items it holds, which it evicts, least
// recently used first, when a new one needs the room (relay/store.go).
func (s *Server) clipRoomLocked(r *relayConn) (free, room int64) {
	free = r.budget - r.reserved
	for _, o := range s.clips.orders {
		if o.relay == r {
			free -= o.size
		}
	}
	room = free
	for _, it := range r.held {
		if it.holdDone && it.size > 0 {
			room += it.size
		}
	}
	return free, min(room, r.budget)
}

// storeClipLocked orders clip it onto more relays until clipReplicas
// live relays hold it or are receiving it, while its publisher is online
// and relays with room are left. The caller holds s.mu.
func (s *Server) storeClipLocked(it *item, now time.Time) {
	if it.kind != proto.KindClip || it.expires.IsZero() || !now.Before(it.expires) || s.items[it.id] != it || s.clips.srcFailed[it.id] >= maxClipSourceFailures {
		return
	}
	have := map[string]bool{}
	for id := range it.holders {
		if r := s.relays[id]; r != nil && s.relayAlive(r, now) {
			have[id] = true
		}
	}
	for _, o := range s.clips.orders {
		if o.item == it.id {
			have[o.relay.id] = true
		}
	}
	for len(have) < clipReplicas {
		sess := it.publisherLocked()
		if sess == nil || sess.isDone() {
			return
		}
		r := s.pickClipRelayLocked(it, now, have)
		if r == nil {
			return
		}
		have[r.id] = true
		s.lastOrder++
		o := &clipOrder{id: s.lastOrder, item: it.id, relay: r, sess: sess, size: it.size, created: now}
		tok := proto.SignToken(s.key, proto.Claims{
			Dir: proto.DirPush, Relay: r.id, Item: it.id, Off: 0, Len: it.size,
			Exp: it.expires.Unix(), Iat: now.Unix(),
			Size: it.size, Name: it.name, MIME: it.mime, Store: true,
			Enc: it.enc, Modified: it.view().validatorTime(), // to rebuild it after a restart (clip_restart.go)
		})
		msg := &proto.Order{Order: o.id, Item: it.id, Off: 0, Len: it.size, Relay: r.id, PushURL: s.relayPushURL(r, sess.secure), Token: tok}
		if !sess.enqueue(msg) {
			return
		}
		if s.clips.orders == nil {
			s.clips.orders = map[uint64]*clipOrder{}
		}
		s.clips.orders[o.id] = o
		s.stats.ordersSent.Add(1)
		s.stats.clipOrders.Add(1)
		s.log.Info("clip store ordered", "item", it.id, "relay", shortID(r.id), "size", it.size, "order", o.id)
	}
}

// pickClipRelayLocked returns the live relay, not in have, that may carry
// it: one with the free memory for it, the most free first, else one that
// makes room by evicting, or nil.
func (s *Server) pickClipRelayLocked(it *item, now time.Time, have map[string]bool) *relayConn {
	var best *relayConn
	var bestFits bool
	var bestFree int64
	failed := s.clips.failed[it.id]
	for _, r := range s.liveRelaysLocked(now) {
		if have[r.id] || failed[r.id] || !it.anyRelay() && r.class != ClassOperator {
			continue
		}
		free, room := s.clipRoomLocked(r)
		if room < it.size {
			continue
		}
		fits := free >= it.size
		if best == nil || fits && !bestFits || fits == bestFits && free > bestFree {
			best, bestFits, bestFree = r, fits, free
		}
	}
	return best
}

// handleClipHold marks relay r a holder of the clip of m, after checking
// the store token it received the clip under. Nothing is answered.
func (s *Server) handleClipHold(r *relayConn, m *proto.Hold) {
	now := s.cfg.Now()
	c, err := proto.ParseTokenSkew(s.pub, m.Token, now, s.cfg.ClockSkew)
	if err == nil && (!c.Store || c.Dir != proto.DirPush || c.Relay != r.id || c.Item != m.ID || c.Off != 0 || c.Len != m.Size || !m.Done) {
		err = proto.ErrTokenScope
	}
	if err == nil {
		err = checkSealed(c, m)
	}
	if err != nil {
		s.stats.heldRefused.Add(1)
		r.log.Info("clip hold refused", "item", m.ID, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.clips.orders {
		if o.item == m.ID && o.relay == r {
			delete(s.clips.orders, id)
		}
	}
	it := s.items[m.ID]
	if it == nil && r.held != nil && (m.Ref == "re" || m.Ref == refReannounceClip) {
		it = s.rebuildClipLocked(r, m, c, now) // clip_restart.go: forgotten by a restart
	}
	if it == nil || it.kind != proto.KindClip || r.held == nil {
		// Unpublished, or over a limit: the relay drops it at its expiry.
		r.log.Debug("hold of an unknown clip", "item", m.ID)
		return
	}
	if it.size != c.Size || describesClip(c) && it.enc != c.Enc {
		s.stats.heldRefused.Add(1)
		r.log.Info("clip hold refused: the token is not of this clip", "item", m.ID)
		return
	}
	if it.holders == nil {
		it.holders = map[string]bool{}
	}
	if !it.holders[r.id] && (m.Ref == "re" || m.Ref == refReannounceClip) {
		s.stats.heldReannounced.Add(1)
	}
	if !it.holders[r.id] {
		s.stats.clipHeld.Add(1)
	}
	it.holders[r.id] = true
	it.holdDone = true
	it.offlineSince = time.Time{}
	r.held[it.id] = it
	s.syncSealedLocked(r, it, m) // clip_restart.go
	r.log.Info("clip held", "item", it.id, "holders", len(it.holders))
}

// clipOrderFailed settles a failed store order and orders the clip onto
// another relay. It reports whether of was a store order.
func (s *Server) clipOrderFailed(c *session, of *proto.OrderFailed) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.clips.orders[of.Order]
	if o == nil || o.sess != c {
		return false
	}
	delete(s.clips.orders, o.id)
	s.stats.ordersFailed.Add(1)
	s.stats.clipFailed.Add(1)
	c.log.Info("clip store failed", "item", o.item, "relay", shortID(o.relay.id), "status", of.Status, "reason", proto.TruncateReason(of.Reason))
	if !entryRefusal(of.Status) {
		// The publisher's side (its source, or an item it has not
		// registered yet): the sweeper orders it again, a few times.
		if s.clips.srcFailed == nil {
			s.clips.srcFailed = map[proto.ItemID]int{}
		}
		s.clips.srcFailed[o.item]++
		return true
	}
	s.markClipFailedLocked(o.item, o.relay.id)
	if it := s.items[o.item]; it != nil {
		s.storeClipLocked(it, s.cfg.Now())
	}
	return true
}

// clipLost re-replicates clip id after relay r released it (evicted it
// for room, it expired there, or its push failed half-way: then the store
// order is settled here): the next copy goes to another relay, so that two
// relays short of memory do not evict each other's copies in turn.
func (s *Server) clipLost(r *relayConn, id proto.ItemID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[id]
	if it == nil || it.kind != proto.KindClip {
		return
	}
	for oid, o := range s.clips.orders {
		if o.item == id && o.relay == r {
			delete(s.clips.orders, oid)
			o.sess.enqueue(&proto.Cancel{Order: o.id})
		}
	}
	s.stats.clipLostCopy.Add(1)
	s.markClipFailedLocked(id, r.id)
	s.storeClipLocked(it, s.cfg.Now())
}

func (s *Server) markClipFailedLocked(id proto.ItemID, relay string) {
	if s.clips.failed == nil {
		s.clips.failed = map[proto.ItemID]map[string]bool{}
	}
	if s.clips.failed[id] == nil {
		s.clips.failed[id] = map[string]bool{}
	}
	s.clips.failed[id][relay] = true
}

// clipsHeldLocked returns the clips relay r, which is leaving, holds or
// is receiving, and forgets its store orders (their publishers are told
// to stop). The caller holds s.mu.
func (s *Server) clipsHeldLocked(r *relayConn) []*item {
	var out []*item
	for _, it := range r.held {
		if it.kind == proto.KindClip {
			s.stats.clipLostCopy.Add(1)
			out = append(out, it)
		}
	}
	for id, o := range s.clips.orders {
		if o.relay != r {
			continue
		}
		delete(s.clips.orders, id)
		o.sess.enqueue(&proto.Cancel{Order: o.id})
		if it := s.items[o.item]; it != nil {
			out = append(out, it)
		}
	}
	return out
}

// replicateClipsLocked orders more copies of clips that lost a holder.
// The caller holds s.mu.
func (s *Server) replicateClipsLocked(clips []*item, now time.Time) {
	for _, it := range clips {
		s.storeClipLocked(it, now)
	}
}

// sweepClipsLocked drops clips past their expiry and store orders whose
// publisher left, and tops up clips short of copies. The caller holds
// s.mu.
func (s *Server) sweepClipsLocked(now time.Time) {
	for id, o := range s.clips.orders {
		if o.sess.isDone() || s.items[o.item] == nil {
			delete(s.clips.orders, id)
		}
	}
	for id := range s.clips.failed {
		if s.items[id] == nil { // unpublished or purged
			delete(s.clips.failed, id)
		}
	}
	for id := range s.clips.srcFailed {
		if s.items[id] == nil {
			delete(s.clips.srcFailed, id)
		}
	}
	for id := range s.clips.sealedBy {
		if s.items[id] == nil {
			delete(s.clips.sealedBy, id)
		}
	}
	for id, exp := range s.clips.unpublished {
		if !now.Before(exp) {
			delete(s.clips.unpublished, id)
		}
	}
	for _, it := range s.items {
		if it.kind != proto.KindClip || it.expires.IsZero() {
			continue
		}
		if now.Before(it.expires) {
			if len(it.members) > 0 && len(it.holders) < clipReplicas {
				s.storeClipLocked(it, now)
			}
			continue
		}
		for id := range it.holders {
			if r := s.relays[id]; r != nil && r.held != nil {
				delete(r.held, it.id)
			}
		}
		for _, m := range slices.Clone(it.members) {
			it.removeMemberLocked(m, now)
		}
		for id, o := range s.clips.orders {
			if o.item == it.id {
				delete(s.clips.orders, id)
			}
		}
		delete(s.clips.failed, it.id)
		delete(s.clips.srcFailed, it.id)
		delete(s.items, it.id)
		s.countItemLocked(it, -1)
		s.stats.clipExpired.Add(1)
		s.log.Debug("clip expired", "item", it.id)
	}
}

// clipHolderLocked returns the live relay a read of clip it goes to: a
// holder, not one the reader avoids unless no other holds it; nil when
// it is no clip or no live relay holds it (then its publisher serves it,
// when online). It sets the Expires header of the response.
func (s *Server) clipHolderLocked(it *item, now time.Time, avoid map[string]bool, w http.ResponseWriter) *relayConn {
	if it.kind != proto.KindClip {
		return nil
	}
	if !it.expires.IsZero() {
		w.Header().Set("Expires", it.expires.UTC().Format(http.TimeFormat))
	}
	var live []*relayConn
	for id := range it.holders {
		if r := s.relays[id]; r != nil && s.relayAlive(r, now) {
			live = append(live, r)
		}
	}
	slices.SortFunc(live, func(a, b *relayConn) int { return strings.Compare(a.id, b.id) })
	for _, r := range live {
		if !avoid[r.id] {
			return r
		}
	}
	if len(live) > 0 {
		return live[0]
	}
	return nil
}

// clipMeta fills in the clip fields of m.
func (s *Server) clipMeta(m *ItemMeta) {
	if m.Kind != proto.KindClip {
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[m.ID]
	if it == nil {
		return
	}
	for id := range it.holders {
		if r := s.relays[id]; r != nil && s.relayAlive(r, now) {
			m.Holders++
		}
	}
	for _, o := range s.clips.orders {
		if o.item == it.id {
			m.Storing++
		}
	}
	s.sealedHoldersLocked(it, m, now) // clip_restart.go
	if !it.expires.IsZero() {
		m.Expires = it.expires.UTC().Format(time.RFC3339)
	}
}
