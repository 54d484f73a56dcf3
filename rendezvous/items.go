package rendezvous

import (
	"mime"
	"net/netip"
	"slices"
	"time"
	"unicode"

	"golang.org/x/time/rate"

	"github.com/meshup/meshup/proto"
)

// Defaults for item metadata a publisher leaves empty.
const (
	defaultMIME        = "application/octet-stream"
	defaultMessageMIME = "text/plain; charset=utf-8"
	defaultMessageName = "message.txt"
)

// item is one published item. Its fields are guarded by Server.mu.
type item struct {
	id        proto.ItemID
	kind      string
	name      string
	mime      string
	size      int64
	text      string        // whole item for KindMessage
	via       string        // entry relay pinned by the publisher, or ""
	needRate  *rate.Limiter // needs for the item, all relays; made on the first need
	published time.Time
	src       netip.Addr // the publisher's IP, counted in MaxItemsPerIP; zero if exempt

	// members are the item's publisher sessions, in the order they
	// joined: one, or several for a swarm (proto.Publish.Swarm, issue 10).
	// Empty while the item is offline. Each member lists the item in its
	// session's items.
	members      []*session
	turn         int       // where publisherLocked starts its round-robin
	offlineSince time.Time // when the last member left

	// End-to-end encryption (proto/e2e.go, proto.Publish).
	enc        string // proto.E2EVersion for an encrypted item, or ""
	meta       string // sealed name, type and modification time
	volunteers bool   // volunteer relays may carry this plaintext item
	modified   int64  // the source's modification time (Publish.Modified), Unix seconds; 0 if unknown

	carried carried // what the mesh carried for it (entry.go)

	// Held items (held.go): bytes a relay received through a legacy
	// upload protocol and holds; no publisher session.
	held     bool
	protocol string          // the upload protocol (proto.Upload*)
	holders  map[string]bool // ids of the registered relays holding it
	holdDone bool            // every byte arrived; size is final
	expires  time.Time       // when it is dropped
	ended    string          // why its holder dropped it: readers are told until it expires
}

// anyRelay reports whether relays of class volunteer may carry the item:
// it is encrypted end to end, or its publisher allowed them.
func (it *item) anyRelay() bool { return it.enc != "" || it.volunteers }

// itemView is a copy of an item's metadata taken under Server.mu.
type itemView struct {
	id        proto.ItemID
	kind      string
	name      string
	mime      string
	size      int64
	text      string
	enc       string
	meta      string
	published time.Time
	modified  int64 // Publish.Modified
	online    bool
	// publishers is the number of member sessions (several for a swarm).
	publishers int
}

// validatorTime is the time in an item's read tokens (Claims.Modified),
// from which relays make its Last-Modified and ETag: the source's
// modification time when the publisher said it, none for an encrypted
// item (its ETag is then its id and a 0, the same after any reclaim), else
// when it was published.
func (v itemView) validatorTime() int64 {
	switch {
	case v.modified > 0:
		return v.modified
	case v.enc != "":
		return 0
	}
	return v.published.Unix()
}

func (it *item) view() itemView {
	return itemView{
		id: it.id, kind: it.kind, name: it.name, mime: it.mime, size: it.size,
		text: it.text, enc: it.enc, meta: it.meta, published: it.published, modified: it.modified,
		online: it.online(), publishers: len(it.members),
	}
}

// Swarm upload (issue 10). An item has a set of publisher sessions, its
// members. A Publish with ID, Owner and Swarm joins the item as one more
// member (or creates it when this rendezvous does not know it); its Kind,
// Size and Enc must be the item's, or it is refused with
// proto.StatusConflict. Every member holds the owner secret and the same
// bytes (for an encrypted item the same key: the ciphertext is
// deterministic, proto/e2e.go), so any member can serve any part. A
// joining member takes the item as it is: its name, type, via and
// volunteers stay; only an encrypted item's sealed Meta is replaced.
//
// Orders are spread over the members by publisherLocked. When a member's
// session ends, its orders fail back to the relays that needed them
// (endSession), which ask again from the last byte they hold; the item
// stays online while any member is left. Unpublish by a member takes only
// that member out (its orders of the item fail back the same way); the
// item ends when its last member unpublishes. A Publish with ID and Owner
// but without Swarm takes the item over: its session becomes the only
// member, as after a reconnect.
//
// Limits: a member counts the item in its session's MaxItemsPerSession;
// the item counts once in MaxItems and in MaxItemsPerIP, against the IP of
// the session that created it; at most MaxPublishersPerItem members.

