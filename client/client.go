// Package client is meshup's Go client library: it publishes items to a
// rendezvous, pushes the parts the rendezvous orders to the relays it names,
// and fetches items over HTTP with Range.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// Defaults for Config.
const (
	DefaultFrameSize   = 1 << 20 // part bytes per PartData frame
	DefaultDialTimeout = 10 * time.Second
	DefaultIdleTimeout = 60 * time.Second
)

// Config configures a Client.
type Config struct {
	// Rendezvous is the base URL of the rendezvous, as in
	// "http://127.0.0.1:8080". Required.
	Rendezvous string
	// FrameSize is the part bytes per PartData frame. Defaults to 256 KiB.
	FrameSize int
	// DialTimeout bounds WebSocket dials. Defaults to 10s.
	DialTimeout time.Duration
	// IdleTimeout drops a push connection that has seen nothing for this
	// long while parts are open. Defaults to 60s.
	IdleTimeout time.Duration
	// OnProgress, if set, is called as bytes of an item are accepted end
	// to end by a relay. It must not block.
	OnProgress func(Progress)
	// OnState, if set, is called when the control connection goes up
	// (true) or down (false). It must not block.
	OnState func(online bool, err error)
	// Logger receives the client's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Progress reports bytes of an item pushed and acknowledged.
type Progress struct {
	Item  proto.ItemID
	Relay string
	Acked int64 // bytes of this item acknowledged end to end, all parts, since publish
	// Off and Len are the bytes [Off, Off+Len) of the item as published
	// (the ciphertext of an encrypted item) that this call reports
	// newly acknowledged.
	Off, Len int64
}

// Source is what a publisher publishes.
type Source struct {
	Name   string
	MIME   string
	Size   int64
	Reader io.ReaderAt // read with ReadAt only when parts are ordered
	// Kind is proto.KindFile (the default), proto.KindClip or
	// proto.KindMessage; a message carries Text instead of Reader.
	Kind string
	Text string
	// Via pins the entry relay (a relay id) the item's parts are pushed
	// to, to check one path through the mesh. Empty lets the rendezvous
	// choose.
	Via string
	// Plain publishes the bytes as they are. By default a file or clip is
	// end-to-end encrypted (proto/e2e.go): relays and the rendezvous see
	// its ciphertext and size only, and the share link carries the key in
	// its fragment. Messages are always plain.
	Plain bool
	// Volunteers lets relays of class volunteer carry a plaintext item
	// (proto.Publish.Volunteers). Encrypted items go through any relay.
	Volunteers bool
	// Key is the item key of an encrypted item taken back with Reclaim:
	// the key of the share link published earlier. Zero for a new item
	// (a fresh key is drawn).
	Key proto.E2EKey
	// Swarm publishes the item as one member of a swarm (issue 10,
	// proto.Publish.Swarm): with Reclaim, the item is joined as one more
	// publisher instead of being taken over from the sessions that
	// publish it, and the rendezvous spreads its orders over all of them.
	// Every member must hold the same bytes and, for an encrypted item,
	// the same Key (the ciphertext is deterministic). With Publish, a new
	// item is published that others can join with its id, owner secret
	// and key. Reconnects keep the flag, so a member that comes back
	// rejoins rather than pushing the others out. A member announcing
	// another size is refused with proto.StatusConflict.
	Swarm bool
	// Modified is the source's modification time: sealed into an
	// encrypted item's metadata, or sent in clear for a plaintext one,
	// where it makes the item's Last-Modified and ETag stable across
	// restarts. Zero means the Reader's Stat().ModTime() when it has one
	// (an *os.File does).
	Modified time.Time
}

// Item is a published item.
type Item struct {
	ID proto.ItemID
	// ShareURL and DownloadURL are the links to give out; for an
	// encrypted item both carry the key in their fragment (#k=...), which
	// HTTP clients never send (curl gets the ciphertext; meshup get and
	// the web app decrypt).
	ShareURL    string
	DownloadURL string
	// Encrypted tells whether the item is end-to-end encrypted; Key is
	// then its key.
	Encrypted bool
	Key       proto.E2EKey
	// Expires is when a clip (Source.Kind proto.KindClip) expires: until
	// then relays hold it and it stays readable after this client leaves.
	// Zero for other kinds.
	Expires time.Time

	src   Source
	owner string
	size  int64 // published size: the ciphertext size when encrypted
	enc   *encrypted
	acked int64 // guarded by Client.mu
}

// Owner returns the item's owner secret: with the id, it takes the item
// back (Client.Reclaim). Keep it as secret as the ability to publish
// under this id.
func (it *Item) Owner() string { return it.owner }

// ErrClosed means the client has been closed.
var ErrClosed = errors.New("client: closed")

// Client is a connection to a rendezvous that keeps itself up: when the
// control connection drops, it reconnects with backoff and takes its items
// back online. Its methods are safe for concurrent use.
type Client struct {
	cfg  Config
	log  *slog.Logger
	base *url.URL

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ctl chan []byte // encoded control messages to send; bounded

	mu       sync.Mutex // guards the fields below
	items    map[proto.ItemID]*Item
	waiting  map[string]chan result // Publish calls by ref
	orders   map[uint64]context.CancelFunc
	pushers  map[string][]*pusher // by push URL; several when one is full
	online   bool
	onlineCh chan struct{} // closed when online; replaced when offline
	// announced holds, for items whose Published arrived but which are
	// not in items yet, a channel closed once they are (registerItem):
	// an order may follow a Published at once (a clip's store orders).
	announced map[proto.ItemID]chan struct{}
}

type result struct {
	pub *proto.Published
	err error
}

// New returns a client and starts connecting to the rendezvous in the
// background. Close it when done.
func New(cfg Config) (*Client, error) {
	if cfg.FrameSize <= 0 {
		cfg.FrameSize = DefaultFrameSize
	}
	if cfg.FrameSize > proto.DefaultMaxFrame-proto.PartDataPrefixLen {
		return nil, fmt.Errorf("client: FrameSize %d over %d", cfg.FrameSize, proto.DefaultMaxFrame-proto.PartDataPrefixLen)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	base, err := url.Parse(strings.TrimSuffix(cfg.Rendezvous, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("client: rendezvous %q is not an http(s) URL", cfg.Rendezvous)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		base:     base,
		ctx:      ctx,
		cancel:   cancel,
		ctl:      make(chan []byte, 256),
		items:    make(map[proto.ItemID]*Item),
		waiting:  make(map[string]chan result),
		orders:   make(map[uint64]context.CancelFunc),
		pushers:  make(map[string][]*pusher),
		onlineCh: make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.controlLoop()
	}()
	return c, nil
}

// Close disconnects and stops serving orders. It is idempotent.
func (c *Client) Close() error {
	c.cancel()
	c.wg.Wait()
	return nil
}

// WaitOnline waits until the control connection is up.
func (c *Client) WaitOnline(ctx context.Context) error {
	c.mu.Lock()
	ch := c.onlineCh
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// Publish announces src and returns the published item. The bytes stay
// where they are until a consumer asks for them.
func (c *Client) Publish(ctx context.Context, src Source) (*Item, error) {
	return c.publish(ctx, src, proto.ItemID{}, "")
}

// Reclaim publishes src under the id of an item published earlier, given
// its owner secret (Item.Owner), so that its share links work again: after
// a restart of this program, or of a rendezvous that has forgotten the
// item. The rendezvous checks that id derives from owner (see
// proto.ItemID) and refuses with proto.StatusForbidden otherwise. An
// encrypted item needs its key in src.Key, so that the link's #k= stays
// valid. With src.Swarm set it joins the item's publishers instead of
// taking it over (see Source.Swarm).
func (c *Client) Reclaim(ctx context.Context, src Source, id proto.ItemID, owner string) (*Item, error) {
	if id.IsZero() || owner == "" {
		return nil, errors.New("client: Reclaim needs an id and its owner secret")
	}
	return c.publish(ctx, src, id, owner)
}

func (c *Client) publish(ctx context.Context, src Source, id proto.ItemID, owner string) (*Item, error) {
	if src.Kind == "" {
		src.Kind = proto.KindFile
	}
	if src.MIME == "" && src.Kind != proto.KindMessage {
		// A message left untyped gets the rendezvous's text default.
		src.MIME = "application/octet-stream"
	}
	if src.Kind == proto.KindMessage {
		src.Size = int64(len(src.Text))
	} else if src.Reader == nil {
		return nil, errors.New("client: Source.Reader is required")
	}
	if src.Kind == proto.KindMessage || src.Plain {
		return c.publishPlain(ctx, src, id, owner)
	}
	return c.publishEncrypted(ctx, src, id, owner)
}

// publishPlain publishes src as it is, under id when owner is set (a
// reclaim).
func (c *Client) publishPlain(ctx context.Context, src Source, id proto.ItemID, owner string) (*Item, error) {
	p := proto.Publish{ID: id, Owner: owner, Kind: src.Kind, Name: src.Name, MIME: src.MIME, Size: src.Size, Text: src.Text, Via: src.Via, Volunteers: src.Volunteers, Swarm: src.Swarm}
	if src.Kind != proto.KindMessage {
		p.Modified = sourceModTime(src)
	}
	pub, err := c.publishRetry(ctx, p)
	if err != nil {
		return nil, err
	}
	it := &Item{ID: pub.ID, ShareURL: pub.ShareURL, DownloadURL: pub.DownloadURL, src: src, owner: pub.Owner, size: p.Size, Expires: expiresAt(pub)}
	c.registerItem(it)
	return it, nil
}

// publishRetry sends p until the rendezvous answers it, riding out
// reconnects.
func (c *Client) publishRetry(ctx context.Context, p proto.Publish) (*proto.Published, error) {
	for {
		if err := c.WaitOnline(ctx); err != nil {
			return nil, err
		}
		pub, err := c.request(ctx, p)
		if errors.Is(err, errOffline) {
			continue // the connection dropped under us; try again once back
		}
		return pub, err
	}
}

// Unpublish withdraws an item.
func (c *Client) Unpublish(id proto.ItemID) {
	c.mu.Lock()
	delete(c.items, id)
	c.mu.Unlock()
	c.send(proto.Unpublish{ID: id})
}

var errOffline = errors.New("client: control connection lost")

// request sends a Publish and waits for its answer.
func (c *Client) request(ctx context.Context, p proto.Publish) (*proto.Published, error) {
	p.Ref = newRef()
	ch := make(chan result, 1)
	c.mu.Lock()
	c.waiting[p.Ref] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, p.Ref)
		c.mu.Unlock()
	}()
	if err := c.send(p); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.pub, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, ErrClosed
	}
}

// send queues a control message. It fails when the queue is full, which
// only happens when the rendezvous stops reading.
func (c *Client) send(m proto.Message) error {
	b, err := proto.EncodeMessage(m)
	if err != nil {
		return err
	}
	select {
	case c.ctl <- b:
		return nil
	default:
		return errors.New("client: control queue full")
	}
}

func newRef() string {
	var b [8]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// controlLoop keeps the control connection up until Close.
func (c *Client) controlLoop() {
	backoff := 250 * time.Millisecond
	var lost time.Time // when a session that had been up for long dropped
	for {
		start := time.Now()
		err := c.serveControl()
		if c.ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff, lost = 250*time.Millisecond, time.Now()
		}
		if time.Since(lost) < 30*time.Second {
			// Most likely the rendezvous restarted: come back quickly, so
			// readers see a short pause (issue 14). Jitter spreads the
			// returning publishers.
			backoff = min(backoff, 2*time.Second)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.Warn("rendezvous unreachable; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (c *Client) controlURL() string {
	u := *c.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/v1/control"
	return u.String()
}

// serveControl runs one control connection to its end.
func (c *Client) serveControl() error {
	dialer := websocket.Dialer{
		HandshakeTimeout: c.cfg.DialTimeout,
		Subprotocols:     []string{proto.Subprotocol},
		Proxy:            http.ProxyFromEnvironment,
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	ws, resp, err := dialer.DialContext(ctx, c.controlURL(), nil)
	cancel()
	if err != nil {
		return dialError("control", resp, err)
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	defer ws.Close()
	ws.SetReadLimit(proto.DefaultMaxMessage)
	_, data, err := ws.ReadMessage()
	if err != nil {
		return fmt.Errorf("control: read welcome: %w", err)
	}
	m, err := proto.DecodeMessage(data, proto.DefaultMaxMessage)
	if err != nil {
		return fmt.Errorf("control: welcome: %w", err)
	}
	welcome, ok := m.(*proto.Welcome)
	if !ok {
		return fmt.Errorf("control: got %s, want welcome", m.MessageType())
	}
	if welcome.MaxMessage > 0 {
		ws.SetReadLimit(int64(welcome.MaxMessage))
	}
	// The rendezvous closes a session that sends nothing soon after the
	// upgrade: a hello says we are a client, not an idle socket.
	if hello, err := proto.EncodeMessage(&proto.Hello{Client: "meshup-go"}); err == nil {
		ws.SetWriteDeadline(time.Now().Add(c.cfg.DialTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
			return fmt.Errorf("control: send hello: %w", err)
		}
	}
	idle := 2 * time.Duration(max(welcome.PingSeconds, 15)) * time.Second
	ws.SetReadDeadline(time.Now().Add(idle))
	ws.SetPingHandler(func(data string) error {
		ws.SetReadDeadline(time.Now().Add(idle))
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})

	done := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.controlWriter(ws, done)
	}()
	c.setOnline(true, nil)
	c.reclaim()

	err = c.controlReader(ws, idle)
	close(done)
	ws.Close()
	<-writerDone
	if c.ctx.Err() != nil {
		c.setOnline(false, nil) // Close: no error to report
		return nil
	}
	c.setOnline(false, err)
	return err
}

func (c *Client) controlWriter(ws *websocket.Conn, done chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-c.ctx.Done():
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			ws.Close()
			return
		case b := <-c.ctl:
			ws.SetWriteDeadline(time.Now().Add(15 * time.Second))
			if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
				ws.Close()
				return
			}
		}
	}
}

func (c *Client) controlReader(ws *websocket.Conn, idle time.Duration) error {
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		ws.SetReadDeadline(time.Now().Add(idle))
		if mt != websocket.TextMessage {
			continue
		}
		m, err := proto.DecodeMessage(data, proto.DefaultMaxMessage)
		if errors.Is(err, proto.ErrUnknownType) {
			c.log.Debug("skipping control message", "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("control: %w", err)
		}
		switch m := m.(type) {
		case *proto.Published:
			c.announce(m.ID)
			c.answer(m.Ref, result{pub: m})
		case *proto.ErrorMsg:
			if m.Ref == "" || !c.answer(m.Ref, result{err: &proto.Error{Status: m.Status, Msg: m.Reason}}) {
				c.log.Warn("rendezvous reported an error", "status", int(m.Status), "reason", m.Reason)
			}
		case *proto.Order:
			c.startOrder(m)
		case *proto.Cancel:
			c.mu.Lock()
			cancel := c.orders[m.Order]
			c.mu.Unlock()
			if cancel != nil {
				cancel()
			}
		}
	}
}

func (c *Client) answer(ref string, r result) bool {
	c.mu.Lock()
	ch := c.waiting[ref]
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- r:
	default:
	}
	return true
}

func (c *Client) setOnline(on bool, err error) {
	c.mu.Lock()
	if on == c.online {
		c.mu.Unlock()
		return
	}
	c.online = on
	if on {
		close(c.onlineCh)
	} else {
		c.onlineCh = make(chan struct{})
		for ref, ch := range c.waiting {
			select {
			case ch <- result{err: errOffline}:
			default:
			}
			delete(c.waiting, ref)
		}
	}
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(on, err)
	}
}

// reclaim takes every item back online after a reconnect.
func (c *Client) reclaim() {
	c.mu.Lock()
	var ps []proto.Publish
	for _, it := range c.items {
		ps = append(ps, it.publishMsg("reclaim-"+it.ID.String()))
	}
	c.mu.Unlock()
	for _, p := range ps {
		if err := c.send(p); err != nil {
			c.log.Warn("reclaim item", "item", p.ID, "err", err)
		}
	}
}

// startOrder pushes an ordered part in its own goroutine.
func (c *Client) startOrder(o *proto.Order) {
	c.mu.Lock()
	it := c.items[o.Item]
	c.mu.Unlock()
	if it == nil && c.awaitItem(o) {
		return
	}
	if it == nil || it.src.Reader == nil {
		c.send(proto.OrderFailed{Order: o.Order, Status: proto.StatusNotFound, Reason: "item not published by this client"})
		return
	}
	if err := it.checkSource(); err != nil {
		c.log.Warn("refusing order", "item", o.Item, "err", err)
		c.send(proto.OrderFailed{Order: o.Order, Status: proto.StatusSourceError, Reason: proto.TruncateReason(err.Error())})
		return
	}
	if o.Off < 0 || o.Len < 0 || o.Off+o.Len > it.size {
		c.send(proto.OrderFailed{Order: o.Order, Status: proto.StatusMalformed, Reason: "order outside the item"})
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.mu.Lock()
	c.orders[o.Order] = cancel
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.orders, o.Order)
			c.mu.Unlock()
			cancel()
		}()
		err := c.pushPart(ctx, it, o)
		if err == nil {
			c.log.Info("part pushed", "item", o.Item, "off", o.Off, "len", o.Len, "relay", o.Relay)
			return
		}
		if ctx.Err() != nil {
			return
		}
		var pe *proto.Error
		status := proto.StatusUnavailable
		if errors.As(err, &pe) {
			status = pe.Status
		}
		c.log.Warn("push failed", "item", o.Item, "off", o.Off, "len", o.Len, "err", err)
		if status != proto.StatusCancelled && status != proto.StatusNotWanted {
			c.send(proto.OrderFailed{Order: o.Order, Status: status, Reason: proto.TruncateReason(err.Error())})
		}
	}()
}

func (c *Client) progress(it *Item, relay string, off, n int64) {
	c.mu.Lock()
	it.acked += n
	acked := it.acked
	c.mu.Unlock()
	if c.cfg.OnProgress != nil {
		c.cfg.OnProgress(Progress{Item: it.ID, Relay: relay, Acked: acked, Off: off, Len: n})
	}
}

func dialError(what string, resp *http.Response, err error) error {
	if resp != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return fmt.Errorf("%s: dial: %s: %s", what, resp.Status, strings.TrimSpace(string(body)))
	}
	return fmt.Errorf("%s: dial: %w", what, err)
}

// sourceModTime returns src's modification time in Unix seconds: Modified,
// else the Reader's Stat().ModTime() when it has one, else 0 (unknown).
func sourceModTime(src Source) int64 {
	t := src.Modified
	if st, ok := src.Reader.(statter); ok && t.IsZero() {
		if fi, err := st.Stat(); err == nil {
			t = fi.ModTime()
		}
	}
	if t.IsZero() || t.Unix() <= 0 {
		return 0
	}
	return t.Unix()
}
