package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/meshup/meshup/proto"
)

// This file is the consumer's side of end-to-end encryption: the key comes
// from the link's fragment, the item's sizes and sealed metadata from GET
// /v1/items/{id}/meta, and the bytes are fetched as ciphertext from a chunk
// boundary and opened chunk by chunk; only authenticated chunks are
// written. A chunk that fails is fetched again through another relay.

// Download errors.
var (
	// ErrNoKey means the item is end-to-end encrypted and the link has no
	// key in its fragment.
	ErrNoKey = errors.New("client: the item is end-to-end encrypted and the link has no key (#k=...); use the full share link")
	// ErrWrongKey means the link's key does not open the item.
	ErrWrongKey = errors.New("client: the key in the link does not open this item")
)

// errStartOver means the bytes already written are of another version of
// the item than the server now serves: a file download starts over.
var errStartOver = errors.New("the bytes so far are of another version")

// errNoDescription means GET /v1/items/{id}/meta failed: the link may
// point at a relay rather than a rendezvous, or the item is unknown.
var errNoDescription = errors.New("client: item description")

// ItemInfo describes an item as a consumer sees it, decrypted.
type ItemInfo struct {
	ID     proto.ItemID
	Online bool
	// Size is the plaintext size; CipherSize the size relays carry.
	Size       int64
	CipherSize int64
	Name       string // may be empty
	MIME       string
	Modified   time.Time // zero when unknown
	Encrypted  bool

	link link
	item *proto.E2EItem // for an encrypted item
}

// link is a parsed item link.
type link struct {
	base string // rendezvous base URL: everything before /v1/items/ID
	url  string // download URL, without fragment, with via if any
	id   proto.ItemID
	key  proto.E2EKey
	has  bool // key found in the fragment
}

func parseLink(raw string) (link, error) {
	u, err := ItemURL(raw, "")
	if err != nil {
		return link{}, err
	}
	pu, _ := url.Parse(u) // ItemURL parsed it already
	key, has, err := proto.ParseE2EFragment(pu.Fragment)
	if err != nil {
		return link{}, fmt.Errorf("client: %w", err)
	}
	pu.Fragment, pu.RawFragment = "", ""
	dir, last := path.Split(pu.Path)
	id, _ := proto.ParseItemID(last)
	base := *pu
	base.Path, base.RawPath, base.RawQuery = strings.TrimSuffix(dir, "v1/items/"), "", ""
	return link{
		base: strings.TrimSuffix(base.String(), "/"), url: pu.String(), id: id,
		key: key, has: has,
	}, nil
}

// itemMeta is GET /v1/items/{id}/meta.
type itemMeta struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	MIME      string `json:"mime"`
	Size      int64  `json:"size"`
	Online    bool   `json:"online"`
	Encrypted bool   `json:"encrypted"`
	Enc       string `json:"enc"`
	Meta      string `json:"meta"`
}

// Inspect fetches an item's description from the rendezvous and, when it
// is encrypted, opens its sealed metadata with the key in the link's
// fragment. It reports ErrNoKey or ErrWrongKey when it cannot.
func Inspect(ctx context.Context, hc *http.Client, itemLink string) (*ItemInfo, error) {
	l, err := parseLink(itemLink)
	if err != nil {
		return nil, err
	}
	return inspect(ctx, hc, l)
}

func inspect(ctx context.Context, hc *http.Client, l link) (*ItemInfo, error) {
	hc = orDefault(hc)
	var m itemMeta
	if err := getJSON(ctx, hc, l.base+"/v1/items/"+l.id.String()+"/meta", &m); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDescription, err)
	}
	info := &ItemInfo{ID: l.id, Online: m.Online, Size: m.Size, CipherSize: m.Size, Name: m.Name, MIME: m.MIME, link: l}
	if !m.Encrypted {
		return info, nil
	}
	info.Encrypted = true
	if m.Enc != proto.E2EVersion {
		return nil, fmt.Errorf("client: item is encrypted with %q, which this client does not know (it knows %s)", m.Enc, proto.E2EVersion)
	}
	if !l.has {
		return nil, ErrNoKey
	}
	p, err := proto.E2EPlainSize(m.Size)
	if err != nil {
		return nil, fmt.Errorf("client: item description: %w", err)
	}
	info.Size = p
	info.Name, info.MIME = "", "application/octet-stream"
	info.item = proto.NewE2EItem(l.key, l.id)
	if m.Meta != "" {
		md, err := info.item.OpenMeta(m.Meta)
		if err != nil {
			return nil, fmt.Errorf("%w (its sealed name and type do not open)", ErrWrongKey)
		}
		info.Name = md.Name
		if md.Modified != 0 {
			info.Modified = time.Unix(md.Modified, 0)
		}
		if md.Type != "" {
			info.MIME = md.Type
		}
	}
	return info, nil
}