// Rejection reasons of swarm publishing (see counters.reject).
const (
	RejectSwarmConflict = "swarm_conflict"      // a member announced another kind, size or encryption
	RejectPublishers    = "publishers_per_item" // MaxPublishersPerItem reached
)

// online reports whether the item has a publisher. The caller holds
// Server.mu.
func (it *item) online() bool { return len(it.members) > 0 || len(it.holders) > 0 }

// isMember reports whether session c publishes the item. The caller holds
// Server.mu.
func (it *item) isMember(c *session) bool {
	for _, m := range it.members {
		if m == c {
			return true
		}
	}
	return false
}

// publisherLocked picks the member the item's next order goes to, or nil
// while the item is offline: the one with the fewest orders outstanding,
// ties taken in turn, so that parts spread over a swarm; a member whose
// session is closing only when no other is left. The caller holds
// Server.mu and sends the order.
func (it *item) publisherLocked() *session {
	n := len(it.members)
	best, at := (*session)(nil), 0
	for k := range n {
		i := (it.turn + k) % n
		m := it.members[i]
		if best == nil || publisherBefore(m, best) {
			best, at = m, i
		}
	}
	if best != nil {
		it.turn = at + 1
	}
	return best
}

// publisherBefore reports whether member a should take an order before b:
// live before closing, then fewer orders outstanding.
func publisherBefore(a, b *session) bool {
	if ad, bd := a.isDone(), b.isDone(); ad != bd {
		return bd
	}
	return len(a.orders) < len(b.orders)
}

// addMemberLocked makes session c a publisher of it. The caller holds
// Server.mu and has checked the limits.
func (it *item) addMemberLocked(c *session) {
	it.members = append(it.members, c)
	it.offlineSince = time.Time{}
	c.items[it.id] = it
}

// removeMemberLocked takes session c out of it's publishers; the item goes
// offline at now when c was the last. The caller holds Server.mu.
func (it *item) removeMemberLocked(c *session, now time.Time) {
	it.members = slices.DeleteFunc(it.members, func(m *session) bool { return m == c })
	if c.items[it.id] == it {
		delete(c.items, it.id)
	}
	if len(it.members) == 0 {
		it.offlineSince = now
	}
}

// lookupItem returns a view of item id.
func (s *Server) lookupItem(id proto.ItemID) (itemView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[id]
	if it == nil {
		return itemView{}, false
	}
	return it.view(), true
}

// missingItem is the error for an item id this rendezvous does not know:
// not found, or offline during Config.ReclaimGrace after start, when its
// publisher may still be reclaiming it.
func (s *Server) missingItem(id proto.ItemID) *proto.Error {
	if s.cfg.Now().Sub(s.started) < s.cfg.ReclaimGrace {
		return proto.Errorf(proto.StatusOffline, "item %s is not known yet: the rendezvous restarted and its publisher has not reclaimed it", id)
	}
	return proto.Errorf(proto.StatusNotFound, "no item %s", id)
}

