package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// pusher is one push WebSocket to a relay, shared by every part ordered to
// that relay. Part goroutines hand frames to a bounded queue; one goroutine
// writes them, one reads acknowledgements.
type pusher struct {
	c   *Client
	key string // in Client.pushers: the push URL, with "#express" for small parts
	ws  *websocket.Conn

	frames chan []byte // bounded; the writer returns buffers to framePool
	done   chan struct{}
	once   sync.Once
	err    error // set before done is closed

	// begin is held from taking a stream id to queueing its PartBegin,
	// so that ids reach the relay in increasing order, as it requires.
	begin sync.Mutex

	// guarded by Client.mu
	inUse      int // parts counted on this connection by pusherFor
	maxStreams int // parts the relay lets this connection have open

	mu      sync.Mutex // guards the fields below
	streams map[uint32]*outStream
	next    uint32
}

// outStream is the publisher's side of one part.
type outStream struct {
	wake chan struct{} // cap 1

	mu    sync.Mutex // guards the fields below
	limit uint64     // bytes of the part the relay lets us send
	acked uint64
	end   *proto.PartEnd
}

func (s *outStream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

var framePool = sync.Pool{New: func() any { return new([]byte) }}

// Push connections per relay. A relay bounds the parts open on one push
// connection (it says how many in the MaxStreamsHeader of the upgrade
// response); when many readers want parts of the same item at once, the
// client opens more connections to that relay rather than have parts
// refused (issue 14).
const (
	// MaxStreamsHeader is the push upgrade response header in which a relay
	// states how many parts it lets one push connection have open.
	MaxStreamsHeader = "Meshup-Max-Streams"
	// defaultMaxStreams is assumed of a relay that does not say.
	defaultMaxStreams = 64
	// maxPushConnsPerRelay bounds the push connections to one relay.
	maxPushConnsPerRelay = 16
	// expressMax is the longest part sent on a relay's express connection:
	// a small part (a seek, the first bytes of a range) must not queue
	// behind the frames of bulk parts on a shared connection and its TCP
	// buffers (issue 14: seek under load).
	expressMax = 256 << 10
)

// pusherFor returns a live push connection to url with room for one more
// part, dialing one if needed, and counts the part on it; release it with
// p.release.
func (c *Client) pusherFor(ctx context.Context, url string, express bool) (*pusher, error) {
	key := url
	if express {
		key += "#express"
	}
	c.mu.Lock()
	if p := c.roomyPusherLocked(key, false); p != nil {
		c.mu.Unlock()
		return p, nil
	}
	c.mu.Unlock()
	dialer := websocket.Dialer{
		HandshakeTimeout: c.cfg.DialTimeout,
		Subprotocols:     []string{proto.Subprotocol},
		ReadBufferSize:   4 << 10,
		WriteBufferSize:  c.cfg.FrameSize + 64,
		Proxy:            http.ProxyFromEnvironment,
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	ws, resp, err := dialer.DialContext(dctx, url, nil)
	cancel()
	if err != nil {
		return nil, dialError("push", resp, err)
	}
	if ws.Subprotocol() != proto.Subprotocol {
		ws.Close()
		return nil, fmt.Errorf("push: relay did not accept subprotocol %s", proto.Subprotocol)
	}
	maxStreams := defaultMaxStreams
	if n, err := strconv.Atoi(resp.Header.Get(MaxStreamsHeader)); err == nil && n > 0 {
		maxStreams = n
	}
	p := &pusher{
		c: c, key: key, ws: ws,
		frames:     make(chan []byte, 8),
		done:       make(chan struct{}),
		streams:    make(map[uint32]*outStream),
		maxStreams: maxStreams,
	}
	c.mu.Lock()
	if old := c.roomyPusherLocked(key, false); old != nil {
		c.mu.Unlock()
		ws.Close()
		return old, nil // another goroutine dialed first
	}
	if len(c.pushers[key]) >= maxPushConnsPerRelay {
		// At the bound: share the least loaded; the relay refuses the
		// part if that one is full, and the order fails.
		old := c.roomyPusherLocked(key, true)
		c.mu.Unlock()
		ws.Close()
		if old == nil {
			return nil, fmt.Errorf("push: %d connections to %s, all closing", maxPushConnsPerRelay, url)
		}
		return old, nil
	}
	p.inUse = 1
	c.pushers[key] = append(c.pushers[key], p)
	c.mu.Unlock()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); p.writeLoop() }()
	go func() { defer c.wg.Done(); p.readLoop() }()
	return p, nil
}

