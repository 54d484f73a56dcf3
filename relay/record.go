package relay

import (
	"time"

	"github.com/meshup/meshup/mesh"
)

// recordTTL is the lifetime of the directory records the relay signs for
// its rendezvous's cluster. The relay sends a fresh one in a heartbeat
// once half of it has passed, so the record never lapses while the
// registration lives.
const recordTTL = 10 * time.Minute

// signRecord returns the relay's directory record naming home (the
// rendezvous's peer id), signed with the relay's libp2p key and encoded.
// On failure it logs and returns nil: the registration goes on without a
// record, and the relay is then not gossiped.
func (s *Server) signRecord(home string) []byte {
	r := mesh.RelayRecord{
		Addrs:   s.cfg.Node.Addrs(),
		HTTPURL: s.cfg.PublicURL,
		NAT:     s.natType(),
		Home:    home,
		Expires: time.Now().Add(recordTTL).Unix(),
	}
	if err := s.cfg.Node.SignRecord(&r); err != nil {
		s.log.Warn("sign directory record", "err", err)
		return nil
	}
	b, err := mesh.EncodeRecord(&r)
	if err != nil {
		s.log.Warn("encode directory record", "err", err)
		return nil
	}
	return b
}

// recordDue returns a fresh record for l's heartbeat when the last one is
// half way to expiry, else nil. Only l's writer calls it.
func (s *Server) recordDue(l *link, now time.Time) []byte {
	if now.Sub(l.recordAt) < recordTTL/2 {
		return nil
	}
	l.recordAt = now
	return s.signRecord(l.home)
}
