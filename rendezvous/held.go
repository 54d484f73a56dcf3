package rendezvous

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/proto"
)

// Held items (issue 11, proto.Hold). An upload through a legacy protocol
// becomes an item held by the relay that received it: its bytes live in
// that relay's memory only, so the item has no publisher session but a
// set of holders (relay ids, in practice the one relay), and it is online
// while a holder is registered. Reads are redirected to a holder, through
// a tunnel when it is behind NAT, whatever its class: the uploader chose
// to send plaintext to that relay.
//
// The rendezvous keeps no state of its own about them (soft state, issue
// 14): a relay that registers again re-announces what it holds with the
// owner secret it was given, and the item comes back. An item whose
// holder left stays offline for ItemTTL, like any item, or until it
// expires; it ends when its holder releases it.

// heldCounters count held items.
type heldCounters struct {
	heldCreated     atomic.Uint64 // uploads created (hold answered held)
	heldRefused     atomic.Uint64 // holds refused (webhook, limits, malformed)
	heldReannounced atomic.Uint64 // held items re-announced by their relay
	heldDone        atomic.Uint64 // uploads complete (hold_done)
	heldReleased    atomic.Uint64 // held items dropped by their relay
	heldExpired     atomic.Uint64 // held items swept at their expiry
	webhookCalls    atomic.Uint64 // auth webhook calls
	readChecks      atomic.Uint64 // relays' read checks of held items (readcheck.go)
}

// HeldStats counts the items relays hold for legacy uploads, and the auth
// webhook's calls.
type HeldStats struct {
	Created      uint64 `json:"created"`
	Refused      uint64 `json:"refused"`
	Reannounced  uint64 `json:"reannounced"`
	Done         uint64 `json:"done"`
	Released     uint64 `json:"released"`
	Expired      uint64 `json:"expired"`
	WebhookCalls uint64 `json:"webhook_calls"`
	// ReadChecks counts the reads of held items on their relay's own
	// URLs (tus upload URLs) that relays asked about (proto.ReadCheck).
	ReadChecks uint64 `json:"read_checks"`
}

func (c *counters) heldStats() HeldStats {
	h := &c.heldCounters
	return HeldStats{
		Created: h.heldCreated.Load(), Refused: h.heldRefused.Load(), Reannounced: h.heldReannounced.Load(),
		Done: h.heldDone.Load(), Released: h.heldReleased.Load(), Expired: h.heldExpired.Load(),
		WebhookCalls: h.webhookCalls.Load(), ReadChecks: h.readChecks.Load(),
	}
}

// maxHoldAuth bounds the credentials and metadata of a Hold, in bytes.
const maxHoldAuth = 16 << 10

// handleHold answers a relay's Hold on a goroutine of its own: the auth
// webhook may take a while, and the relay's stream keeps being read.
func (s *Server) handleHold(r *relayConn, m *proto.Hold) {
	if m.Protocol == proto.HoldClip {
		s.handleClipHold(r, m) // clip.go: a signature check, no webhook
		return
	}
	// Holds share the relay's need rate (NeedRate, NeedBurst): each may
	// call the webhook, so a relay cannot make the rendezvous call it
	// without bound.
	if !r.needRate.Allow() {
		s.stats.reject(RejectNeedRate)
		r.enqueue(&proto.ErrorMsg{Ref: m.Ref, Status: proto.StatusOverLimit, Reason: "relay over its rate of requests"})
		return
	}
	if !s.goStart() {
		return
	}
	go func() {
		defer s.wg.Done()
		reply := s.hold(r, m)
		if e, ok := reply.(*proto.ErrorMsg); ok {
			s.stats.heldRefused.Add(1)
			r.log.Info("upload refused", "ref", m.Ref, "protocol", m.Protocol, "client", m.Client, "status", e.Status, "reason", e.Reason)
		}
		r.enqueue(reply)
	}()
}

