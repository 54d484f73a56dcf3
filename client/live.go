package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshup/meshup/proto"
)

// Live channels (proto/live.go), sealed end to end by default
// (proto/livee2e.go): PublishLive pushes one, ReadLive reads one from its
// link.

// LiveOptions configures PublishLive and ReadLiveWith.
type LiveOptions struct {
	// Rendezvous is the rendezvous's base URL.
	Rendezvous string
	// Secret is the channel secret (proto.LiveID); empty draws a fresh
	// one.
	Secret string
	// Plain publishes a plaintext channel (readable by relays and any
	// HTTP client) instead of a sealed one.
	Plain bool
	// Volunteers lets volunteer relays carry a plaintext channel (sealed
	// ones may always go through volunteers).
	Volunteers bool
	// Meta and Init are a sealed channel's first head. Meta.Type
	// defaults to application/octet-stream.
	Meta proto.LiveMeta
	Init []byte
	// HTTPClient defaults to a client of the library's own, with a clone
	// of http.DefaultTransport.
	HTTPClient *http.Client

	// TickInterval is how long a sealed channel's publisher stays quiet
	// before it sends a tick (an empty record), so that readers always
	// see a recent record. Defaults to proto.LiveTickInterval; negative:
	// no ticks.
	TickInterval time.Duration
	// MaxLag and CatchUp are a sealed channel's reader limits
	// (proto.LiveReader): within CatchUp (default 30 s) of its first
	// record the reader must see a record at most MaxLag (default 60 s)
	// behind its clock, else it fails with proto.ErrLiveStale: a relay
	// replays or delays the channel. Negative MaxLag turns the check off.
	MaxLag  time.Duration
	CatchUp time.Duration
	// Now is the clock of the publisher's records and of the reader's
	// checks. Defaults to time.Now.
	Now func() time.Time
}

// LivePublisher pushes a live channel. Its methods are not safe for
// concurrent use.
type LivePublisher struct {
	// Link is the channel's link for readers: RDV/l/ID#k=KEY for a sealed
	// channel (the key only in the fragment), RDV/v1/live/ID for a
	// plaintext one.
	Link  string
	Entry proto.LiveEntry
	// Secret is the channel secret, the capability to write into it.
	Secret string

	pw       *io.PipeWriter
	lw       *proto.LiveWriter // nil for a plaintext channel
	done     chan liveResult
	stopTick chan struct{} // closed to stop the ticker; nil without one
}

// LiveResult is the relay's account of a pushed channel.
type LiveResult struct {
	// Bytes is what the relay received (sealed records, for a sealed
	// channel).
	Bytes int64 `json:"bytes"`
	// Status and Reason say how the relay ended the channel: StatusOK
	// for the publisher's clean end.
	Status proto.Status `json:"status"`
	Reason string       `json:"reason"`
}

type liveResult struct {
	res LiveResult
	err error
}

