package rendezvous

import (
	"slices"
	"strings"
	"time"

	"github.com/meshup/meshup/proto"
)

// Directories. Each relay learns the other live relays from Peers messages
// on its register stream. They travel as deltas against what that relay
// was sent before (its sentDir), coalesced: a change marks the directory
// dirty, and directoryLoop sends the deltas at most once per
// DirectoryInterval, so a relay flapping its addresses costs every other
// relay one message per interval, not one per heartbeat. A newly
// registered relay gets the whole directory at once. Every message stays
// within proto.MaxDirectoryMessage, which the relays' read limit is
// derived from (proto.RelayReadLimit): no registration, however large,
// can knock an honest relay off.

// dirEntry is one relay's directory entry and its fingerprint.
type dirEntry struct {
	info proto.PeerInfo
	fp   string
}

// directoryLocked returns the current directory entries by relay id.
func (s *Server) directoryLocked() map[string]dirEntry {
	out := make(map[string]dirEntry, len(s.relays))
	for _, r := range s.relays {
		if r.isDone() || len(out) >= maxRelayPeers {
			continue
		}
		addrs := slices.Clone(r.dirAddrs)
		out[r.id] = dirEntry{
			info: proto.PeerInfo{ID: r.id, NAT: r.nat, Addrs: addrs},
			fp:   r.nat + "\x00" + strings.Join(addrs, "\x00"),
		}
	}
	return out
}

// markDirectoryLocked notes that the directory changed; the next tick of
// directoryLoop sends the deltas.
func (s *Server) markDirectoryLocked() { s.dirDirty = true }

// sendDirectoryLocked sends relay r the delta between dir and what r was
// sent before. It reports whether anything was sent.
func (s *Server) sendDirectoryLocked(r *relayConn, dir map[string]dirEntry) bool {
	if r.isDone() || r.sentDir == nil {
		return false
	}
	var changed []proto.PeerInfo
	var removed []string
	for id, e := range dir {
		if id != r.id && r.sentDir[id] != e.fp {
			changed = append(changed, e.info)
		}
	}
	for id := range r.sentDir {
		if _, ok := dir[id]; !ok {
			removed = append(removed, id)
		}
	}
	if len(changed) == 0 && len(removed) == 0 {
		return false
	}
	slices.SortFunc(changed, func(a, b proto.PeerInfo) int { return strings.Compare(a.ID, b.ID) })
	slices.Sort(removed)
	for _, m := range packDirectory(changed, removed) {
		if !r.enqueue(m) {
			return false
		}
	}
	for _, p := range changed {
		r.sentDir[p.ID] = dir[p.ID].fp
	}
	for _, id := range removed {
		delete(r.sentDir, id)
	}
	s.stats.directories.Add(1)
	return true
}

// packDirectory splits a delta into Peers messages of at most
// proto.MaxDirectoryMessage bytes each (bounded entries: two always fit).
func packDirectory(changed []proto.PeerInfo, removed []string) []*proto.Peers {
	var out []*proto.Peers
	cur := &proto.Peers{Peers: []proto.PeerInfo{}, Delta: true}
	size := 64
	flush := func() {
		out = append(out, cur)
		cur = &proto.Peers{Peers: []proto.PeerInfo{}, Delta: true}
		size = 64
	}
	for _, p := range changed {
		n := entrySize(p)
		if size+n > proto.MaxDirectoryMessage {
			flush()
		}
		cur.Peers = append(cur.Peers, p)
		size += n
	}
	for _, id := range removed {
		n := 6*len(id) + 4
		if size+n > proto.MaxDirectoryMessage {
			flush()
		}
		cur.Removed = append(cur.Removed, id)
		size += n
	}
	if len(cur.Peers) > 0 || len(cur.Removed) > 0 {
		out = append(out, cur)
	}
	return out
}

// entrySize bounds the JSON size of p from above (every byte escaped).
func entrySize(p proto.PeerInfo) int {
	n := 6*(len(p.ID)+len(p.NAT)) + 48
	for _, a := range p.Addrs {
		n += 6*len(a) + 4
	}
	return n
}

// directoryLoop sends the coalesced directory deltas every
// DirectoryInterval while the directory is dirty, until the server closes.
func (s *Server) directoryLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.DirectoryInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.flushDirectories()
		}
	}
}

// flushDirectories sends every relay its directory delta, if the
// directory changed since the last flush.
func (s *Server) flushDirectories() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirDirty {
		return
	}
	s.dirDirty = false
	dir := s.directoryLocked()
	for _, r := range s.relays {
		s.sendDirectoryLocked(r, dir)
	}
}