func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Status proto.Status `json:"status"`
			Error  string       `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %w", resp.Status, &proto.Error{Status: e.Status, Msg: e.Error})
		}
		if resp.StatusCode < 500 {
			// meshup answers every API error with a JSON body; a
			// proxy's 5xx page may stand in front of one.
			return &NotMeshupError{URL: u, Detail: answered(resp, body)}
		}
		return fmt.Errorf("%s", resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &NotMeshupError{URL: u, Detail: answered(resp, body)}
	}
	return nil
}

// NotMeshupError means a URL answered, but not as meshup does: a web page,
// another service. Retrying does not help.
type NotMeshupError struct {
	URL    string // the request's
	Detail string // what answered, for people
}

func (e *NotMeshupError) Error() string {
	u, err := url.Parse(e.URL)
	base := e.URL
	if err == nil {
		u.Path, u.RawPath, u.RawQuery, u.Fragment = "", "", "", ""
		base = u.String()
	}
	return fmt.Sprintf("%s is not a meshup rendezvous: %s", base, e.Detail)
}

// answered describes a response that is not meshup's: status, type and
// the start of its body, on one line.
func answered(resp *http.Response, body []byte) string {
	snippet := strings.Join(strings.Fields(string(body[:min(len(body), 80)])), " ")
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "no Content-Type"
	}
	return fmt.Sprintf("GET %s answered %s (%s): %q", resp.Request.URL.Path, resp.Status, ct, snippet)
}

// decryptTo fetches the plaintext of an encrypted item from plaintext
// offset from to its end and writes it to w, one authenticated chunk per
// Write. When the exit relay fails (the body ends early, the connection
// breaks) it resumes at the chunk boundary through another exit, as the
// fetcher does for any download. When a chunk fails to authenticate, it
// reports the failure through opt.OnRetry and fetches the rest through
// another live relay, as long as one is left; otherwise it returns the
// *proto.E2EChunkError, wrapped with the relay. It returns the plaintext
// bytes written.
func decryptTo(ctx context.Context, info *ItemInfo, from int64, w io.Writer, opt FileOptions) (int64, error) {
	l := info.link
	f := newFetcher(l.url, false, opt)
	f.validator = opt.validator
	hc := f.hc
	tried := map[string]bool{}
	var written int64
	started := false
	for {
		chunk := from / proto.E2EChunkSize
		off := chunk * proto.E2ESealedChunkSize
		sent := f.validator // the If-Range of this request
		d, err := f.open(ctx, off)
		if errors.Is(err, errComplete) && off == info.CipherSize {
			return written, nil
		}
		if err != nil {
			return written, err
		}
		relay := d.Relay
		var fault error // the relay's, to be retried elsewhere
		failed := uint64(chunk)
		switch {
		case d.Size != info.CipherSize:
			d.Body.Close()
			fault = fmt.Errorf("client: relay %s serves %d bytes, the rendezvous says %d", orUnknown(relay), d.Size, info.CipherSize)
		case d.Start%proto.E2ESealedChunkSize != 0 || d.Start > off:
			d.Body.Close()
			fault = fmt.Errorf("client: relay %s answered from byte %d, not at a chunk boundary", orUnknown(relay), d.Start)
		case d.Start < off && sent != "" && d.ETag != sent:
			// If-Range did not match: another version of the item, whose
			// bytes must not continue the ones written.
			d.Body.Close()
			return written, fmt.Errorf("%w: %w (%s): relay %s serves version %s", ErrItemChanged, errStartOver, sent, orUnknown(relay), d.ETag)
		default:
			chunk = d.Start / proto.E2ESealedChunkSize // 0 when the relay ignored the Range
			if !started && opt.OnStart != nil {
				opt.OnStart(&Download{Start: from, Size: info.Size, Name: info.Name, MIME: info.MIME, Relay: relay, ETag: d.ETag})
			}
			started = true
			r, err := info.item.NewReader(d.Body, info.CipherSize, uint64(chunk), info.CipherSize)
			if err != nil {
				d.Body.Close()
				return written, fmt.Errorf("client: %w", err)
			}
			sw := &skipWriter{w: f.progressOf(w), skip: from - chunk*proto.E2EChunkSize}
			_, err = r.WriteTo(sw)
			d.Body.Close()
			written += sw.n
			from += sw.n
			if err == nil {
				return written, nil
			}
			if sw.err == nil && from == info.Size && errors.Is(err, ErrBodyTooLong) {
				// Every chunk, the last one included, authenticated:
				// only junk past the announced end failed.
				f.report(fmt.Errorf("client: exit relay %s: %w; every byte arrived, the rest is ignored", orUnknown(relay), err))
				return written, nil
			}
			if sw.err != nil {
				return written, fmt.Errorf("client: write: %w", sw.err)
			}
			var ce *proto.E2EChunkError
			if !errors.As(err, &ce) || errors.Is(ce, proto.ErrE2ETruncated) {
				// The body ended early or broke: the exit failed (or
				// cut it short). Resume at the chunk boundary.
				if ctx.Err() != nil {
					return written, fmt.Errorf("client: download cut short at byte %d of %d: %w", from, info.Size, err)
				}
				if err := f.failed(ctx, relay, from, err); err != nil {
					return written, err
				}
				continue
			}
			failed = ce.Chunk
			fault = fmt.Errorf("client: integrity error from relay %s: %w", orUnknown(relay), err)
			if ce.Chunk == 0 && errors.Is(ce, proto.ErrE2EIntegrity) {
				fault = fmt.Errorf("%w (a wrong key in the link, or a relay altered it)", fault)
			}
		}
		// Even a relay the user pinned is left: its bytes are wrong.
		tried[relay] = true
		if f.via != "" {
			tried[f.via] = true
		}
		f.avoidExit(relay)
		next := otherRelay(ctx, hc, l.base, tried)
		if next == "" {
			return written, fault
		}
		if opt.OnRetry != nil {
			opt.OnRetry(fmt.Errorf("%w; retrying from chunk %d through relay %s", fault, failed, next))
		}
		f.log.Warn("relay fault; retrying through another relay", "err", fault, "chunk", failed, "relay", next)
		f.via = next
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// tokenRelay returns the audience of a token without checking it.
func tokenRelay(tok string) string {
	body, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return ""
	}
	var c struct {
		Relay string `json:"aud"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Relay
}

