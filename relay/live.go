package relay

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Live channels (issue 12, proto/live.go). A channel on a relay is a ring
// of its most recent chunks (LiveConfig.Buffer bytes, reserved in the
// relay's budget) and a set of subscribers. The one who writes into the
// channel (a publisher's PUT, EvSocket members, or the stream from the
// upstream relay) appends to the ring and never waits for anyone. Each
// subscriber (an HTTP reader, an EvSocket member, a downstream relay) has
// a cursor into the ring and one writer goroutine that sends from its
// cursor (model: tailscale derpserver sendLoop). A subscriber more than
// LiveConfig.Queue bytes behind the live edge is cut off with a reason
// and counted; the others are not slowed. A downstream relay is one
// subscriber however many readers it serves: the fan-out between relays
// is one copy per downstream relay.

// Defaults of LiveConfig.
const (
	DefaultLiveBuffer         = 1 << 20   // bytes of recent chunks per channel
	DefaultLiveQueue          = 512 << 10 // bytes a subscriber may lag behind the live edge
	DefaultLiveMaxChunk       = 64 << 10  // bytes per chunk
	DefaultLiveMaxChannels    = 64        // channels per relay
	DefaultLiveMaxSubscribers = 1024      // subscribers per channel
)

// LiveConfig bounds live channels on a relay.
type LiveConfig struct {
	// Buffer is the ring of recent chunks of each channel, in bytes,
	// reserved in the relay's Budget while the channel lives. Defaults to
	// 1 MiB.
	Buffer int64
	// Queue is how far, in bytes, a subscriber may fall behind the live
	// edge before it is cut off. At most Buffer. Defaults to 512 KiB.
	Queue int64
	// MaxChunk bounds one chunk: a read of a publisher's body, an
	// EvSocket message. Defaults to 64 KiB.
	MaxChunk int
	// MaxChannels bounds the channels a relay carries. Defaults to 64.
	MaxChannels int
	// MaxSubscribers bounds the subscribers of one channel on a relay,
	// downstream relays included. Defaults to 1024.
	MaxSubscribers int
}

func (c *LiveConfig) setDefaults() {
	c.Buffer = cmp.Or(c.Buffer, DefaultLiveBuffer)
	c.Queue = cmp.Or(c.Queue, DefaultLiveQueue)
	c.MaxChunk = cmp.Or(c.MaxChunk, DefaultLiveMaxChunk)
	c.MaxChannels = cmp.Or(c.MaxChannels, DefaultLiveMaxChannels)
	c.MaxSubscribers = cmp.Or(c.MaxSubscribers, DefaultLiveMaxSubscribers)
}

func (c *LiveConfig) validate() error {
	switch {
	case c.Buffer < 0, c.Queue < 0, c.MaxChunk < 0, c.MaxChannels < 0, c.MaxSubscribers < 0:
		return fmt.Errorf("relay: negative live limit")
	case c.Queue > c.Buffer:
		return fmt.Errorf("relay: live queue %d exceeds live buffer %d", c.Queue, c.Buffer)
	case int64(c.MaxChunk) > c.Buffer:
		return fmt.Errorf("relay: live max chunk %d exceeds live buffer %d", c.MaxChunk, c.Buffer)
	}
	return nil
}

func (c *LiveConfig) logAttrs() []any {
	return []any{
		"live_buffer", c.Buffer, "live_queue", c.Queue, "live_max_chunk", c.MaxChunk,
		"live_max_channels", c.MaxChannels, "live_max_subscribers", c.MaxSubscribers,
	}
}

// liveCutGrace is how long a write blocked when its subscriber is cut off
// may still complete, so that the reason can follow it (WebSocket close
// frame, mesh LiveEnd).
const liveCutGrace = time.Second