// roomyPusherLocked returns a live pusher of key with room for a part and
// counts the part on it, or nil. With any set it returns the least loaded
// live pusher even when all are full.
func (c *Client) roomyPusherLocked(key string, any bool) *pusher {
	var best *pusher
	for _, p := range c.pushers[key] {
		select {
		case <-p.done:
			continue
		default:
		}
		if best == nil || p.inUse < best.inUse {
			best = p
		}
	}
	if best == nil || (!any && best.inUse >= best.maxStreams) {
		return nil
	}
	best.inUse++
	return best
}

// release uncounts a part counted by pusherFor.
func (p *pusher) release() {
	p.c.mu.Lock()
	p.inUse--
	p.c.mu.Unlock()
}

// full records that the relay refused a part for too many open on this
// connection, so that the next parts go to another one.
func (p *pusher) full() {
	p.c.mu.Lock()
	p.maxStreams = max(1, p.inUse-1)
	p.c.mu.Unlock()
}

func (p *pusher) close(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.done)
		p.ws.Close()
		p.mu.Lock()
		streams := p.streams
		p.streams = map[uint32]*outStream{}
		p.mu.Unlock()
		for _, s := range streams {
			s.signal()
		}
		p.c.mu.Lock()
		ps := slices.DeleteFunc(p.c.pushers[p.key], func(q *pusher) bool { return q == p })
		if len(ps) == 0 {
			delete(p.c.pushers, p.key)
		} else {
			p.c.pushers[p.key] = ps
		}
		p.c.mu.Unlock()
	})
}

func (p *pusher) writeLoop() {
	for {
		select {
		case <-p.done:
			return
		case <-p.c.ctx.Done():
			p.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			p.close(ErrClosed)
			return
		case f := <-p.frames:
			p.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
			err := p.ws.WriteMessage(websocket.BinaryMessage, f)
			b := f[:0]
			framePool.Put(&b)
			if err != nil {
				p.close(fmt.Errorf("push: write: %w", err))
				return
			}
		}
	}
}

func (p *pusher) readLoop() {
	p.ws.SetReadLimit(64 << 10)
	idle := p.c.cfg.IdleTimeout
	p.ws.SetReadDeadline(time.Now().Add(idle))
	p.ws.SetPingHandler(func(data string) error {
		p.ws.SetReadDeadline(time.Now().Add(idle))
		return p.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	var buf []byte
	for {
		mt, r, err := p.ws.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				if st, ok := proto.StatusFromCloseCode(ce.Code); ok {
					err = &proto.Error{Status: st, Msg: ce.Text}
				}
			}
			p.close(fmt.Errorf("push: relay closed the connection: %w", err))
			return
		}
		p.ws.SetReadDeadline(time.Now().Add(idle))
		if mt != websocket.BinaryMessage {
			continue
		}
		h, body, err := proto.ReadFrame(r, buf, 64<<10)
		if err != nil {
			p.close(fmt.Errorf("push: %w", err))
			return
		}
		buf = body[:0]
		switch h.Type {
		case proto.FrameAck:
			a, err := proto.DecodeAck(body)
			if err != nil {
				p.close(fmt.Errorf("push: %w", err))
				return
			}
			if s := p.stream(a.Stream); s != nil {
				s.mu.Lock()
				s.limit = max(s.limit, a.Limit)
				s.acked = max(s.acked, a.Acked)
				s.mu.Unlock()
				s.signal()
			}
		case proto.FramePartEnd:
			e, err := proto.DecodePartEnd(body)
			if err != nil {
				p.close(fmt.Errorf("push: %w", err))
				return
			}
			if s := p.stream(e.Stream); s != nil {
				s.mu.Lock()
				s.end = &e
				s.mu.Unlock()
				s.signal()
			}
		}
	}
}

func (p *pusher) stream(id uint32) *outStream {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.streams[id]
}