// otherRelay returns a live relay from GET /v1/status that is not in
// tried, or "".
func otherRelay(ctx context.Context, hc *http.Client, base string, tried map[string]bool) string {
	var st struct {
		Relays []struct {
			ID    string `json:"id"`
			Alive bool   `json:"alive"`
		} `json:"relays"`
	}
	if err := getJSON(ctx, hc, base+"/v1/status", &st); err != nil {
		return ""
	}
	for _, r := range st.Relays {
		if r.Alive && r.ID != "" && !tried[r.ID] {
			return r.ID
		}
	}
	return ""
}

// skipWriter drops the first skip bytes written to it.
type skipWriter struct {
	w    io.Writer
	skip int64
	n    int64 // bytes passed on
	err  error // the error of w, if any
}

func (s *skipWriter) Write(p []byte) (int, error) {
	total := len(p)
	if s.skip > 0 {
		k := min(s.skip, int64(len(p)))
		s.skip -= k
		p = p[k:]
	}
	if len(p) == 0 {
		return total, nil
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err != nil {
		s.err = err
		return total - len(p) + n, err
	}
	return total, nil
}

// lazyFile creates its file on the first Write, so that a download that
// fails before its first authenticated byte leaves nothing behind.
type lazyFile struct {
	path string
	at   int64
	f    *os.File
}

func (l *lazyFile) Write(p []byte) (int, error) {
	if l.f == nil {
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return 0, err
		}
		if _, err := f.Seek(l.at, io.SeekStart); err != nil {
			f.Close()
			return 0, err
		}
		l.f = f
	}
	return l.f.Write(p)
}

func (l *lazyFile) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

// downloadEncrypted is DownloadFile for an encrypted item.
func downloadEncrypted(ctx context.Context, info *ItemInfo, file string, opt FileOptions) (written int64, err error) {
	var have int64
	switch fi, err := os.Stat(file); {
	case err == nil:
		have = fi.Size()
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("client: %w", err)
	}
	if have > info.Size {
		return 0, fmt.Errorf("client: %s has %d bytes, more than the item's %d; not touching it", file, have, info.Size)
	}
	if have == info.Size && have > 0 {
		if opt.OnProgress != nil {
			opt.OnProgress(have, have)
		}
		return 0, nil
	}
	lf := &lazyFile{path: file, at: have}
	defer func() {
		if cerr := lf.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("client: %w", cerr)
		}
	}()
	pw := &progressWriter{w: lf, done: have, size: info.Size, fn: opt.OnProgress}
	if have > 0 {
		opt.validator = opt.IfRange
	}
	written, err = decryptTo(ctx, info, have, pw, opt)
	if errors.Is(err, errStartOver) && written == 0 && have > 0 {
		// The file's bytes are of another version: start over.
		if opt.OnRetry != nil {
			opt.OnRetry(fmt.Errorf("%w; starting over", err))
		}
		if err := os.Truncate(file, 0); err != nil {
			return 0, fmt.Errorf("client: %w", err)
		}
		lf.at, pw.done, opt.validator = 0, 0, ""
		written, err = decryptTo(ctx, info, 0, pw, opt)
	}
	if err == nil && info.Size == 0 {
		_, err = lf.Write(nil) // the empty item authenticated: create the file
	}
	return written, err
}