// Errors of live channels.
var (
	errLiveNotFound   = &proto.Error{Status: proto.StatusNotFound, Msg: "no such live channel on this relay"}
	errLiveSecret     = &proto.Error{Status: proto.StatusForbidden, Msg: "the bearer token is not the channel's secret"}
	errLiveBusy       = &proto.Error{Status: proto.StatusConflict, Msg: "the channel already has a publisher"}
	errLiveEnded      = &proto.Error{Status: proto.StatusNotFound, Msg: "the live channel ended"}
	errLiveUpstream   = &proto.Error{Status: proto.StatusOffline, Msg: "the stream from the upstream relay ended"}
	errLiveDownstream = &proto.Error{Status: proto.StatusUnavailable, Msg: "the relay carrying the channel is unreachable"}
	errLiveSealed     = &proto.Error{Status: proto.StatusConflict, Msg: "the channel is sealed (live1): only its publisher writes into it, as records"}
	errLivePlain      = &proto.Error{Status: proto.StatusConflict, Msg: "the channel is a plaintext one: it takes no live1 records"}
)

// liveHub holds the relay's channels and live counters.
type liveHub struct {
	mu    sync.Mutex // guards the fields below
	chans map[proto.ItemID]*liveChan
	fwd   map[string]int64 // bytes sent to each downstream relay, by peer id
	cuts  map[string]int64 // subscribers cut off, by reason

	bytesIn  atomic.Int64 // bytes appended to channels (data, events)
	bytesOut atomic.Int64 // bytes written to subscribers, downstream relays included
	subs     atomic.Int64 // subscribers now
	nextSub  atomic.Uint64
}

// LiveStats is the body of GET /v1/live/stats.
type LiveStats struct {
	Channels    int   `json:"channels"`
	Subscribers int64 `json:"subscribers"`
	BytesIn     int64 `json:"bytes_in"`
	BytesOut    int64 `json:"bytes_out"`
	// Forwarded counts the bytes sent to each downstream relay, by peer
	// id: one copy per relay, however many readers it serves.
	Forwarded map[string]int64 `json:"forwarded"`
	// Cutoffs counts the subscribers cut off, by reason.
	Cutoffs map[string]int64 `json:"cutoffs"`
}

// LiveStats returns the relay's live counters.
func (s *Server) LiveStats() LiveStats {
	h := &s.live
	h.mu.Lock()
	defer h.mu.Unlock()
	return LiveStats{
		Channels:    len(h.chans),
		Subscribers: h.subs.Load(),
		BytesIn:     h.bytesIn.Load(),
		BytesOut:    h.bytesOut.Load(),
		Forwarded:   maps.Clone(h.fwd),
		Cutoffs:     maps.Clone(h.cuts),
	}
}

func (h *liveHub) countCut(reason string) {
	h.mu.Lock()
	if h.cuts == nil {
		h.cuts = make(map[string]int64)
	}
	h.cuts[reason]++
	h.mu.Unlock()
}

func (h *liveHub) countFwd(peer string, n int64) {
	h.mu.Lock()
	if h.fwd == nil {
		h.fwd = make(map[string]int64)
	}
	h.fwd[peer] += n
	h.mu.Unlock()
}

// liveChan is one channel on this relay.
type liveChan struct {
	s          *Server
	id         proto.ItemID
	source     bool   // written into on this relay
	upstream   string // the relay feeding this copy, when not source
	volunteers bool
	ctx        context.Context // done when the channel is closed
	cancel     context.CancelFunc
	// ready is closed once sealed is known: at once on the source relay,
	// at the upstream relay's first frame on a downstream copy.
	ready     chan struct{}
	readyOnce sync.Once

	mu        sync.Mutex // guards the fields below
	chunks    []*liveChunk
	first     uint64 // seq of chunks[0]
	next      uint64 // seq of the next chunk
	bytes     int64  // bytes in chunks
	written   int64  // bytes appended since the channel began
	subs      map[*liveSub]struct{}
	ended     bool
	end       proto.LiveEnd
	publisher bool   // an HTTP publisher writes into it
	members   int    // EvSocket members
	lastStart []byte // the last EvSocket "start" event, for late members

	// Sealed channels (proto/livee2e.go):
	sealed       atomic.Bool // its chunks are live1 records (FrameLiveRecord); read without mu (announceLive holds the hub's mutex)
	head         []byte      // the latest head record, sent first to new subscribers
	headAt       uint64      // seq of the ring chunk that carried head
	headReserved bool        // head's LiveMaxRecord bytes are reserved in the budget
}

