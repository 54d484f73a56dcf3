package rendezvous

import (
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshup/meshup/proto"
)

// The scheduler turns a relay's Need into an Order to the item's publisher.
// The relay that needs a part (the exit) keeps several parts of a
// consumer's request open at once; each is ordered through the entry relay
// pickEntryLocked scores best (entry.go): the exit itself, or another relay
// that forwards the part to the exit over the mesh, its push token naming
// the exit in Claims.Fwd. So one transfer spreads over several entries in
// proportion to their measured rates, and a part whose entry died is asked
// again (Need.Avoid) through another. A publisher may pin one entry
// relay (Publish.Via, `meshup send --via`) to diagnose a path.
//
// A need is honoured only when it carries a read token this rendezvous
// issued for that relay, that item and a range covering the need (the
// consumer request that caused it), within NeedRate per relay and
// ItemNeedRate per item; a plaintext item is ordered only onto operator
// relays unless its publisher allowed volunteers.

// order is an order sent to a publisher and not yet settled. It lives until
// the relay reports the part arrived (need_done) or cancels its need, the
// publisher reports failure, the session or relay ends, or its push token
// expires. Its fields are guarded by Server.mu.
type order struct {
	id      uint64
	item    proto.ItemID
	relay   *relayConn // the relay that needed the part (the exit)
	entry   *relayConn // the relay the part is pushed to
	len     int64      // bytes ordered
	need    uint64
	sess    *session
	created time.Time
}

// handleNeed answers a Need from relay r with an Order to the publisher or
// a NeedFailed to r.
func (s *Server) handleNeed(r *relayConn, n *proto.Need) {
	now := s.cfg.Now()
	tokErr := s.checkNeedToken(r, n, now) // outside the lock: a signature check
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.orderLocked(r, n, now, tokErr); e != nil {
		r.log.Debug("need failed", "need", n.Need, "item", n.Item, "status", e.Status, "reason", e.Msg)
		s.needFailedLocked(r, n.Need, e.Status, e.Msg)
	}
}

// orderLocked creates and sends the order for n, or says why not.
// tokErr is the result of checkNeedToken, reported after the checks of
// the need itself.
func (s *Server) orderLocked(r *relayConn, n *proto.Need, now time.Time, tokErr *proto.Error) *proto.Error {
	if r.needs == nil {
		return proto.Errorf(proto.StatusUnavailable, "relay is gone")
	}
	if _, dup := r.needs[n.Need]; dup {
		return proto.Errorf(proto.StatusProtocol, "need %d is already outstanding", n.Need)
	}
	if len(r.needs) >= s.cfg.MaxNeedsPerRelay {
		return proto.Errorf(proto.StatusOverLimit, "relay has %d needs outstanding, the limit", len(r.needs))
	}
	if !r.needRate.AllowN(now, 1) {
		s.stats.reject(RejectNeedRate)
		return proto.Errorf(proto.StatusOverLimit, "relay is over %g needs per second", s.cfg.NeedRate)
	}
	it := s.items[n.Item]
	switch {
	case it == nil:
		return s.missingItem(n.Item)
	case it.kind == proto.KindMessage:
		return proto.Errorf(proto.StatusNotFound, "message items are served by the rendezvous")
	case !it.online():
		return proto.Errorf(proto.StatusOffline, "publisher of %s is offline", n.Item)
	case n.Off < 0 || n.Len <= 0 || n.Off > it.size-n.Len:
		return proto.Errorf(proto.StatusMalformed, "bytes %d+%d outside item of %d", n.Off, n.Len, it.size)
	}
	if tokErr != nil {
		s.stats.reject(RejectNeedToken)
		return tokErr
	}
	if it.needRate == nil {
		it.needRate = rate.NewLimiter(rate.Limit(s.cfg.ItemNeedRate), s.cfg.ItemNeedBurst)
	}
	if !it.needRate.AllowN(now, 1) {
		s.stats.reject(RejectNeedRate)
		return proto.Errorf(proto.StatusOverLimit, "item is over %g needs per second", s.cfg.ItemNeedRate)
	}
	if !it.anyRelay() && r.class != ClassOperator {
		s.stats.reject(RejectPlaintext)
		return proto.Errorf(proto.StatusForbidden, "a plaintext item goes through operator relays only, and a volunteer relay asked")
	}
	entry, perr := s.pickEntryLocked(it, r, n, now)
	if perr != nil {
		if perr.Status == proto.StatusForbidden {
			s.stats.reject(RejectPlaintext)
		}
		return perr
	}
	if !it.anyRelay() && entry.class != ClassOperator {
		s.stats.reject(RejectPlaintext)
		return proto.Errorf(proto.StatusForbidden, "a plaintext item goes through operator relays only, and the pinned entry is a volunteer relay")
	}
	fwd := ""
	if entry != r {
		fwd = r.id
	}
	sess := it.publisherLocked()
	if !sess.roomForOrder() {
		// Refused, not queued: a publisher that cannot take more orders
		// now is busy, and dropping its session would cut every reader
		// of its items (issue 14).
		s.stats.reject(RejectPublisherBusy)
		return proto.Errorf(proto.StatusOverLimit, "publisher of %s is busy: its queue of orders is full", n.Item)
	}
	if len(n.Avoid) > 0 {
		r.reorders++
		it.carried.reorders++
		s.stats.reorders.Add(1)
	}
	s.lastOrder++
	o := &order{id: s.lastOrder, item: it.id, relay: r, len: n.Len, need: n.Need, sess: sess, created: now}
	tok := proto.SignToken(s.key, proto.Claims{
		Dir:   proto.DirPush,
		Relay: entry.id,
		Item:  it.id,
		Off:   n.Off,
		Len:   n.Len,
		Exp:   now.Add(s.cfg.PushTokenTTL).Unix(),
		Iat:   now.Unix(),
		Ref:   n.Need,
		Fwd:   fwd,
	})
	msg := &proto.Order{
		Order: o.id, Item: it.id, Off: n.Off, Len: n.Len,
		Relay: entry.id, PushURL: s.relayPushURL(entry, sess.secure), Token: tok,
	}
	if !o.sess.enqueue(msg) {
		return proto.Errorf(proto.StatusOffline, "publisher of %s is not keeping up", n.Item)
	}
	s.orders[o.id] = o
	r.needs[n.Need] = o
	o.sess.orders[o.id] = o
	o.entry = entry
	entry.entryOrders++
	if entry != r {
		r.exitForwards++
	}
	entry.ordersSinceBeat++
	s.stats.ordersSent.Add(1)
	if fwd != "" {
		s.stats.forwarded.Add(1)
	}
	r.log.Debug("order sent", "order", o.id, "need", n.Need, "item", it.id, "off", n.Off, "len", n.Len)
	return nil
}