// hold creates or takes back the item of a Hold from relay r and returns
// the reply: Held or an ErrorMsg.
func (s *Server) hold(r *relayConn, m *proto.Hold) proto.Message {
	refuse := func(e *proto.Error) proto.Message {
		return &proto.ErrorMsg{Ref: m.Ref, Status: e.Status, Reason: e.Msg}
	}
	switch m.Protocol {
	case proto.UploadSTOR, proto.UploadSocketIO, proto.UploadPUT, proto.UploadTUS:
	default:
		return refuse(proto.Errorf(proto.StatusMalformed, "unknown upload protocol %.20q", m.Protocol))
	}
	if len(m.Client) > 128 {
		return refuse(proto.Errorf(proto.StatusMalformed, "client address too long"))
	}
	if mapLen(m.Auth)+mapLen(m.Meta) > maxHoldAuth {
		return refuse(proto.Errorf(proto.StatusTooLarge, "credentials and metadata over %d bytes", maxHoldAuth))
	}
	p := &proto.Publish{Kind: proto.KindFile, Name: m.Name, MIME: m.MIME, Size: max(m.Size, 0)}
	if m.Size < -1 {
		return refuse(proto.Errorf(proto.StatusMalformed, "negative size %d", m.Size))
	}
	if perr := s.checkPublish(p); perr != nil {
		return refuse(perr)
	}
	now := s.cfg.Now()
	if m.Check {
		if _, perr := s.askWebhook(s.ctx, webhookRequest{
			Operation:   WebhookUpload,
			Item:        webhookItem{Size: -1, Kind: proto.KindFile, Protocol: m.Protocol},
			Client:      webhookClient{Addr: m.Client},
			Credentials: m.Auth,
			Metadata:    m.Meta,
		}); perr != nil {
			return refuse(perr)
		}
		return &proto.Held{Ref: m.Ref}
	}
	if !m.ID.IsZero() {
		return s.reannounced(r, m, p, now)
	}
	reply, perr := s.askWebhook(s.ctx, webhookRequest{
		Operation:   WebhookUpload,
		Item:        webhookItem{Name: p.Name, MIME: p.MIME, Size: m.Size, Kind: proto.KindFile, Protocol: m.Protocol},
		Client:      webhookClient{Addr: m.Client},
		Credentials: m.Auth,
		Metadata:    m.Meta,
	})
	if perr != nil {
		return refuse(perr)
	}
	expires := now.Add(s.cfg.UploadTTL)
	if reply.ExpiresIn > 0 {
		expires = minTime(expires, now.Add(time.Duration(min(reply.ExpiresIn, math.MaxInt64/int64(time.Second)))*time.Second))
	}
	maxSize := s.cfg.MaxItemSize
	if reply.MaxSize > 0 {
		maxSize = min(maxSize, reply.MaxSize)
	}
	if m.Size > maxSize {
		return refuse(proto.Errorf(proto.StatusTooLarge, "upload of %d bytes over the limit of %d", m.Size, maxSize))
	}
	id, owner := proto.NewOwnedItemID()
	it := s.heldItem(id, p, m, now, expires)
	it.src = s.uploaderIP(m.Client)
	s.mu.Lock()
	if e := s.addHeldLocked(r, it); e != nil {
		s.mu.Unlock()
		return refuse(e)
	}
	s.mu.Unlock()
	s.stats.heldCreated.Add(1)
	r.log.Info("upload created", "item", id, "protocol", m.Protocol, "size", m.Size, "client", m.Client, "expires", expires.UTC().Format(time.RFC3339))
	return s.heldReply(m.Ref, id, owner, expires, maxSize, reply.Metadata)
}