// isSealed reports whether ch carries live1 records.
func (ch *liveChan) isSealed() bool { return ch.sealed.Load() }

// setReady marks sealed as known.
func (ch *liveChan) setReady() { ch.readyOnce.Do(func() { close(ch.ready) }) }

// liveChunk is one chunk of the ring; its bytes are never changed.
type liveChunk struct {
	kind   proto.FrameType // FrameLiveData, FrameLiveEvent or FrameLiveBinary
	b      []byte
	off    int64          // channel offset of b[0]
	origin *liveSub       // the EvSocket member that sent it: not echoed to it
	eos    bool           // an EvSocket "complete": HTTP readers' bodies end here
	rkind  proto.LiveKind // the record's kind (FrameLiveRecord)
}

type subKind uint8

const (
	subHTTP subKind = iota
	subWS
	subMesh
)

// liveSub is one subscriber. Its writer goroutine alone writes to it.
type liveSub struct {
	ch   *liveChan
	kind subKind
	id   uint64
	peer string // downstream relay id (subMesh)
	wake chan struct{}
	ctx  context.Context
	kick func() // unblocks a blocked write (sets a near write deadline)
	cutF atomic.Bool
	pos  atomic.Int64 // channel offset written out, chunk by chunk

	// Guarded by ch.mu:
	next uint64         // seq of the next chunk to take
	cut  *proto.LiveEnd // cut off, with this reason

	head []byte // a sealed channel's head to send first (set by subscribe)
}

// lookupLive returns the channel id carried here, or nil.
func (s *Server) lookupLive(id proto.ItemID) *liveChan {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	return s.live.chans[id]
}

// openLive returns channel id, creating it with mk's settings when it is
// not carried yet. created tells whether it was.
func (s *Server) openLive(id proto.ItemID, source bool, upstream string, volunteers, sealed bool) (ch *liveChan, created bool, err error) {
	h := &s.live
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.chans == nil {
		h.chans = make(map[proto.ItemID]*liveChan)
	}
	if ch := h.chans[id]; ch != nil {
		return ch, false, nil
	}
	if len(h.chans) >= s.cfg.Live.MaxChannels {
		s.stats.refused("live_channels")
		return nil, false, proto.Errorf(proto.StatusOverLimit, "relay carries %d live channels", s.cfg.Live.MaxChannels)
	}
	if !s.budget.reserve(s.cfg.Live.Buffer) {
		s.stats.refused("budget")
		return nil, false, proto.Errorf(proto.StatusOverLimit, "relay memory budget is full")
	}
	ctx, cancel := context.WithCancel(s.ctx)
	ch = &liveChan{s: s, id: id, source: source, upstream: upstream, volunteers: volunteers, ctx: ctx, cancel: cancel, subs: make(map[*liveSub]struct{}), ready: make(chan struct{})}
	ch.sealed.Store(sealed)
	if source {
		ch.setReady()
	}
	h.chans[id] = ch
	s.announceLive(ch, false)
	s.log.Info("live channel opened", "channel", id, "source", source, "upstream", shortID(upstream))
	return ch, true, nil
}

// announceLive tells the rendezvous that this relay carries ch, or no
// longer does.
func (s *Server) announceLive(ch *liveChan, end bool) {
	if l := s.link.Load(); l != nil {
		l.send(proto.LiveAnnounce{Channel: ch.id, Source: ch.source, Upstream: ch.upstream, Volunteers: ch.volunteers, End: end, Enc: ch.enc()})
	}
}

// enc returns the LiveAnnounce.Enc of ch.
func (ch *liveChan) enc() string {
	if ch.isSealed() {
		return proto.LiveEncVersion
	}
	return ""
}

// reannounceLive announces every channel carried here on a new link, so
// that a restarted rendezvous learns them back (soft state).
func (s *Server) reannounceLive(l *link) {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	for _, ch := range s.live.chans {
		l.send(proto.LiveAnnounce{Channel: ch.id, Source: ch.source, Upstream: ch.upstream, Volunteers: ch.volunteers, Enc: ch.enc()})
	}
}

