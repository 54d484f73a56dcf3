package rendezvous

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/proto"
)

const (
	// closeGoingAway is the close code sent when the server shuts down.
	closeGoingAway = websocket.CloseGoingAway
	// closeGrace is how long a session that sent a close frame waits for
	// the peer's close before dropping the connection.
	closeGrace = time.Second
)

// session is a client's control connection. Its reader is the HTTP handler
// goroutine; its writer is one goroutine fed by send.
type session struct {
	id   string
	conn *websocket.Conn
	ip   netip.Addr // counted in MaxSessionsPerIP and MaxItemsPerIP; zero if exempt
	// secure is set for a session on https (or from an https page): its
	// push URLs are https only (reachLocked).
	secure bool
	// greeted is set by the reader once a valid message arrived; until
	// then only HandshakeTimeout counts, and pongs do not extend it.
	greeted bool
	log     *slog.Logger
	stats   *counters

	// Messages to send wait in queue, at most maxQueue of them. A slice
	// grown on demand rather than a channel of SessionQueue slots: an
	// idle session holds no queue. The writer is a goroutine started when
	// there is something to write (kick) and gone when it is written, and
	// pings come from a timer: an idle session runs one goroutine, its
	// reader (issue 14: an idle WebSocket should cost at most 16 KiB).
	qmu        sync.Mutex // guards the fields below
	queue      []proto.Message
	writing    bool // a writer (drain) is running; at most one ever is
	pingDue    bool // the ping timer fired; the writer sends a ping
	finished   bool // the writer sent the close and closed conn
	maxQueue   int
	ping       time.Duration
	timeout    time.Duration // per write
	pinger     *time.Timer
	writerDone chan struct{} // closed when finished is set

	done        chan struct{} // closed by fail
	readerDone  chan struct{} // closed when the reader has returned
	failOnce    sync.Once
	closeCode   int // close frame to send, 0 for none; read after done
	closeReason string

	// Guarded by Server.mu:
	items  map[proto.ItemID]*item // items this session publishes
	orders map[uint64]*order      // orders sent to this session
}

// fail ends the session. With a non-zero code the writer sends a close
// frame with that code and reason first. Safe to call many times from any
// goroutine, also while holding Server.mu; only the first call counts.
func (c *session) fail(code int, reason string) {
	c.failOnce.Do(func() {
		c.closeCode = code
		c.closeReason = proto.TruncateReason(reason)
		close(c.done)
		c.kick() // the writer sends the close frame and closes conn
	})
}

func (c *session) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// enqueue queues m for the client without blocking. A client whose queue is
// full reads too slowly: its session is closed with StatusOverLimit, so it
// never stalls the scheduler. It reports whether m was queued.
func (c *session) enqueue(m proto.Message) bool {
	if c.isDone() {
		return false
	}
	c.qmu.Lock()
	full := len(c.queue) >= c.maxQueue
	if !full {
		c.queue = append(c.queue, m)
	}
	c.qmu.Unlock()
	if full {
		c.stats.reject(RejectQueueFull)
		c.fail(proto.StatusOverLimit.CloseCode(), "send queue full: reading too slowly")
		return false
	}
	c.kick()
	return true
}

// roomForOrder reports whether the send queue has room for one more order,
// keeping an eighth of it for replies, cancels and pings (see
// Config.SessionQueue).
func (c *session) roomForOrder() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return len(c.queue) < c.maxQueue-max(1, c.maxQueue/8)
}

// kick starts the writer if there is something to write (messages, a
// ping, or the end of the session) and it is not running.
func (c *session) kick() {
	c.qmu.Lock()
	start := !c.writing && !c.finished && (len(c.queue) > 0 || c.pingDue || c.isDone())
	if start {
		c.writing = true
	}
	c.qmu.Unlock()
	if start {
		go c.drain()
	}
}

// pingTick runs on the ping timer: it asks the writer for a ping and sets
// the next one.
func (c *session) pingTick() {
	c.qmu.Lock()
	if c.finished {
		c.qmu.Unlock()
		return
	}
	c.pingDue = true
	c.qmu.Unlock()
	c.kick()
	c.qmu.Lock()
	if !c.finished {
		c.pinger.Reset(c.ping)
	}
	c.qmu.Unlock()
}

