package rendezvous

import (
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// The rendezvous's part in the cluster (Config.Cluster): it publishes the
// signed records of the relays registered here, withdraws them when their
// registration ends, and lists the relays of the other members in
// GET /v1/status. Relays only homed elsewhere are listed, not yet chosen
// for orders: orders need the relay's register stream, which only its
// home has.

// publishRecord gossips the signed directory record a relay sent in its
// register or heartbeat. data may be empty: relays before the cluster
// send none.
func (s *Server) publishRecord(r *relayConn, data []byte) {
	c := s.cfg.Cluster
	if c == nil || len(data) == 0 {
		return
	}
	rec, err := mesh.DecodeRecord(data)
	if err == nil && rec.Relay != r.id {
		err = errors.New("record names relay " + rec.Relay + ", not the registered one")
	}
	if err == nil {
		err = c.Publish(rec)
	}
	if err != nil {
		s.stats.reject(RejectRecord)
		r.log.Warn("relay directory record refused; the relay is not gossiped", "err", err)
		return
	}
	r.log.Debug("relay directory record published", "seq", rec.Seq, "expires", time.Unix(rec.Expires, 0).UTC())
}

// withdrawRecord takes a relay whose registration ended out of the
// cluster's directory.
func (s *Server) withdrawRecord(relay string) {
	if c := s.cfg.Cluster; c != nil {
		c.Withdraw(relay)
	}
}

// clusterStatus is the "cluster" object of GET /v1/status.
type clusterStatus struct {
	Name    string            `json:"name"`
	Members []mesh.Member     `json:"members"`
	Records int               `json:"records"`
	Dropped map[string]uint64 `json:"dropped"` // gossip refused, by reason
}

// addClusterStatus adds the cluster object to body and the relays known
// only through gossip to its relay list: local false, home the member
// they are registered with.
func (s *Server) addClusterStatus(body *statusBody) {
	c := s.cfg.Cluster
	if c == nil {
		return
	}
	st := c.Stats()
	body.Cluster = &clusterStatus{
		Name:    c.Name(),
		Members: c.Members(),
		Records: st.Records,
		Dropped: maps.Clone(st.Dropped),
	}
	local := make(map[string]bool, len(body.Relays))
	for i := range body.Relays {
		body.Relays[i].Home = c.Name()
		local[body.Relays[i].ID] = true
	}
	for _, rec := range c.Directory() {
		if local[rec.Relay] || rec.Home == c.Name() {
			continue
		}
		body.Relays = append(body.Relays, relayStatus{
			ID:      rec.Relay,
			HTTPURL: rec.HTTPURL,
			MeshStatus: proto.MeshStatus{
				NAT:   rec.NAT,
				Addrs: proto.MeshAddrs{Observed: []string{}, Advertised: slices.Clone(rec.Addrs)},
				Peers: []proto.MeshPeer{},
			},
			Home:    rec.Home,
			Local:   false,
			Alive:   true,
			Expires: time.Unix(rec.Expires, 0).UTC().Format(time.RFC3339),
		})
	}
}