// finish ends the channel: subscribers drain the ring and then see end.
// It is idempotent; the first end wins.
func (ch *liveChan) finish(end proto.LiveEnd) {
	ch.mu.Lock()
	if ch.ended {
		ch.mu.Unlock()
		return
	}
	ch.ended, ch.end = true, end
	for sub := range ch.subs {
		sub.notify()
	}
	headReserved := ch.headReserved
	ch.headReserved = false
	ch.mu.Unlock()
	ch.setReady()
	s := ch.s
	if headReserved {
		s.budget.release(proto.LiveMaxRecord)
	}
	s.live.mu.Lock()
	if s.live.chans[ch.id] == ch {
		delete(s.live.chans, ch.id)
		s.budget.release(s.cfg.Live.Buffer)
		s.announceLive(ch, true)
	}
	s.live.mu.Unlock()
	s.log.Info("live channel ended", "channel", ch.id, "status", int(end.Status), "reason", end.Reason)
	// The writers drain what they hold; the context stops the upstream
	// stream. Cancel after the subscribers are woken.
	ch.cancel()
}

// appendChunk adds a chunk at the live edge and wakes the subscribers;
// those too far behind are cut off. It never blocks on a subscriber.
func (ch *liveChan) appendChunk(kind proto.FrameType, b []byte, origin *liveSub, eos bool) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		return errLiveEnded
	}
	ch.appendLocked(&liveChunk{kind: kind, b: b, off: ch.written, origin: origin, eos: eos})
	return nil
}

// appendRecord adds one whole live1 record (checked by
// proto.ParseLiveRecord) of a sealed channel at the live edge: a head is
// also kept apart for new subscribers, a last record ends the channel
// cleanly.
func (ch *liveChan) appendRecord(rec []byte, kind proto.LiveKind) error {
	ch.mu.Lock()
	if ch.ended {
		ch.mu.Unlock()
		return errLiveEnded
	}
	if kind == proto.LiveHead {
		if !ch.headReserved {
			if !ch.s.budget.reserve(proto.LiveMaxRecord) {
				ch.mu.Unlock()
				ch.s.stats.refused("budget")
				e := proto.Errorf(proto.StatusOverLimit, "relay memory budget is full")
				ch.finish(proto.LiveEnd{Status: e.Status, Reason: e.Msg})
				return e
			}
			ch.headReserved = true
		}
		ch.head, ch.headAt = rec, ch.next
	}
	ch.appendLocked(&liveChunk{kind: proto.FrameLiveRecord, b: rec, off: ch.written, rkind: kind})
	ch.mu.Unlock()
	if kind == proto.LiveLast {
		ch.finish(proto.LiveEnd{Status: proto.StatusOK, Reason: "the publisher ended the channel"})
	}
	return nil
}

// appendLocked adds c at the live edge. ch.mu is held.
func (ch *liveChan) appendLocked(c *liveChunk) {
	lim := ch.s.cfg.Live
	b := c.b
	ch.chunks = append(ch.chunks, c)
	ch.next++
	ch.written += int64(len(b))
	ch.bytes += int64(len(b))
	for ch.bytes > lim.Buffer && len(ch.chunks) > 1 {
		ch.bytes -= int64(len(ch.chunks[0].b))
		ch.chunks[0] = nil
		ch.chunks = ch.chunks[1:]
		ch.first++
	}
	ch.s.live.bytesIn.Add(int64(len(b)))
	for sub := range ch.subs {
		if sub.cut != nil {
			continue
		}
		if lag := ch.written - sub.pos.Load(); lag > lim.Queue || sub.next < ch.first {
			ch.cutLocked(sub, proto.LiveEnd{Status: proto.StatusOverLimit, Reason: fmt.Sprintf("subscriber fell behind the live edge by %d bytes (queue %d)", lag, lim.Queue)}, "slow_subscriber")
			continue
		}
		sub.notify()
	}
}

// cutLocked cuts sub off with end, counted under reason. ch.mu is held.
func (ch *liveChan) cutLocked(sub *liveSub, end proto.LiveEnd, reason string) {
	sub.cut = &end
	sub.cutF.Store(true)
	if sub.kick != nil {
		sub.kick()
	}
	sub.notify()
	ch.s.live.countCut(reason)
	ch.s.log.Info("live subscriber cut off", "channel", ch.id, "sub", sub.id, "kind", sub.kind, "peer", shortID(sub.peer), "reason", end.Reason)
}