// reannounced takes back a held item relay r still holds (soft state):
// the owner secret proves r received it from this service.
func (s *Server) reannounced(r *relayConn, m *proto.Hold, p *proto.Publish, now time.Time) proto.Message {
	refuse := func(e *proto.Error) proto.Message {
		return &proto.ErrorMsg{Ref: m.Ref, Status: e.Status, Reason: e.Msg}
	}
	if ok, _ := proto.OwnerOf(m.ID, m.Owner); !ok {
		return refuse(proto.Errorf(proto.StatusForbidden, "owner secret does not match item %s", m.ID))
	}
	expires := time.UnixMilli(m.ExpiresMS)
	if !expires.After(now) || expires.After(now.Add(s.cfg.UploadTTL)) {
		return refuse(proto.Errorf(proto.StatusGone, "item %s expired or its expiry is not one this service gives", m.ID))
	}
	s.mu.Lock()
	it := s.items[m.ID]
	switch {
	case it == nil:
		it = s.heldItem(m.ID, p, m, now, expires)
		if e := s.addHeldLocked(r, it); e != nil {
			s.mu.Unlock()
			return refuse(e)
		}
	case !it.held:
		s.mu.Unlock()
		return refuse(proto.Errorf(proto.StatusConflict, "item %s is not a held item", m.ID))
	default:
		it.holders[r.id] = true
		it.offlineSince = time.Time{}
		r.held[it.id] = it
	}
	if m.Done && m.Size >= 0 {
		it.size, it.holdDone = m.Size, true
	}
	s.mu.Unlock()
	s.stats.heldReannounced.Add(1)
	return s.heldReply(m.Ref, m.ID, m.Owner, expires, 0, nil)
}

// heldItem makes the item of a Hold.
func (s *Server) heldItem(id proto.ItemID, p *proto.Publish, m *proto.Hold, now, expires time.Time) *item {
	return &item{
		id: id, kind: proto.KindFile, name: p.Name, mime: p.MIME, size: m.Size,
		published: now, held: true, protocol: m.Protocol, expires: expires,
		holders: map[string]bool{},
	}
}

// addHeldLocked stores held item it, held by relay r, unless a limit
// refuses it. The caller holds s.mu.
func (s *Server) addHeldLocked(r *relayConn, it *item) *proto.Error {
	if r.held == nil {
		return proto.Errorf(proto.StatusUnavailable, "relay is gone")
	}
	if s.items[it.id] != nil {
		return proto.Errorf(proto.StatusConflict, "item %s exists", it.id)
	}
	if len(s.items) >= s.cfg.MaxItems {
		return proto.Errorf(proto.StatusOverLimit, "server holds %d items, the limit", s.cfg.MaxItems)
	}
	if !s.itemAllowedLocked(it.src) {
		s.stats.reject(RejectItemsPerIP)
		return proto.Errorf(proto.StatusOverLimit, "your address has %d items, the limit", s.cfg.MaxItemsPerIP)
	}
	s.countItemLocked(it, 1)
	s.items[it.id] = it
	it.holders[r.id] = true
	r.held[it.id] = it
	return nil
}

func (s *Server) heldReply(ref string, id proto.ItemID, owner string, expires time.Time, maxSize int64, meta map[string]string) *proto.Held {
	pub := s.published(ref, id, owner)
	return &proto.Held{
		Ref: ref, ID: id, Owner: owner, ShareURL: pub.ShareURL, DownloadURL: pub.DownloadURL,
		ExpiresMS: expires.UnixMilli(), MaxSize: maxSize, Meta: meta,
	}
}

// uploaderIP returns the IP an upload counts against in MaxItemsPerIP:
// the uploader's, as its relay saw it; none for loopback unless the
// limits apply to it.
func (s *Server) uploaderIP(client string) netip.Addr {
	ap, err := netip.ParseAddrPort(client)
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() && !s.cfg.LimitLoopback {
		return netip.Addr{}
	}
	return ip
}

// handleHoldDone records that every byte of a held item arrived.
func (s *Server) handleHoldDone(r *relayConn, m *proto.HoldDone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := r.held[m.ID]
	if it == nil || m.Size < 0 || it.size >= 0 && it.size != m.Size {
		s.stats.reject(RejectUnexpectedType)
		return
	}
	it.size, it.holdDone = m.Size, true
	s.stats.heldDone.Add(1)
}