// drain is the session's only writer while it runs (kick starts at most
// one): it writes the queued messages and a due ping until there is
// nothing left, then returns; once the session is done, it sends the close
// frame, closes conn and closes writerDone.
func (c *session) drain() {
	for {
		c.qmu.Lock()
		if c.isDone() {
			c.qmu.Unlock()
			c.closeConn()
			c.qmu.Lock()
			c.writing, c.finished, c.queue = false, true, nil
			c.qmu.Unlock()
			close(c.writerDone)
			return
		}
		msgs, ping := c.queue, c.pingDue
		c.queue, c.pingDue = nil, false
		if len(msgs) == 0 && !ping {
			c.writing = false
			c.qmu.Unlock()
			return
		}
		c.qmu.Unlock()
		if err := c.write(msgs, ping); err != nil {
			c.log.Debug("write control message", "err", err)
			c.fail(0, "") // the next round closes
		}
	}
}

// write writes msgs, then a ping if ping is set.
func (c *session) write(msgs []proto.Message, ping bool) error {
	for _, m := range msgs {
		data, err := proto.EncodeMessage(m)
		if err != nil {
			c.log.Error("encode control message", "type", m.MessageType(), "err", err)
			continue
		}
		c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
		if err := c.conn.WriteMessage(websocket.TextMessage, data); err != nil {
			return err
		}
	}
	if ping {
		return c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.timeout))
	}
	return nil
}

// closeConn ends the connection of a session that is done: the close
// frame first when fail gave a code, then conn.Close, which ends the
// reader.
func (c *session) closeConn() {
	c.pinger.Stop()
	if c.closeCode != 0 {
		msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
		if err := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.timeout)); err == nil {
			// Let the peer answer the close, so that it sees our code
			// rather than a reset connection.
			select {
			case <-c.readerDone:
			case <-time.After(closeGrace):
			}
		}
	}
	c.conn.Close()
}

// handleControl is the HTTP adapter of the control channel: it checks the
// Origin, the subprotocol and the session limit, upgrades, and serves the
// session until it ends.
func (s *Server) handleControl(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		s.stats.reject(RejectOrigin)
		writeError(w, http.StatusForbidden, proto.StatusOriginRefused, "origin "+r.Header.Get("Origin")+" is not allowed")
		return
	}
	if !slices.Contains(websocket.Subprotocols(r), proto.Subprotocol) {
		s.stats.reject(RejectSubprotocol)
		writeError(w, http.StatusBadRequest, proto.StatusProtocol,
			"the control channel is a WebSocket with subprotocol "+proto.Subprotocol+" (Sec-WebSocket-Protocol)")
		return
	}
	ip, limited := s.limitedIP(r)
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, proto.StatusUnavailable, "server closing")
		return
	case len(s.sessions) >= s.cfg.MaxSessions:
		s.mu.Unlock()
		s.stats.reject(RejectSessionLimit)
		w.Header().Set("Retry-After", "5")
		writeError(w, 0, proto.StatusOverLimit, "too many sessions")
		return
	case !s.reserveSessionLocked(ip, limited):
		s.mu.Unlock()
		s.stats.reject(RejectSessionsPerIP)
		w.Header().Set("Retry-After", "5")
		writeError(w, 0, proto.StatusOverLimit, limitReason(RejectSessionsPerIP))
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	release := takeLease(r)
	done := func() {
		release()
		s.releaseSession(ip, limited)
		s.wg.Done()
	}

	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.HandshakeTimeout,
		Subprotocols:     []string{proto.Subprotocol},
		CheckOrigin:      func(*http.Request) bool { return true }, // checked above
		// A small read buffer of the session's own lets the HTTP
		// server's 4 KiB one go; writes use a shared pool.
		ReadBufferSize:  1 << 10,
		WriteBufferPool: s.lim.wbufs,
	}
	conn, err := up.Upgrade(w, r, nil) // on failure Upgrade has answered
	if err != nil {
		s.log.Debug("control upgrade failed", "remote", r.RemoteAddr, "err", err)
		done()
		return
	}
	sessIP := ip
	if !limited {
		sessIP = netip.Addr{}
	}
	// The session runs on goroutines of its own and the handler
	// returns: its goroutine's stack, grown by net/http, and the HTTP
	// connection's state are freed (issue 14: an idle WebSocket should
	// cost at most 16 KiB).
	s.serveSession(conn, r.RemoteAddr, sessIP, s.secureRequest(r) || isHTTPS(r.Header.Get("Origin")), done)
}