// subscribe adds a subscriber at the live edge.
func (ch *liveChan) subscribe(ctx context.Context, kind subKind, peer string) (*liveSub, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.ended {
		return nil, errLiveEnded
	}
	if len(ch.subs) >= ch.s.cfg.Live.MaxSubscribers {
		ch.s.stats.refused("live_subscribers")
		return nil, proto.Errorf(proto.StatusOverLimit, "live channel has %d subscribers on this relay", ch.s.cfg.Live.MaxSubscribers)
	}
	sub := &liveSub{ch: ch, kind: kind, id: ch.s.live.nextSub.Add(1), peer: peer, wake: make(chan struct{}, 1), ctx: ctx, next: ch.next}
	sub.pos.Store(ch.written)
	if ch.sealed.Load() {
		// The head first, then from the latest sync record after that
		// head still in the ring, else from the live edge.
		sub.head = ch.head
		for i := len(ch.chunks) - 1; i >= 0; i-- {
			seq := ch.first + uint64(i)
			if ch.head != nil && seq <= ch.headAt {
				break
			}
			if c := ch.chunks[i]; c.rkind == proto.LiveSync {
				sub.next = seq
				sub.pos.Store(c.off)
				break
			}
		}
	}
	ch.subs[sub] = struct{}{}
	ch.s.live.subs.Add(1)
	return sub, nil
}

// unsubscribe removes sub. A downstream copy nobody reads any more is
// closed, which ends its stream from upstream.
func (ch *liveChan) unsubscribe(sub *liveSub) {
	ch.mu.Lock()
	if _, ok := ch.subs[sub]; !ok {
		ch.mu.Unlock()
		return
	}
	delete(ch.subs, sub)
	idle := !ch.source && len(ch.subs) == 0
	ch.mu.Unlock()
	ch.s.live.subs.Add(-1)
	if idle {
		ch.finish(proto.LiveEnd{Status: proto.StatusCancelled, Reason: "no subscriber left on this relay"})
	}
}

// setKick sets what unblocks sub's writer when it is cut off.
func (sub *liveSub) setKick(f func()) {
	sub.ch.mu.Lock()
	sub.kick = f
	sub.ch.mu.Unlock()
}

func (sub *liveSub) notify() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// liveWriter is what a subscriber's writer writes to.
type liveWriter interface {
	// write sends one chunk; it reports a failure of the subscriber.
	write(c *liveChunk) error
	// flush pushes what was written to the network.
	flush() error
}

// liveBatch is the most chunks a writer takes at once.
const liveBatch = 32

// run is sub's writer: it sends chunks from its cursor until the channel
// ends (after the last chunk), sub is cut off, its context is done or a
// write fails. It returns how the subscription ended.
func (sub *liveSub) run(w liveWriter, skip func(*liveChunk) (send, stop bool)) proto.LiveEnd {
	ch := sub.ch
	var batch [liveBatch]*liveChunk
	for {
		ch.mu.Lock()
		for sub.cut == nil && sub.next == ch.next && !ch.ended {
			ch.mu.Unlock()
			select {
			case <-sub.wake:
			case <-sub.ctx.Done():
				return proto.LiveEnd{Status: proto.StatusCancelled, Reason: "subscriber left"}
			}
			ch.mu.Lock()
		}
		if sub.cut != nil {
			end := *sub.cut
			ch.mu.Unlock()
			return end
		}
		if sub.next == ch.next { // ended, and all sent
			end := ch.end
			ch.mu.Unlock()
			return end
		}
		n := copy(batch[:], ch.chunks[sub.next-ch.first:])
		sub.next += uint64(n)
		ch.mu.Unlock()
		for _, c := range batch[:n] {
			send, stop := skip(c)
			if stop {
				return proto.LiveEnd{Status: proto.StatusOK, Reason: "the broadcast is complete"}
			}
			if !send {
				sub.pos.Store(c.off + int64(len(c.b))) // passed over: not behind
				continue
			}
			if sub.cutF.Load() {
				break
			}
			if err := w.write(c); err != nil {
				if sub.cutF.Load() {
					break
				}
				return proto.LiveEnd{Status: proto.StatusCancelled, Reason: "write to subscriber: " + err.Error()}
			}
			sub.pos.Store(c.off + int64(len(c.b)))
			ch.s.live.bytesOut.Add(int64(len(c.b)))
			if sub.kind == subMesh {
				ch.s.live.countFwd(sub.peer, int64(len(c.b)))
			}
		}
		clear(batch[:n])
		if !sub.cutF.Load() {
			if err := w.flush(); err != nil && !sub.cutF.Load() {
				return proto.LiveEnd{Status: proto.StatusCancelled, Reason: "write to subscriber: " + err.Error()}
			}
		}
	}
}

