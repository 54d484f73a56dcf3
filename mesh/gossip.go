package mesh

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip messages. memberlist carries them encrypted; each is one type
// byte and a body:
//
//	msgRecord    a record (RelayRecord encoding)
//	msgWithdraw  str relay, str home, u64 seq: the home dropped the
//	             relay's records up to seq
//
// The push-pull state (LocalState) is:
//
//	u8  stateVersion
//	u32 count, then count times: u32 length, a record
//
// Unknown message types are counted and skipped, so versions can mix.
const (
	msgRecord   byte = 1
	msgWithdraw byte = 2

	stateVersion byte = 1
)

// maxWithdrawMsg bounds a withdraw message: two peer-id-sized strings and
// a seq.
const maxWithdrawMsg = 1 + 2 + 256 + 2 + 256 + 8

func appendRecordMsg(b []byte, r *RelayRecord) ([]byte, error) {
	return AppendRecord(append(b, msgRecord), r)
}

func appendWithdrawMsg(b []byte, relay, home string, seq uint64) []byte {
	b = append(b, msgWithdraw)
	b, _ = appendStr(b, relay) // peer ids and names are short
	b, _ = appendStr(b, home)
	return binary.BigEndian.AppendUint64(b, seq)
}

func decodeWithdraw(body []byte) (relay, home string, seq uint64, err error) {
	d := recordReader{b: body}
	relay = d.str("relay")
	home = d.str("home")
	seq = d.u64("seq")
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes after the withdraw", len(d.b))
	}
	if d.err == nil && (relay == "" || home == "") {
		d.fail("withdraw without relay or home")
	}
	return relay, home, seq, d.err
}

// broadcast is a queued gossip message about one relay; a newer one about
// the same relay replaces it in the queue.
type broadcast struct {
	name string // relay peer id
	msg  []byte
}

func (b *broadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// clusterDelegate is the Cluster as memberlist's Delegate. memberlist
// calls it from its own goroutines, concurrently; it never calls back
// into memberlist.
type clusterDelegate Cluster

func (d *clusterDelegate) NodeMeta(limit int) []byte {
	if d.leaving.Load() {
		return []byte(metaLeaving)
	}
	return nil
}

func (d *clusterDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// NotifyMsg handles one gossip message. buf is only valid during the call.
func (d *clusterDelegate) NotifyMsg(buf []byte) {
	c := (*Cluster)(d)
	if len(buf) == 0 {
		c.drop(DropMalformed, "err", "empty message")
		return
	}
	switch buf[0] {
	case msgRecord:
		if len(buf)-1 > c.cfg.MaxRecordSize {
			c.drop(DropTooLarge, "bytes", len(buf)-1)
			return
		}
		c.receiveRecord(buf[1:], time.Now())
	case msgWithdraw:
		if len(buf) > maxWithdrawMsg {
			c.drop(DropTooLarge, "bytes", len(buf))
			return
		}
		relay, home, seq, err := decodeWithdraw(buf[1:])
		if err != nil {
			c.drop(DropMalformed, "err", err)
			return
		}
		c.receiveWithdraw(relay, home, seq, time.Now())
	default:
		c.drop(DropUnknownType, "type", buf[0])
	}
}

// LocalState returns the whole directory for a push-pull.
func (d *clusterDelegate) LocalState(join bool) []byte {
	c := (*Cluster)(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	b := []byte{stateVersion}
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.records)))
	for _, r := range c.records {
		at := len(b)
		b = append(b, 0, 0, 0, 0)
		var err error
		if b, err = AppendRecord(b, &r); err != nil {
			// Cannot happen for a stored record; keep the state valid.
			c.log.Error("encode stored record", "relay", r.Relay, "err", err)
			b = append(b[:at], 0, 0, 0, 0)
			continue
		}
		binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	}
	return b
}

// MergeRemoteState takes in the records of a peer's push-pull state.
func (d *clusterDelegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Cluster)(d)
	if len(buf) == 0 {
		return // a peer with an empty state, or no delegate
	}
	if buf[0] != stateVersion {
		c.drop(DropUnknownType, "state_version", buf[0])
		return
	}
	if len(buf) < 5 {
		c.drop(DropMalformed, "err", "truncated state")
		return
	}
	n := binary.BigEndian.Uint32(buf[1:])
	rest := buf[5:]
	now := time.Now()
	for i := uint32(0); i < n; i++ {
		if len(rest) < 4 {
			c.drop(DropMalformed, "err", "truncated state")
			return
		}
		size := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(size) > uint64(len(rest)) {
			c.drop(DropMalformed, "err", "truncated state")
			return
		}
		rec := rest[:size]
		rest = rest[size:]
		if len(rec) > c.cfg.MaxRecordSize {
			c.drop(DropTooLarge, "bytes", len(rec))
			continue
		}
		c.receiveRecord(rec, now)
	}
	if len(rest) > 0 {
		c.drop(DropMalformed, "err", fmt.Sprintf("%d bytes after the state", len(rest)))
	}
}