// originAllowed reports whether a request's Origin may open the control
// channel.
func (s *Server) originAllowed(r *http.Request) bool {
	return httpapi.OriginAllowed(r, s.cfg.AllowedOrigins)
}

// serveSession starts a control session on an upgraded connection and
// returns. The session runs until it ends, then closes conn, takes its
// items offline and calls done.
//
// The set-up (logging, the Welcome) runs on the caller's goroutine and the
// session on a new one: the session's goroutines start with small stacks
// and keep them while idle.
func (s *Server) serveSession(conn *websocket.Conn, remote string, ip netip.Addr, secure bool, done func()) {
	c := &session{
		secure:     secure,
		id:         newSessionID(),
		conn:       conn,
		ip:         ip,
		stats:      &s.stats,
		maxQueue:   s.cfg.SessionQueue,
		ping:       s.cfg.PingInterval,
		timeout:    s.cfg.WriteTimeout,
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		items:      make(map[proto.ItemID]*item),
		orders:     make(map[uint64]*order),
	}
	c.log = s.log.With("session", c.id)
	// The pinger is set before the session is visible to Close (which
	// fails it, and the writer then stops the pinger), and under qmu,
	// which pingTick holds when it reads it: a timer that fires at once
	// (a short ping interval on a loaded machine) must see it set.
	c.qmu.Lock()
	c.pinger = time.AfterFunc(c.ping, c.pingTick)
	c.qmu.Unlock()
	s.mu.Lock()
	if s.closed || len(s.sessions) >= s.cfg.MaxSessions {
		s.mu.Unlock()
		c.pinger.Stop()
		msg := websocket.FormatCloseMessage(proto.StatusOverLimit.CloseCode(), "too many sessions")
		conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(s.cfg.WriteTimeout))
		conn.Close()
		done()
		return
	}
	s.sessions[c] = struct{}{}
	s.mu.Unlock()
	s.stats.sessionsOpened.Add(1)
	c.log.Info("session started", "remote", remote)

	conn.SetReadLimit(int64(s.cfg.MaxMessage))
	// The Welcome goes out before the writer starts: nothing else can be
	// queued for a session that has not read a message yet.
	welcome, err := proto.EncodeMessage(&proto.Welcome{
		Session:     c.id,
		MaxMessage:  s.cfg.MaxMessage,
		PingSeconds: int(math.Ceil(s.cfg.PingInterval.Seconds())),
		Relays:      s.pushRelays(c.secure),
	})
	if err == nil {
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		err = conn.WriteMessage(websocket.TextMessage, welcome)
	}
	if err != nil {
		c.log.Debug("write welcome", "err", err)
		c.fail(0, "")
		conn.Close() // the reader ends at once
	}
	go func() {
		defer done()
		s.readSession(c)
		close(c.readerDone)
		c.fail(0, "") // the reader ended first: nothing to say
		<-c.writerDone
		conn.Close()
		s.endSession(c)
	}()
}