// ---- Mesh: one copy per downstream relay ----

// subscribeUpstream returns this relay's copy of channel id, fed by the
// relay upstream over ProtoLive, starting the feed when it is new.
func (s *Server) subscribeUpstream(id proto.ItemID, upstream string) (*liveChan, error) {
	ch, created, err := s.openLive(id, false, upstream, false, false)
	if err != nil || !created {
		return ch, err
	}
	if !s.goStart() {
		ch.finish(proto.LiveEnd{Status: proto.StatusUnavailable, Reason: errShutdown.Msg})
		return ch, nil
	}
	subscribed := make(chan struct{})
	go func() {
		defer s.wg.Done()
		ch.finish(s.feedLive(ch, subscribed))
	}()
	// The first reader waits until the upstream relay confirmed (or
	// failed), so that it reads from the live edge of that moment.
	select {
	case <-subscribed:
	case <-ch.ctx.Done():
	}
	return ch, nil
}

// feedLive reads channel ch from its upstream relay until it ends.
func (s *Server) feedLive(ch *liveChan, subscribed chan struct{}) proto.LiveEnd {
	log := s.log.With("channel", ch.id, "upstream", shortID(ch.upstream))
	octx, cancel := context.WithTimeout(ch.ctx, s.cfg.HandshakeTimeout)
	st, err := s.cfg.Node.Open(octx, ch.upstream, proto.ProtoLive)
	cancel()
	if err != nil {
		log.Info("live: cannot reach the upstream relay", "err", err)
		return proto.LiveEnd{Status: errLiveDownstream.Status, Reason: errLiveDownstream.Msg}
	}
	stop := context.AfterFunc(ch.ctx, func() { st.Reset() })
	defer stop()
	defer st.Reset()
	st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := st.Write(proto.LiveSub{Channel: ch.id}.AppendFrame(nil)); err != nil {
		return proto.LiveEnd{Status: errLiveDownstream.Status, Reason: errLiveDownstream.Msg}
	}
	st.SetWriteDeadline(time.Time{})
	max := max(s.cfg.Live.MaxChunk, proto.MaxLiveEvent, proto.LiveMaxRecord)
	st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	for {
		h, err := proto.ReadHeader(st, max)
		if err != nil {
			log.Debug("live upstream ended", "err", err)
			return proto.LiveEnd{Status: errLiveUpstream.Status, Reason: errLiveUpstream.Msg}
		}
		body := make([]byte, h.Len)
		if _, err := io.ReadFull(st, body); err != nil {
			return proto.LiveEnd{Status: errLiveUpstream.Status, Reason: errLiveUpstream.Msg}
		}
		if subscribed != nil {
			st.SetReadDeadline(time.Time{})
			if h.Type == proto.FrameLiveRecord {
				ch.sealed.Store(true)
			}
			ch.setReady()
			close(subscribed)
			subscribed = nil
		}
		switch h.Type {
		case proto.FrameLiveRecord:
			if len(body) == 0 {
				continue
			}
			kind, _, err := proto.ParseLiveRecord(body)
			if err != nil || !ch.isSealed() {
				return proto.LiveEnd{Status: proto.StatusMalformed, Reason: "malformed record from the upstream relay"}
			}
			if ch.appendRecord(body, kind) != nil || kind == proto.LiveLast {
				return proto.LiveEnd{Status: proto.StatusOK, Reason: "the publisher ended the channel"}
			}
		case proto.FrameLiveData, proto.FrameLiveBinary:
			if len(body) > 0 {
				ch.appendChunk(h.Type, body, nil, false)
			}
		case proto.FrameLiveEvent:
			m, _ := proto.DecodeEvText(body)
			if m.Event == proto.EvStart {
				ch.mu.Lock()
				ch.lastStart = body
				ch.mu.Unlock()
			}
			ch.appendChunk(h.Type, body, nil, m.Event == proto.EvComplete)
		case proto.FrameLiveEnd:
			e, err := proto.DecodeLiveEnd(body)
			if err != nil {
				return proto.LiveEnd{Status: proto.StatusMalformed, Reason: "malformed end from the upstream relay"}
			}
			if e.Status != proto.StatusOK {
				e.Reason = "upstream relay: " + e.Reason
			}
			return e
		default:
			// Unknown frame types are skipped (proto/frame.go).
		}
	}
}