// PublishLive asks the rendezvous where to push a new channel and starts
// the push (a chunked PUT). A sealed channel's head is on the relay when
// it returns. Write the channel's bytes, then Close it (its clean end) or
// Abort it.
func PublishLive(ctx context.Context, opt LiveOptions) (*LivePublisher, error) {
	hc := orDefault(opt.HTTPClient)
	id, sec := proto.NewLiveSecret()
	if opt.Secret != "" {
		var err error
		if id, err = proto.LiveID(opt.Secret); err != nil {
			return nil, fmt.Errorf("client: live secret: %w", err)
		}
		sec = opt.Secret
	}
	if opt.Meta.Type == "" {
		opt.Meta.Type = "application/octet-stream"
	}
	if !opt.Plain {
		if _, err := proto.AppendLiveHead(nil, opt.Meta, opt.Init); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	base := strings.TrimSuffix(opt.Rendezvous, "/")
	u := base + "/v1/live/" + id.String()
	switch {
	case !opt.Plain:
		u += "?enc=" + proto.LiveEncVersion
	case opt.Volunteers:
		u += "?volunteers=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+sec)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: ask the rendezvous for a live relay: %w", err)
	}
	p := &LivePublisher{Secret: sec, done: make(chan liveResult, 1)}
	if err := decodeLiveOK(resp, &p.Entry); err != nil {
		return nil, fmt.Errorf("client: ask the rendezvous for a live relay: %w", err)
	}
	ctype := "application/octet-stream"
	var k proto.E2EKey
	if opt.Plain {
		p.Link = p.Entry.URL
	} else {
		k = proto.NewE2EKey()
		share := p.Entry.Share
		if share == "" { // a rendezvous that predates sealed channels' pages
			share = base + "/l/" + id.String()
		}
		p.Link = share + "#" + k.Fragment()
		ctype = proto.LiveContentType
	}

	pr, pw := io.Pipe()
	p.pw = pw
	preq, err := http.NewRequestWithContext(ctx, http.MethodPut, p.Entry.PushURL, pr)
	if err != nil {
		return nil, err
	}
	preq.ContentLength = -1
	preq.Header.Set("Authorization", "Bearer "+sec)
	preq.Header.Set("Content-Type", ctype)
	go func() {
		var r liveResult
		resp, err := hc.Do(preq)
		if err != nil {
			r.err = fmt.Errorf("client: push to the live relay: %w", err)
		} else if err := decodeLiveOK(resp, &r.res); err != nil {
			r.err = fmt.Errorf("client: push to the live relay: %w", err)
		}
		pr.CloseWithError(errors.Join(r.err, errors.New("client: the live push ended")))
		p.done <- r
	}()
	if !opt.Plain {
		// One record per Write of the pipe: each goes out as it is made.
		p.lw = proto.NewLiveWriter(pw, k, id)
		p.lw.Now = opt.Now
		if opt.TickInterval > 0 {
			p.lw.TickInterval = opt.TickInterval
		}
		if err := p.lw.Head(opt.Meta, opt.Init); err != nil {
			pw.CloseWithError(err)
			r := <-p.done
			return nil, errors.Join(r.err, err)
		}
		if opt.TickInterval >= 0 {
			p.stopTick = make(chan struct{})
			go tickLive(p.lw, p.stopTick)
		}
	}
	return p, nil
}

// tickLive calls lw.Tick when it is due until lw fails (closed) or stop
// is closed.
func tickLive(lw *proto.LiveWriter, stop <-chan struct{}) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		next, err := lw.Tick()
		if err != nil {
			return
		}
		t.Reset(next)
	}
}

// stopTicker stops the ticker goroutine, if any.
func (p *LivePublisher) stopTicker() {
	if p.stopTick != nil {
		close(p.stopTick)
		p.stopTick = nil
	}
}

// Write sends b: sealed as data records, or as they are on a plaintext
// channel.
func (p *LivePublisher) Write(b []byte) (int, error) {
	if p.lw == nil {
		return p.pw.Write(b)
	}
	return p.lw.Write(b)
}

// Sync sends b as a point where readers may join (a sealed channel's sync
// record, e.g. a media cluster); on a plaintext channel, as Write.
func (p *LivePublisher) Sync(b []byte) (int, error) {
	if p.lw == nil {
		return p.pw.Write(b)
	}
	return p.lw.Sync(b)
}

// Head sends a new head (meta and init segment) on a sealed channel:
// readers re-initialise, and new readers join under it.
func (p *LivePublisher) Head(m proto.LiveMeta, init []byte) error {
	if p.lw == nil {
		return errors.New("client: a plaintext live channel has no head")
	}
	return p.lw.Head(m, init)
}

// Close ends the channel cleanly (a sealed channel's last record) and
// returns the relay's account of it.
func (p *LivePublisher) Close() (LiveResult, error) {
	p.stopTicker()
	if p.lw != nil {
		if err := p.lw.Close(); err != nil {
			p.pw.CloseWithError(err)
			r := <-p.done
			return r.res, errors.Join(r.err, err)
		}
	}
	p.pw.Close()
	r := <-p.done
	if r.err == nil && r.res.Status != proto.StatusOK {
		r.err = fmt.Errorf("client: the relay ended the live channel: %s", r.res.Reason)
	}
	return r.res, r.err
}

// Abort ends the push with err: the channel ends not cleanly, and its
// readers see that it was cut short.
func (p *LivePublisher) Abort(err error) {
	p.stopTicker()
	p.pw.CloseWithError(err)
	<-p.done
}

// decodeLiveOK decodes a 200 response's JSON body into v, or returns the
// error body's message.
func decodeLiveOK(resp *http.Response, v any) error {
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, 1<<20)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(body).Decode(&e)
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(body).Decode(v)
}

// Errors of ReadLive.
var (
	// ErrLiveNoKey means a sealed channel's link lacks its key.
	ErrLiveNoKey = errors.New("this live channel is sealed end to end and the link has no key: use the whole link, with its #k=... fragment")
	// ErrLiveCut means a plaintext channel's body did not end cleanly.
	// (A sealed channel's is proto.ErrLiveNoEnd.)
	ErrLiveCut = errors.New("live channel cut off before its end (slow reader, or the publisher or a relay was lost; see the relay's log)")
)