// handleNeedCancel withdraws the order for relay r's need, telling the
// publisher to stop.
func (s *Server) handleNeedCancel(r *relayConn, nc *proto.NeedCancel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := r.needs[nc.Need]
	if o == nil {
		r.log.Debug("cancel of unknown need", "need", nc.Need)
		return
	}
	o.sess.enqueue(&proto.Cancel{Order: o.id})
	s.stats.cancels.Add(1)
	s.forgetOrderLocked(o)
}

// orderFailed forwards a publisher's OrderFailed to the relay that needed
// the part.
func (s *Server) orderFailed(c *session, of *proto.OrderFailed) {
	if s.clipOrderFailed(c, of) { // clip.go: a store order
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orders[of.Order]
	if o == nil || o.sess != c {
		c.log.Debug("order_failed for unknown order", "order", of.Order)
		return
	}
	st := of.Status
	if st == proto.StatusOK || !st.Known() {
		// The status is the publisher's choice: an unknown one is a source
		// error, so that counters by status stay bounded.
		st = proto.StatusSourceError
	}
	s.stats.ordersFailed.Add(1)
	reason := proto.TruncateReason(of.Reason)
	if o.entry != nil && entryRefusal(st) {
		// The publisher could not push through the entry, or the entry
		// refused the part: let the next parts go elsewhere for a while
		// (entry.go, health). When the entry was another relay than the
		// exit, the exit may ask again: another entry may do.
		o.entry.entryFailedAt = s.cfg.Now()
		if o.entry != o.relay {
			reason = proto.TruncateReason(fmt.Sprintf("entry relay %s: %v: %s", shortID(o.entry.id), st, of.Reason))
			st = proto.StatusUnavailable
		}
	}
	s.needFailedLocked(o.relay, o.need, st, reason)
	s.forgetOrderLocked(o)
}

// entryRefusal reports whether an order that failed with st failed
// because of its entry relay (it could not be reached, or refused the
// part), not because of the publisher's source or the consumer.
func entryRefusal(st proto.Status) bool {
	switch st {
	case proto.StatusUnavailable, proto.StatusOffline, proto.StatusExpired, proto.StatusWrongRelay,
		proto.StatusUnauthorized, proto.StatusOverLimit, proto.StatusTimeout:
		return true
	}
	return false
}

// needFailedLocked tells relay r that its need cannot be met.
func (s *Server) needFailedLocked(r *relayConn, need uint64, st proto.Status, reason string) {
	s.stats.needFailedInc(st)
	r.enqueue(&proto.NeedFailed{Need: need, Status: st, Reason: reason})
}

// forgetOrderLocked drops o from every index.
func (s *Server) forgetOrderLocked(o *order) {
	if _, ok := s.orders[o.id]; ok && o.entry != nil {
		o.entry.entryOrders--
		if o.entry != o.relay {
			o.relay.exitForwards--
		}
	}
	delete(s.orders, o.id)
	if o.relay.needs[o.need] == o {
		delete(o.relay.needs, o.need)
	}
	delete(o.sess.orders, o.id)
}

// checkNeedToken checks that need n of relay r carries a read token this
// rendezvous issued for r and n's item, covering n's bytes. A consumer
// request may outlive its token (a long video): tokens are accepted up to
// NeedTokenGrace after they expired.
//
// The parts of one consumer request carry the same token, so the relay's
// reader keeps the last token whose signature verified (needToken).
func (s *Server) checkNeedToken(r *relayConn, n *proto.Need, now time.Time) *proto.Error {
	if n.Token == "" {
		return proto.Errorf(proto.StatusUnauthorized, "need carries no read token")
	}
	var c proto.Claims
	var err error
	if n.Token == r.needToken && now.Unix() < r.needClaims.Exp+int64(s.cfg.NeedTokenGrace/time.Second) {
		c = r.needClaims
	} else if c, err = proto.ParseTokenSkew(s.pub, n.Token, now, s.cfg.NeedTokenGrace); err == nil {
		// The grace as the skew: the signature shows this rendezvous issued
		// the token, so only its expiry (plus the grace) matters.
		r.needToken, r.needClaims = n.Token, c
	}
	if err == nil {
		err = c.Check(r.id, proto.DirRead, n.Item, n.Off, n.Len)
	}
	if err != nil {
		return proto.Errorf(proto.TokenStatus(err), "need's read token: %v", err)
	}
	return nil
}