// meshLiveWriter writes a channel's chunks as frames on a mesh stream.
type meshLiveWriter struct {
	st      mesh.Stream
	timeout time.Duration
	buf     []byte
	sub     *liveSub
}

func (mw *meshLiveWriter) write(c *liveChunk) error {
	mw.buf = proto.AppendLiveFrame(mw.buf[:0], c.kind, c.b)
	mw.st.SetWriteDeadline(time.Now().Add(mw.timeout))
	if mw.sub.cutF.Load() {
		return errLiveEnded
	}
	_, err := mw.st.Write(mw.buf)
	return err
}

func (mw *meshLiveWriter) flush() error { return nil }

// handleLiveStream serves a ProtoLive stream from a downstream relay.
func (s *Server) handleLiveStream(st mesh.Stream) {
	if !s.goStart() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	defer st.Reset()
	peer := st.RemotePeer()
	st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	h, body, err := proto.ReadFrame(st, nil, proto.MaxLiveSubLen)
	if err != nil || h.Type != proto.FrameLiveSub {
		return
	}
	ls, err := proto.DecodeLiveSub(body)
	if err != nil {
		return
	}
	st.SetReadDeadline(time.Time{})
	writeEnd := func(e proto.LiveEnd) {
		st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		st.Write(e.AppendFrame(nil))
		st.CloseWrite()
	}
	ch := s.lookupLive(ls.Channel)
	if ch == nil {
		writeEnd(proto.LiveEnd{Status: errLiveNotFound.Status, Reason: errLiveNotFound.Msg})
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	sub, err := ch.subscribe(ctx, subMesh, peer)
	if err != nil {
		e := asProtoError(err)
		writeEnd(proto.LiveEnd{Status: e.Status, Reason: e.Msg})
		return
	}
	defer ch.unsubscribe(sub)
	sub.setKick(func() { st.SetWriteDeadline(time.Now().Add(liveCutGrace)) })
	// The downstream relay closes its side to unsubscribe.
	go func() {
		var b [1]byte
		st.Read(b[:])
		cancel()
	}()
	ch.mu.Lock()
	start := ch.lastStart
	sealed := ch.sealed.Load()
	ch.mu.Unlock()
	mw := &meshLiveWriter{st: st, timeout: s.cfg.WriteTimeout, sub: sub}
	// An empty LiveData (LiveRecord for a sealed channel) tells the
	// downstream relay that it is subscribed: its readers are at the live
	// edge from then on.
	first := proto.FrameLiveData
	if sealed {
		first = proto.FrameLiveRecord
	}
	if mw.write(&liveChunk{kind: first}) != nil {
		return
	}
	if start != nil {
		mw.write(&liveChunk{kind: proto.FrameLiveEvent, b: start})
	}
	if sub.head != nil && mw.write(&liveChunk{kind: proto.FrameLiveRecord, b: sub.head}) != nil {
		return
	}
	s.log.Debug("live: downstream relay subscribed", "channel", ls.Channel, "peer", shortID(peer))
	end := sub.run(mw, func(*liveChunk) (bool, bool) { return true, false })
	if end.Status == proto.StatusCancelled && ctx.Err() != nil {
		return
	}
	writeEnd(end)
	// Wait for the downstream relay to read the end before the reset.
	st.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	<-ctx.Done()
}
