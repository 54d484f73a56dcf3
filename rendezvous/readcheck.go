package rendezvous

import (
	"github.com/meshup/meshup/proto"
)

// Read checks (issue 11, proto.ReadCheck). A relay serves a held upload on
// a URL of its own too (the tus upload URL answers GET with the item),
// where the rendezvous's check before the redirect (checkRead) does not
// run. With an auth webhook, registered relays are told so
// (Registered.ReadChecks) and ask here before serving such a read; the
// webhook is asked exactly as for a read of the download URL (operation
// read, the item as the rendezvous knows it, the reader's address and
// Authorization). Nothing is cached: every read is asked about.

// handleReadCheck answers a relay's ReadCheck with a ReadVerdict, on a
// goroutine of its own when the webhook is asked: the relay's stream keeps
// being read meanwhile.
func (s *Server) handleReadCheck(r *relayConn, m *proto.ReadCheck) {
	s.stats.readChecks.Add(1)
	deny := func(e *proto.Error) {
		r.log.Debug("read refused", "item", m.Item, "client", m.Client, "status", e.Status, "reason", e.Msg)
		r.enqueue(&proto.ReadVerdict{Check: m.Check, Status: e.Status, Reason: e.Msg})
	}
	if s.cfg.AuthWebhook == "" {
		r.enqueue(&proto.ReadVerdict{Check: m.Check})
		return
	}
	if len(m.Client) > 128 || mapLen(m.Auth) > maxHoldAuth {
		deny(proto.Errorf(proto.StatusMalformed, "client address or credentials too long"))
		return
	}
	// Like holds, read checks share the relay's need rate (NeedRate,
	// NeedBurst), and at most proto.MaxReadChecks are asking at once: a
	// relay cannot make the rendezvous call the webhook without bound.
	if !r.needRate.Allow() {
		s.stats.reject(RejectNeedRate)
		deny(proto.Errorf(proto.StatusOverLimit, "relay over its rate of requests"))
		return
	}
	s.mu.Lock()
	it := r.held[m.Item]
	var wi webhookItem
	if it != nil {
		wi = readItemLocked(it)
	}
	s.mu.Unlock()
	if it == nil {
		// Not held by this relay as far as we know: released, expired,
		// or not re-announced yet after a restart. Fail closed.
		deny(proto.Errorf(proto.StatusUnavailable, "item %s is not known to the rendezvous as held by this relay; try again later", m.Item))
		return
	}
	if r.readChecks.Add(1) > proto.MaxReadChecks {
		r.readChecks.Add(-1)
		deny(proto.Errorf(proto.StatusOverLimit, "%d reads are waiting for the application's verdict, the limit", proto.MaxReadChecks))
		return
	}
	if !s.goStart() {
		r.readChecks.Add(-1)
		return
	}
	go func() {
		defer s.wg.Done()
		defer r.readChecks.Add(-1)
		_, perr := s.askWebhook(s.ctx, webhookRequest{
			Operation:   WebhookRead,
			Item:        wi,
			Client:      webhookClient{Addr: m.Client},
			Credentials: m.Auth,
		})
		if perr != nil {
			deny(perr)
			return
		}
		r.enqueue(&proto.ReadVerdict{Check: m.Check})
	}()
}