// checkPublish validates the metadata of a new item and fills in defaults.
func (s *Server) checkPublish(p *proto.Publish) *proto.Error {
	switch p.Kind {
	case proto.KindFile, proto.KindClip:
		if p.Text != "" {
			return proto.Errorf(proto.StatusMalformed, "text is only allowed for kind %q", proto.KindMessage)
		}
		if p.Size < 0 {
			return proto.Errorf(proto.StatusMalformed, "negative size %d", p.Size)
		}
		if p.Size > s.cfg.MaxItemSize {
			return proto.Errorf(proto.StatusTooLarge, "size %d over the limit of %d bytes", p.Size, s.cfg.MaxItemSize)
		}
		if p.MIME == "" {
			p.MIME = defaultMIME
		}
	case proto.KindMessage:
		if len(p.Text) > s.cfg.MaxTextMessage {
			return proto.Errorf(proto.StatusTooLarge, "message text of %d bytes over the limit of %d", len(p.Text), s.cfg.MaxTextMessage)
		}
		p.Size = int64(len(p.Text))
		if p.MIME == "" {
			p.MIME = defaultMessageMIME
		}
		if p.Name == "" {
			p.Name = defaultMessageName
		}
	default:
		return proto.Errorf(proto.StatusMalformed, "unknown kind %.40q", p.Kind)
	}
	if perr := checkEncryption(p); perr != nil {
		return perr
	}
	if len(p.Name) > MaxNameLen {
		return proto.Errorf(proto.StatusMalformed, "name of %d bytes over the limit of %d", len(p.Name), MaxNameLen)
	}
	for _, r := range p.Name {
		if unicode.IsControl(r) {
			return proto.Errorf(proto.StatusMalformed, "name contains control characters")
		}
	}
	if len(p.Via) > maxPeerIDLen {
		return proto.Errorf(proto.StatusMalformed, "via of %d bytes is not a relay id", len(p.Via))
	}
	if len(p.MIME) > MaxMIMELen {
		return proto.Errorf(proto.StatusMalformed, "mime type of %d bytes over the limit of %d", len(p.MIME), MaxMIMELen)
	}
	if _, _, err := mime.ParseMediaType(p.MIME); err != nil {
		return proto.Errorf(proto.StatusMalformed, "mime type %.40q: %v", p.MIME, err)
	}
	return nil
}

// checkEncryption validates the end-to-end encryption fields of p (see
// proto/e2e.go): an encrypted item is a file or clip whose size is a
// valid ciphertext size, with no name and an opaque MIME type; its name
// and type travel sealed in Meta.
func checkEncryption(p *proto.Publish) *proto.Error {
	if p.Enc == "" {
		if p.Meta != "" {
			return proto.Errorf(proto.StatusMalformed, "meta is only allowed on encrypted items")
		}
		return nil
	}
	if p.Enc != proto.E2EVersion {
		return proto.Errorf(proto.StatusMalformed, "unknown encryption %.40q (want %q)", p.Enc, proto.E2EVersion)
	}
	if p.Kind == proto.KindMessage {
		return proto.Errorf(proto.StatusMalformed, "a message cannot be encrypted; publish it as a file")
	}
	if len(p.Meta) > proto.E2EMaxMeta {
		return proto.Errorf(proto.StatusTooLarge, "meta of %d bytes over the limit of %d", len(p.Meta), proto.E2EMaxMeta)
	}
	if _, err := proto.E2EPlainSize(p.Size); err != nil {
		return proto.Errorf(proto.StatusMalformed, "size %d is not an %s ciphertext size", p.Size, proto.E2EVersion)
	}
	if p.Name != "" {
		return proto.Errorf(proto.StatusMalformed, "an encrypted item has no name in clear (it goes in meta)")
	}
	if p.MIME != defaultMIME {
		return proto.Errorf(proto.StatusMalformed, "an encrypted item has MIME type %s", defaultMIME)
	}
	return nil
}

// publish handles a Publish from session c and returns the reply.
func (s *Server) publish(c *session, p *proto.Publish) proto.Message {
	if !p.ID.IsZero() || p.Owner != "" {
		return s.reclaim(c, p)
	}
	if perr := s.checkPublish(p); perr != nil {
		return s.publishRefused(c, p.Ref, perr)
	}
	if perr := s.checkPublishHook(s.ctx, c, p); perr != nil { // the auth webhook (held.go)
		return s.publishRefused(c, p.Ref, perr)
	}
	id, secret := proto.NewOwnedItemID()
	if e := s.addItem(c, p, id); e != nil {
		return s.publishRefused(c, p.Ref, e)
	}
	s.stats.publishes.Add(1)
	c.log.Info("item published", "item", id, "kind", p.Kind, "size", p.Size)
	return s.published(p.Ref, id, secret)
}

// addItem stores a new item with id, published by session c with p's
// metadata (already checked), unless a limit refuses it.
func (s *Server) addItem(c *session, p *proto.Publish, id proto.ItemID) *proto.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items[id] != nil {
		return proto.Errorf(proto.StatusProtocol, "item %s exists", id)
	}
	return s.addItemLocked(c, p, id)
}