// handleRelease forgets a held item its relay dropped.
func (s *Server) handleRelease(r *relayConn, m *proto.Release) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := r.held[m.ID]
	if it == nil {
		return
	}
	delete(r.held, m.ID)
	delete(it.holders, r.id)
	if len(it.holders) == 0 {
		// Kept until it expires, so that readers learn why it ended
		// rather than that it never was.
		it.ended = m.Reason
		if it.ended == "" {
			it.ended = "the relay holding it dropped it"
		}
		if len(it.ended) > 300 {
			it.ended = it.ended[:300]
		}
		it.offlineSince = s.cfg.Now()
	}
	s.stats.heldReleased.Add(1)
	r.log.Debug("held item released", "item", m.ID, "status", m.Status, "reason", m.Reason)
}

// dropHeldLocked deletes held item it. The caller holds s.mu.
func (s *Server) dropHeldLocked(it *item) {
	if s.items[it.id] == it {
		delete(s.items, it.id)
		s.countItemLocked(it, -1)
	}
}

// holderLeftLocked takes relay r, which is gone, out of the holders of
// the items it held: they go offline until it re-announces them. The
// caller holds s.mu.
func (s *Server) holderLeftLocked(r *relayConn, now time.Time) {
	for id, it := range r.held {
		delete(it.holders, r.id)
		if len(it.holders) == 0 {
			it.offlineSince = now
		}
		delete(r.held, id)
	}
	r.held = nil
}

// sweepHeldLocked drops held items past their expiry. The caller holds
// s.mu.
func (s *Server) sweepHeldLocked(now time.Time) {
	for _, it := range s.items {
		if !it.held || now.Before(it.expires) {
			continue
		}
		for id := range it.holders {
			if r := s.relays[id]; r != nil && r.held != nil {
				delete(r.held, it.id)
			}
		}
		s.dropHeldLocked(it)
		s.stats.heldExpired.Add(1)
		s.log.Debug("held item expired", "item", it.id)
	}
}

// pickHolderLocked returns a live relay holding it, or nil. The caller
// holds s.mu.
func (s *Server) pickHolderLocked(it *item, now time.Time) *relayConn {
	ids := make([]string, 0, len(it.holders))
	for id := range it.holders {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if r := s.relays[id]; r != nil && s.relayAlive(r, now) {
			return r
		}
	}
	return nil
}

// heldTokenLen is the length a read token of a held item covers: its
// size, or every byte while the size is not known yet.
func heldTokenLen(size int64) int64 {
	if size < 0 {
		return math.MaxInt64
	}
	return size
}

// checkRead asks the auth webhook whether the request r may read item
// id. Without a webhook, or for an item this rendezvous does not know
// (answered not found later), it allows.
func (s *Server) checkRead(r *http.Request, id proto.ItemID) *proto.Error {
	if s.cfg.AuthWebhook == "" {
		return nil
	}
	s.mu.Lock()
	it := s.items[id]
	var wi webhookItem
	if it != nil {
		wi = readItemLocked(it)
	}
	s.mu.Unlock()
	if it == nil {
		return nil
	}
	var cred map[string]string
	if a := r.Header.Get("Authorization"); a != "" {
		cred = map[string]string{"authorization": a}
	}
	_, perr := s.askWebhook(r.Context(), webhookRequest{Operation: WebhookRead, Item: wi, Client: webhookClient{Addr: r.RemoteAddr}, Credentials: cred})
	return perr
}

// readItemLocked describes item it to the webhook for a read. The caller
// holds s.mu.
func readItemLocked(it *item) webhookItem {
	return webhookItem{ID: it.id.String(), Name: it.name, MIME: it.mime, Size: it.size, Kind: it.kind, Protocol: it.protocol, Enc: it.enc}
}