// IsLiveURL reports whether raw is a live channel's link: /v1/live/ID, or
// a sealed channel's page /l/ID.
func IsLiveURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (strings.HasPrefix(u.Path, "/v1/live/") || strings.HasPrefix(u.Path, "/l/"))
}

// LiveStream is a live channel read from its link.
type LiveStream struct {
	// Sealed tells whether the channel is sealed; Reader is then a
	// proto.LiveReader (its head, OnHead).
	Sealed bool
	Reader *proto.LiveReader
	resp   *http.Response
	r      io.Reader
}

// ReadLive opens a live channel's link (RDV/l/ID#k=KEY, RDV/v1/live/ID
// with or without #k=KEY) from the live edge. A sealed channel's stream is
// decrypted with the key of the link's fragment: a relay that alters,
// drops or reorders records, replays or delays the channel, and a channel
// cut before its end mark, are errors of Read (proto.ErrLiveIntegrity,
// ErrLiveMissing, ErrLiveStale, ErrLiveTimeBack, ErrLiveNoEnd). Close the
// stream when done.
func ReadLive(ctx context.Context, link string, hc *http.Client) (*LiveStream, error) {
	return ReadLiveWith(ctx, link, LiveOptions{HTTPClient: hc})
}

// ReadLiveWith is ReadLive with options: HTTPClient, and a sealed
// channel's reader limits MaxLag, CatchUp and clock Now.
func ReadLiveWith(ctx context.Context, link string, opt LiveOptions) (*LiveStream, error) {
	hc := orDefault(opt.HTTPClient)
	u, err := url.Parse(link)
	if err != nil {
		return nil, err
	}
	key, haveKey, err := proto.ParseE2EFragment(u.Fragment)
	if err != nil {
		return nil, fmt.Errorf("client: the link's key (#k=...) is malformed: %w", err)
	}
	page := strings.HasPrefix(u.Path, "/l/")
	id, err := proto.ParseItemID(strings.TrimPrefix(strings.TrimPrefix(u.Path, "/l/"), "/v1/live/"))
	if err != nil {
		return nil, fmt.Errorf("client: %q names no live channel: %w", link, err)
	}
	if page && !haveKey {
		return nil, ErrLiveNoKey
	}
	u.Fragment, u.RawFragment = "", ""
	if page {
		u.Path, u.RawPath = "/v1/live/"+id.String(), ""
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: live: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: live: %w", decodeLiveOK(resp, nil))
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	ls := &LiveStream{Sealed: mt == proto.LiveContentType, resp: resp}
	switch {
	case ls.Sealed && !haveKey:
		resp.Body.Close()
		return nil, ErrLiveNoKey
	case !ls.Sealed && haveKey:
		resp.Body.Close()
		return nil, fmt.Errorf("client: the link carries a key but the channel is not sealed (Content-Type %q)", resp.Header.Get("Content-Type"))
	case ls.Sealed:
		ls.Reader = proto.NewLiveReader(resp.Body, key, id)
		ls.Reader.MaxLag, ls.Reader.CatchUp, ls.Reader.Now = opt.MaxLag, opt.CatchUp, opt.Now
		ls.r = ls.Reader
	default:
		ls.r = &plainLive{resp: resp}
	}
	return ls, nil
}

// Read implements io.Reader.
func (s *LiveStream) Read(p []byte) (int, error) { return s.r.Read(p) }

// WriteTo implements io.WriterTo: bytes go to w as they come.
func (s *LiveStream) WriteTo(w io.Writer) (int64, error) {
	if s.Reader != nil {
		return s.Reader.WriteTo(w)
	}
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := s.r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil { // unbuffered: each chunk goes on as it comes
				return n, werr
			}
			n += int64(k)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Close closes the response.
func (s *LiveStream) Close() error { return s.resp.Body.Close() }

// plainLive reads a plaintext channel's body: io.EOF only after a clean
// end (the Meshup-Live-End trailer), else ErrLiveCut.
type plainLive struct {
	resp *http.Response
}

func (p *plainLive) Read(b []byte) (int, error) {
	n, err := p.resp.Body.Read(b)
	switch {
	case err == io.EOF && p.resp.Trailer.Get("Meshup-Live-End") != "ok":
		err = ErrLiveCut
	case err != nil && err != io.EOF:
		err = fmt.Errorf("%w: %v", ErrLiveCut, err)
	}
	return n, err
}