// readSession reads and handles the client's messages until the connection
// fails.
func (s *Server) readSession(c *session) {
	idle := 2 * s.cfg.PingInterval
	c.conn.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	c.conn.SetPongHandler(func(string) error {
		// Pongs keep a live session open, but do not make a silent
		// peer a session: until its first message only the handshake
		// deadline counts.
		if c.greeted && !c.isDone() {
			c.conn.SetReadDeadline(time.Now().Add(idle))
		}
		return nil
	})
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			var ne net.Error
			switch {
			case c.isDone():
			case errors.As(err, &ne) && ne.Timeout() && !c.greeted:
				s.stats.reject(RejectHandshake)
				c.log.Info("control session sent no message in time", "deadline", s.cfg.HandshakeTimeout)
				c.fail(proto.StatusTimeout.CloseCode(), "no message within "+s.cfg.HandshakeTimeout.String()+" of the upgrade (send hello)")
			case errors.As(err, &ne) && ne.Timeout():
				c.fail(proto.StatusTimeout.CloseCode(), "idle for "+idle.String()+": no message or pong")
			}
			if errors.Is(err, websocket.ErrReadLimit) {
				// gorilla has sent close 1009. Read what the client
				// still sends, so that closing does not reset the
				// connection before the close frame reaches it.
				s.stats.reject(RejectTooLarge)
				c.log.Info("control message over the limit", "limit", s.cfg.MaxMessage)
				nc := c.conn.NetConn()
				nc.SetReadDeadline(time.Now().Add(closeGrace))
				io.Copy(io.Discard, nc)
			} else {
				c.log.Debug("control read ended", "err", err)
			}
			return
		}
		if c.isDone() {
			continue // closing: discard until the peer's close
		}
		c.conn.SetReadDeadline(time.Now().Add(idle))
		if typ != websocket.TextMessage {
			s.stats.reject(RejectBinary)
			c.fail(proto.StatusProtocol.CloseCode(), "binary messages are not allowed on the control channel")
			continue
		}
		offStack(func() { s.handleControlData(c, data) })
	}
}

// offStack runs f on a goroutine of its own and waits for it. Decoding
// and handling a message grows a goroutine's stack to 8 KiB and more; the
// reader, which spends its life blocked on an idle connection, would keep
// that stack (issue 14: an idle WebSocket should cost at most 16 KiB).
// Control messages are few, so a goroutine per message costs nothing that
// shows.
func offStack(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// handleControlData decodes one text message from the client and acts on
// it.
func (s *Server) handleControlData(c *session, data []byte) {
	m, err := proto.DecodeMessage(data, s.cfg.MaxMessage)
	if err == nil {
		c.greeted = true
	}
	switch {
	case errors.Is(err, proto.ErrUnknownType):
		s.stats.reject(RejectUnknownType)
		c.enqueue(&proto.ErrorMsg{Status: proto.StatusMalformed, Reason: strings.TrimPrefix(err.Error(), "proto: ")})
		return
	case err != nil:
		s.stats.reject(RejectMalformed)
		c.log.Info("malformed control message", "err", err)
		c.fail(proto.StatusMalformed.CloseCode(), strings.TrimPrefix(err.Error(), "proto: "))
		return
	}
	s.handleControlMsg(c, m)
}

// handleControlMsg acts on one decoded client message.
func (s *Server) handleControlMsg(c *session, m proto.Message) {
	switch m := m.(type) {
	case *proto.Hello:
		c.log.Debug("hello", "client", proto.TruncateReason(m.Client))
	case *proto.Publish:
		s.publishMsg(c, m) // clip.go: publish, then store orders for a clip
	case *proto.Unpublish:
		if reply := s.unpublish(c, m); reply != nil {
			c.enqueue(reply)
		}
	case *proto.OrderFailed:
		s.orderFailed(c, m)
	case *proto.ErrorMsg:
		c.log.Debug("error from client", "ref", m.Ref, "status", m.Status, "reason", proto.TruncateReason(m.Reason))
	default:
		s.stats.reject(RejectUnexpectedType)
		c.enqueue(&proto.ErrorMsg{
			Status: proto.StatusProtocol,
			Reason: "message type " + m.MessageType() + " is not sent by clients",
		})
	}
}

// endSession takes the items of a finished session offline and fails its
// outstanding orders at the relays that needed them.
func (s *Server) endSession(c *session) {
	now := s.cfg.Now()
	s.mu.Lock()
	delete(s.sessions, c)
	n := 0
	for _, it := range c.items {
		// A swarm item stays online while another member is left; the
		// orders failed below are asked again and go to one of them.
		if it.removeMemberLocked(c, now); !it.online() {
			n++
		}
	}
	clear(c.items)
	for _, o := range c.orders {
		s.needFailedLocked(o.relay, o.need, proto.StatusOffline, "publisher went offline")
		s.forgetOrderLocked(o)
	}
	s.mu.Unlock()
	c.log.Info("session ended", "items_offline", n, "close_code", c.closeCode, "reason", c.closeReason)
}

// newSessionID returns a random session id for logs and the Welcome.
func newSessionID() string {
	var b [9]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	return base64.RawURLEncoding.EncodeToString(b[:])
}