// enqueue hands a frame to the writer.
func (p *pusher) enqueue(ctx context.Context, f []byte) error {
	select {
	case p.frames <- f:
		return nil
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pushPart pushes one ordered part and waits until the relay has accepted
// every byte end to end, or refused the part.
func (c *Client) pushPart(ctx context.Context, it *Item, o *proto.Order) error {
	for attempt := 0; ; attempt++ {
		p, err := c.pusherFor(ctx, o.PushURL, o.Len <= expressMax)
		if err != nil {
			return err
		}
		refused, err := c.pushPartOn(ctx, p, it, o)
		p.release()
		if refused && attempt < 3 {
			// The relay refused the part at once for too many parts
			// open on this connection: another connection takes it.
			p.full()
			continue
		}
		return err
	}
}

// pushPartOn pushes one part on p. refused reports that the relay refused
// the part before any byte because p has too many parts open.
func (c *Client) pushPartOn(ctx context.Context, p *pusher, it *Item, o *proto.Order) (refused bool, err error) {
	s := &outStream{wake: make(chan struct{}, 1)}
	p.begin.Lock()
	p.mu.Lock()
	p.next++
	id := p.next
	p.streams[id] = s
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.streams, id)
		p.mu.Unlock()
	}()

	begin := proto.PartBegin{Stream: id, Item: o.Item, Off: uint64(o.Off), Len: uint64(o.Len), Token: o.Token}
	err = p.enqueue(ctx, begin.AppendFrame(nil))
	p.begin.Unlock()
	if err != nil {
		return false, err
	}
	var sent, reported uint64
	n := uint64(o.Len)
	for {
		s.mu.Lock()
		limit, acked, end := s.limit, s.acked, s.end
		s.mu.Unlock()
		if acked > reported {
			c.progress(it, o.Relay, o.Off+int64(reported), int64(acked-reported))
			reported = acked
		}
		if end != nil {
			if end.Status == proto.StatusOK {
				if n > reported {
					c.progress(it, o.Relay, o.Off+int64(reported), int64(n-reported))
				}
				return false, nil
			}
			refused := end.Status == proto.StatusOverLimit && sent == 0 && acked == 0 && limit == 0
			return refused, &proto.Error{Status: end.Status, Msg: end.Reason}
		}
		if sent < min(limit, n) {
			k := min(uint64(c.cfg.FrameSize), min(limit, n)-sent)
			if it.enc != nil {
				k = it.enc.alignFrame(o.Off+int64(sent), k)
			}
			f, err := it.readFrame(id, o.Off+int64(sent), int(k))
			if err != nil {
				p.enqueue(ctx, proto.PartEnd{Stream: id, Status: proto.StatusSourceError, Reason: err.Error()}.AppendFrame(nil))
				return false, &proto.Error{Status: proto.StatusSourceError, Msg: err.Error()}
			}
			if err := p.enqueue(ctx, f); err != nil {
				return false, p.abort(id, err)
			}
			sent += k
			continue
		}
		select {
		case <-s.wake:
		case <-p.done:
			return false, p.err
		case <-ctx.Done():
			return false, p.abort(id, ctx.Err())
		}
	}
}

// abort tells the relay the part is abandoned and returns err.
func (p *pusher) abort(id uint32, err error) error {
	f := proto.PartEnd{Stream: id, Status: proto.StatusCancelled, Reason: "publisher cancelled"}.AppendFrame(nil)
	select {
	case p.frames <- f:
	default:
	}
	return err
}

// readFrame reads n bytes of the item as published (sealed when it is
// encrypted) at off into a pooled PartData frame.
func (it *Item) readFrame(stream uint32, off int64, n int) ([]byte, error) {
	bp := framePool.Get().(*[]byte)
	f := proto.AppendPartDataHeader((*bp)[:0], stream, n)
	hdr := len(f)
	f = slices.Grow(f, n)[:hdr+n]
	var err error
	if it.enc != nil {
		err = it.enc.readAt(f[hdr:], off)
	} else {
		err = readFull(it.src.Reader, f[hdr:], off)
	}
	if err != nil {
		b := f[:0]
		framePool.Put(&b)
		return nil, err
	}
	return f, nil
}

// readFull reads len(p) bytes at off.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	got, err := r.ReadAt(p, off)
	if got == len(p) {
		return nil // io.ReaderAt may report io.EOF with the last bytes
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("read source at %d: source shorter than published", off)
	}
	return fmt.Errorf("read source at %d: %w", off, err)
}