// addItemLocked is addItem for a caller holding s.mu that has checked that
// id is unknown.
func (s *Server) addItemLocked(c *session, p *proto.Publish, id proto.ItemID) *proto.Error {
	it := &item{
		id: id, kind: p.Kind, name: p.Name, mime: p.MIME,
		size: p.Size, text: p.Text, via: p.Via, enc: p.Enc, meta: p.Meta, volunteers: p.Volunteers, modified: max(p.Modified, 0),
		published: s.cfg.Now(), src: c.ip,
	}
	if len(c.items) >= s.cfg.MaxItemsPerSession {
		return proto.Errorf(proto.StatusOverLimit, "session has %d items, the limit", len(c.items))
	}
	if len(s.items) >= s.cfg.MaxItems {
		return proto.Errorf(proto.StatusOverLimit, "server holds %d items, the limit", s.cfg.MaxItems)
	}
	if !s.itemAllowedLocked(it.src) {
		s.stats.reject(RejectItemsPerIP)
		return proto.Errorf(proto.StatusOverLimit, "your address has published %d items (online and offline), the limit", s.cfg.MaxItemsPerIP)
	}
	s.countItemLocked(it, 1)
	s.items[it.id] = it
	it.addMemberLocked(c)
	return nil
}

// reclaim takes an item back online for session c when p carries its id
// and owner secret (see proto.ItemID for how the id derives from the
// secret). A known item keeps its metadata and p's is ignored; an item this
// rendezvous has never seen (it restarted, keeping no state) is published
// again under its id with p's metadata, so its share links work again.
// A known encrypted item takes p's sealed Meta, which the publisher can
// seal only once it knows the id.
//
// Without p.Swarm, c becomes the item's only publisher (the newest session
// of the owner wins); with it, c joins the item's members (see "Swarm
// upload" above).
func (s *Server) reclaim(c *session, p *proto.Publish) proto.Message {
	if p.ID.IsZero() || p.Owner == "" {
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusMalformed, "reclaiming an item needs both id and owner"))
	}
	if p.Swarm && p.Kind == proto.KindMessage {
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusMalformed, "a message is served by the rendezvous: it cannot be published by a swarm"))
	}
	if ok, _ := proto.OwnerOf(p.ID, p.Owner); !ok {
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusForbidden, "owner secret does not match item %s", p.ID))
	}
	s.mu.Lock()
	it := s.items[p.ID]
	if it == nil {
		// Checked outside the lock; another member of a swarm may create
		// the item meanwhile, and then c joins it.
		s.mu.Unlock()
		if perr := s.checkPublish(p); perr != nil {
			return s.publishRefused(c, p.Ref, perr)
		}
		s.mu.Lock()
		if it = s.items[p.ID]; it == nil {
			e := s.addItemLocked(c, p, p.ID)
			s.mu.Unlock()
			if e != nil {
				return s.publishRefused(c, p.Ref, e)
			}
			s.stats.reclaims.Add(1)
			c.log.Info("item reclaimed, unknown until now", "item", p.ID, "kind", p.Kind, "size", p.Size, "swarm", p.Swarm)
			return s.published(p.Ref, p.ID, p.Owner)
		}
	}
	var e *proto.Error
	if p.Swarm {
		e = s.joinLocked(c, it, p)
	} else {
		e = s.takeOverLocked(c, it)
	}
	if e != nil {
		s.mu.Unlock()
		return s.publishRefused(c, p.Ref, e)
	}
	if len(p.Via) <= maxPeerIDLen && (!p.Swarm || p.Via != "") {
		it.via = p.Via
	}
	if !p.Swarm {
		// The item's encryption was fixed when it was published; a
		// reclaim may change only whether volunteers may carry it in
		// plaintext. A swarm member takes the item as it is.
		it.volunteers = p.Volunteers
	}
	if it.enc != "" && p.Meta != "" && len(p.Meta) <= proto.E2EMaxMeta {
		// Sealed metadata needs the item id, which the publisher learns
		// from Published: it sends Meta when it takes the item back.
		if it.meta != p.Meta {
			it.meta = p.Meta
			s.clipMetaChangedLocked(it) // clip_restart.go: its holders keep it
		}
	}
	members := len(it.members)
	s.mu.Unlock()
	s.stats.reclaims.Add(1)
	c.log.Info("item reclaimed", "item", p.ID, "swarm", p.Swarm, "publishers", members)
	return s.published(p.Ref, p.ID, p.Owner)
}

