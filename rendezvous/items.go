package rendezvous

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"mime"
	"net/netip"
	"time"
	"unicode"

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
	text      string // whole item for KindMessage
	via       string // entry relay pinned by the publisher, or ""
	owner     [sha256.Size]byte
	published time.Time
	src       netip.Addr // the publisher's IP, counted in MaxItemsPerIP; zero if exempt

	sess         *session  // the publisher's session; nil while offline
	offlineSince time.Time // when sess became nil
}

// itemView is a copy of an item's metadata taken under Server.mu.
type itemView struct {
	id        proto.ItemID
	kind      string
	name      string
	mime      string
	size      int64
	text      string
	published time.Time
	online    bool
}

func (it *item) view() itemView {
	return itemView{
		id: it.id, kind: it.kind, name: it.name, mime: it.mime, size: it.size,
		text: it.text, published: it.published, online: it.sess != nil,
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

// newOwnerSecret returns a fresh owner secret and its hash.
func newOwnerSecret() (string, [sha256.Size]byte) {
	var b [32]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	secret := base64.RawURLEncoding.EncodeToString(b[:])
	return secret, sha256.Sum256([]byte(secret))
}

// ownerMatches reports, in constant time, whether secret is it's owner
// secret.
func (it *item) ownerMatches(secret string) bool {
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(h[:], it.owner[:]) == 1
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

// publish handles a Publish from session c and returns the reply.
func (s *Server) publish(c *session, p *proto.Publish) proto.Message {
	if !p.ID.IsZero() || p.Owner != "" {
		return s.reclaim(c, p)
	}
	if perr := s.checkPublish(p); perr != nil {
		return s.publishRefused(c, p.Ref, perr)
	}
	secret, hash := newOwnerSecret()
	now := s.cfg.Now()
	it := &item{
		id: proto.NewItemID(), kind: p.Kind, name: p.Name, mime: p.MIME,
		size: p.Size, text: p.Text, via: p.Via, owner: hash, published: now, sess: c,
		src: c.ip,
	}
	s.mu.Lock()
	if len(c.items) >= s.cfg.MaxItemsPerSession {
		s.mu.Unlock()
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusOverLimit, "session has %d items, the limit", len(c.items)))
	}
	if len(s.items) >= s.cfg.MaxItems {
		s.mu.Unlock()
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusOverLimit, "server holds %d items, the limit", s.cfg.MaxItems))
	}
	if !s.itemAllowedLocked(it.src) {
		s.mu.Unlock()
		s.stats.reject(RejectItemsPerIP)
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusOverLimit, "your address has published %d items (online and offline), the limit", s.cfg.MaxItemsPerIP))
	}
	s.countItemLocked(it, 1)
	s.items[it.id] = it
	c.items[it.id] = it
	s.mu.Unlock()
	s.stats.publishes.Add(1)
	c.log.Info("item published", "item", it.id, "kind", it.kind, "size", it.size)
	return s.published(p.Ref, it.id, secret)
}

// reclaim takes an item back online for session c when p carries its id
// and owner secret. The item keeps its metadata; p's metadata is ignored.
func (s *Server) reclaim(c *session, p *proto.Publish) proto.Message {
	if p.ID.IsZero() || p.Owner == "" {
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusMalformed, "reclaiming an item needs both id and owner"))
	}
	s.mu.Lock()
	it := s.items[p.ID]
	if it == nil {
		s.mu.Unlock()
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusNotFound, "no item %s", p.ID))
	}
	if !it.ownerMatches(p.Owner) {
		s.mu.Unlock()
		return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusForbidden, "owner secret does not match item %s", p.ID))
	}
	if it.sess != c {
		if len(c.items) >= s.cfg.MaxItemsPerSession {
			s.mu.Unlock()
			return s.publishRefused(c, p.Ref, proto.Errorf(proto.StatusOverLimit, "session has %d items, the limit", len(c.items)))
		}
		if it.sess != nil {
			// The publisher reconnected before its old session ended;
			// the newest session wins.
			delete(it.sess.items, it.id)
		}
		it.sess = c
		it.offlineSince = time.Time{}
		c.items[it.id] = it
	}
	if len(p.Via) <= maxPeerIDLen {
		it.via = p.Via
	}
	s.mu.Unlock()
	s.stats.reclaims.Add(1)
	c.log.Info("item reclaimed", "item", p.ID)
	return s.published(p.Ref, p.ID, p.Owner)
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
// or nil on success (unpublish has no positive reply). Relays waiting for
// parts of the item are told it is gone.
func (s *Server) unpublish(c *session, u *proto.Unpublish) proto.Message {
	s.mu.Lock()
	it := s.items[u.ID]
	var e *proto.Error
	switch {
	case it == nil:
		e = proto.Errorf(proto.StatusNotFound, "no item %s", u.ID)
	case it.sess != c:
		e = proto.Errorf(proto.StatusForbidden, "item %s is not published by this session", u.ID)
	}
	if e != nil {
		s.mu.Unlock()
		s.stats.reject(RejectUnpublish)
		return &proto.ErrorMsg{Status: e.Status, Reason: e.Msg}
	}
	delete(s.items, it.id)
	s.countItemLocked(it, -1)
	delete(c.items, it.id)
	for _, o := range s.orders {
		if o.item == it.id {
			s.needFailedLocked(o.relay, o.need, proto.StatusNotFound, "item unpublished")
			s.forgetOrderLocked(o)
		}
	}
	s.mu.Unlock()
	s.stats.unpublishes.Add(1)
	c.log.Info("item unpublished", "item", u.ID)
	return nil
}