// checkPublishHook asks the auth webhook whether session c may publish p,
// a new item.
func (s *Server) checkPublishHook(ctx context.Context, c *session, p *proto.Publish) *proto.Error {
	if s.cfg.AuthWebhook == "" {
		return nil
	}
	addr := ""
	if c.conn != nil {
		addr = c.conn.RemoteAddr().String()
	}
	_, perr := s.askWebhook(ctx, webhookRequest{
		Operation: WebhookPublish,
		Item:      webhookItem{Name: p.Name, MIME: p.MIME, Size: p.Size, Kind: p.Kind, Enc: p.Enc},
		Client:    webhookClient{Addr: addr},
	})
	return perr
}

// uploadEndpoint is the body of GET /v1/upload.
type uploadEndpoint struct {
	Protocol string `json:"protocol"`
	URL      string `json:"url"`   // the endpoint on the chosen relay
	Relay    string `json:"relay"` // its id
	// Reach says how the uploader reaches it: direct, relay-tunnel or
	// rendezvous-tunnel.
	Reach string `json:"reach"`
	// ExpiresIn is how long an upload lasts once created, in seconds
	// (Config.UploadTTL; the auth webhook may shorten it).
	ExpiresIn int64 `json:"expires_in"`
	// Expires is when an upload created now expires (RFC 3339).
	Expires string `json:"expires"`
}

// uploadPaths are the endpoints of the upload protocols on a relay.
var uploadPaths = map[string]string{
	proto.UploadSTOR:     "/v1/stor",
	proto.UploadSocketIO: "/v1/socket.io/",
	proto.UploadPUT:      "/v1/upload/",
	proto.UploadTUS:      "/v1/files/",
}

// handleUploadEndpoint answers GET /v1/upload?protocol=stor|socketio|put|tus
// with the endpoint URL of that protocol on a relay chosen by load and
// reachability (as an exit for readers: the relay holds the bytes and
// serves them).
func (s *Server) handleUploadEndpoint(w http.ResponseWriter, r *http.Request) {
	proto_ := r.URL.Query().Get("protocol")
	path, ok := uploadPaths[proto_]
	if !ok {
		writeError(w, 0, proto.StatusMalformed, "protocol must be one of stor, socketio, put, tus")
		return
	}
	// An upload through a legacy protocol is plaintext: like any plaintext
	// item it goes to a relay the operator admitted, unless the uploader
	// allows volunteers (volunteers=1).
	operatorOnly := r.URL.Query().Get("volunteers") != "1"
	secure := s.secureRequest(r)
	now := s.cfg.Now()
	s.mu.Lock()
	rel := s.pickRelayLocked(now, operatorOnly, nil, secure, proto_)
	if rel == nil {
		volunteer := operatorOnly && s.pickRelayLocked(now, false, nil, secure, proto_) != nil
		other := s.pickRelayLocked(now, false, nil, secure, "") != nil
		s.mu.Unlock()
		switch {
		case volunteer:
			s.stats.reject(RejectPlaintext)
			writeError(w, 0, proto.StatusUnavailable, "no operator relay for a plaintext upload (volunteers=1 allows volunteer relays)")
		case other:
			writeError(w, 0, proto.StatusUnavailable, "no live relay serves "+proto_+" uploads (relay --uploads)")
		default:
			writeError(w, 0, proto.StatusUnavailable, "no relay is live")
		}
		return
	}
	base, reach := s.reachLocked(rel, secure)
	s.mu.Unlock()
	u := base + path
	if proto_ == proto.UploadSTOR {
		u = pushScheme(schemeOf(base)) + u[len(schemeOf(base)):]
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, uploadEndpoint{
		Protocol: proto_, URL: u, Relay: rel.id, Reach: reach.String(),
		ExpiresIn: int64(s.cfg.UploadTTL / time.Second),
		Expires:   now.Add(s.cfg.UploadTTL).UTC().Format(time.RFC3339),
	})
}

func schemeOf(base string) string {
	if len(base) >= 5 && base[:5] == "https" {
		return "https"
	}
	return "http"
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func mapLen(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}