// takeOverLocked makes session c the only publisher of it. Orders already
// sent to the sessions it replaces stay theirs until they settle. The
// caller holds s.mu.
func (s *Server) takeOverLocked(c *session, it *item) *proto.Error {
	if it.isMember(c) && len(it.members) == 1 {
		return nil
	}
	if !it.isMember(c) && len(c.items) >= s.cfg.MaxItemsPerSession {
		return proto.Errorf(proto.StatusOverLimit, "session has %d items, the limit", len(c.items))
	}
	for _, m := range it.members {
		if m != c {
			// The publisher reconnected before its old session ended;
			// the newest session wins.
			delete(m.items, it.id)
		}
	}
	it.members = it.members[:0]
	it.addMemberLocked(c)
	return nil
}

// joinLocked adds session c to the members of it, after checking that p
// announces the same bytes. The caller holds s.mu.
func (s *Server) joinLocked(c *session, it *item, p *proto.Publish) *proto.Error {
	if p.Kind != it.kind || p.Size != it.size || p.Enc != it.enc {
		s.stats.reject(RejectSwarmConflict)
		return proto.Errorf(proto.StatusConflict, "item %s is a %s of %d bytes, encryption %q; this publisher announces a %.20s of %d bytes, encryption %.20q",
			it.id, it.kind, it.size, it.enc, p.Kind, p.Size, p.Enc)
	}
	if it.isMember(c) {
		return nil
	}
	if len(c.items) >= s.cfg.MaxItemsPerSession {
		return proto.Errorf(proto.StatusOverLimit, "session has %d items, the limit", len(c.items))
	}
	if len(it.members) >= s.cfg.MaxPublishersPerItem {
		s.stats.reject(RejectPublishers)
		return proto.Errorf(proto.StatusOverLimit, "item %s has %d publishers, the limit", it.id, len(it.members))
	}
	it.addMemberLocked(c)
	return nil
}

func (s *Server) published(ref string, id proto.ItemID, owner string) *proto.Published {
	return &proto.Published{
		Ref:         ref,
		ID:          id,
		Owner:       owner,
		ShareURL:    s.cfg.PublicURL + "/i/" + id.String(),
		DownloadURL: s.cfg.PublicURL + "/v1/items/" + id.String(),
	}
}

func (s *Server) publishRefused(c *session, ref string, e *proto.Error) *proto.ErrorMsg {
	s.stats.reject(RejectPublish)
	c.log.Debug("publish refused", "ref", ref, "status", e.Status, "reason", e.Msg)
	return &proto.ErrorMsg{Ref: ref, Status: e.Status, Reason: e.Msg}
}

// unpublish handles an Unpublish from session c. It returns an error reply,
// or nil on success (unpublish has no positive reply). Session c stops
// publishing the item: its orders of the item fail back to the relays that
// needed them, which ask again and are served by another member. When c
// was the last member the item ends, and relays waiting for its parts are
// told it is gone.
func (s *Server) unpublish(c *session, u *proto.Unpublish) proto.Message {
	s.mu.Lock()
	it := s.items[u.ID]
	var e *proto.Error
	switch {
	case it == nil:
		e = proto.Errorf(proto.StatusNotFound, "no item %s", u.ID)
	case !it.isMember(c):
		e = proto.Errorf(proto.StatusForbidden, "item %s is not published by this session", u.ID)
	}
	if e != nil {
		s.mu.Unlock()
		s.stats.reject(RejectUnpublish)
		return &proto.ErrorMsg{Status: e.Status, Reason: e.Msg}
	}
	it.removeMemberLocked(c, s.cfg.Now())
	left := len(it.members)
	if left == 0 {
		delete(s.items, it.id)
		s.countItemLocked(it, -1)
		s.releaseClipLocked(it) // clip_restart.go: its holders drop it
	}
	for _, o := range s.orders {
		switch {
		case o.item != it.id:
		case left == 0:
			s.needFailedLocked(o.relay, o.need, proto.StatusNotFound, "item unpublished")
			s.forgetOrderLocked(o)
		case o.sess == c:
			c.enqueue(&proto.Cancel{Order: o.id})
			s.needFailedLocked(o.relay, o.need, proto.StatusOffline, "publisher left the swarm")
			s.forgetOrderLocked(o)
		}
	}
	s.mu.Unlock()
	s.stats.unpublishes.Add(1)
	c.log.Info("item unpublished", "item", u.ID, "publishers_left", left)
	return nil
}