// receiveRecord decodes, verifies and stores a record from a peer, and
// passes it on when it is news.
func (c *Cluster) receiveRecord(data []byte, now time.Time) {
	r, err := DecodeRecord(data)
	if err != nil {
		c.drop(DropMalformed, "err", err)
		return
	}
	c.mu.Lock()
	old, had := c.records[r.Relay]
	c.mu.Unlock()
	if had && old.Seq >= r.Seq {
		return // known already: skip the signature check
	}
	if reason := c.checkTimes(&r, now); reason != "" {
		c.drop(reason, "relay", r.Relay, "home", r.Home)
		return
	}
	if err := VerifyRecord(r); err != nil {
		c.drop(DropBadSignature, "relay", r.Relay, "home", r.Home, "err", err)
		return
	}
	stored, reason, err := c.store(r, false)
	switch {
	case err != nil:
		return // closed
	case reason != "":
		c.drop(reason, "relay", r.Relay, "home", r.Home)
		return
	case !stored:
		return
	}
	c.learned.Add(1)
	msg := append([]byte{msgRecord}, data...)
	c.queue.QueueBroadcast(&broadcast{name: r.Relay, msg: msg})
	c.log.Debug("relay record learned", "relay", r.Relay, "home", r.Home, "seq", r.Seq)
}

// receiveWithdraw applies a tombstone from the relay's home, and passes it
// on when it removed a record.
func (c *Cluster) receiveWithdraw(relay, home string, seq uint64, now time.Time) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	removed := false
	if r, ok := c.records[relay]; ok && r.Home == home && r.Seq <= seq {
		delete(c.records, relay)
		removed = true
	}
	t, had := c.tombs[relay]
	switch {
	case had && t.home == home && t.seq >= seq:
	case !had && len(c.tombs) >= c.cfg.MaxRecords:
		// Full: the record, if it comes late, lives until it expires.
	default:
		c.tombs[relay] = tombstone{home: home, seq: seq, until: now.Add(c.cfg.MaxRecordTTL)}
	}
	c.mu.Unlock()
	if !removed {
		return
	}
	c.withdrawn.Add(1)
	c.queue.QueueBroadcast(&broadcast{name: relay, msg: appendWithdrawMsg(nil, relay, home, seq)})
	c.log.Debug("relay record withdrawn by its home", "relay", relay, "home", home)
}

// clusterEvents is the Cluster as memberlist's EventDelegate. memberlist
// calls it holding its node lock, so it must never call into memberlist.
type clusterEvents Cluster

func (e *clusterEvents) NotifyJoin(n *memberlist.Node) {
	c := (*Cluster)(e)
	c.mu.Lock()
	if _, ok := c.members[n.Name]; !ok {
		c.numMembers.Add(1)
	}
	c.members[n.Name] = Member{Name: n.Name, Addr: n.Address(), State: MemberAlive}
	delete(c.departed, n.Name)
	c.mu.Unlock()
	if n.Name != c.cfg.Name {
		c.joins.Add(1)
		c.log.Info("cluster member joined", "member", n.Name, "addr", n.Address())
	}
}

func (e *clusterEvents) NotifyLeave(n *memberlist.Node) {
	c := (*Cluster)(e)
	m := Member{Name: n.Name, Addr: n.Address(), State: MemberDead}
	if string(n.Meta) == metaLeaving {
		m.State = MemberLeft
	}
	c.mu.Lock()
	if _, ok := c.members[n.Name]; ok {
		delete(c.members, n.Name)
		c.numMembers.Add(-1)
	}
	c.departed[n.Name] = departure{m: m, since: time.Now()}
	gone := 0
	for id, r := range c.records {
		if r.Home == n.Name {
			delete(c.records, id)
			gone++
		}
	}
	c.mu.Unlock()
	if n.Name == c.cfg.Name {
		return // our own leave, on Close
	}
	c.homeGone.Add(uint64(gone))
	if m.State == MemberLeft {
		c.leaves.Add(1)
		c.log.Info("cluster member left", "member", n.Name, "records_dropped", gone)
	} else {
		c.failures.Add(1)
		c.log.Warn("cluster member failed", "member", n.Name, "addr", m.Addr, "records_dropped", gone)
	}
	if fn := c.cfg.OnLeave; fn != nil {
		name := n.Name
		c.queueCallback(func() { fn(name) })
	}
}

// NotifyUpdate keeps a member's address current.
func (e *clusterEvents) NotifyUpdate(n *memberlist.Node) {
	c := (*Cluster)(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	if m, ok := c.members[n.Name]; ok {
		m.Addr = n.Address()
		c.members[n.Name] = m
	}
}
