package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/internal/units"
	"github.com/meshup/meshup/proto"
)

// Download is an open response for an item's bytes from Start on.
type Download struct {
	Body  io.ReadCloser // the bytes; a short body ends in io.ErrUnexpectedEOF
	Start int64         // offset of Body's first byte in the item
	Size  int64         // size of the whole item
	Name  string        // from Content-Disposition, may be empty
	MIME  string
	// Relay is the exit relay that serves Body, from its Meshup-Relay
	// header; empty when the server did not say.
	Relay string
	// ETag is the response's validator, empty when none.
	ETag string
}

// ItemURL turns a share link (.../i/ID) or a download URL
// (.../v1/items/ID) into the download URL, with via pinning the exit relay
// when set.
func ItemURL(raw, via string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("client: %q is not an http(s) URL", raw)
	}
	dir, last := path.Split(u.Path)
	if _, err := proto.ParseItemID(last); err != nil {
		return "", fmt.Errorf("client: %q does not end in an item id", raw)
	}
	if strings.HasSuffix(dir, "/i/") {
		u.Path = strings.TrimSuffix(dir, "i/") + "v1/items/" + last
	}
	if via != "" {
		q := u.Query()
		q.Set("via", via)
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// errComplete means a resumed download already has every byte.
var errComplete = errors.New("client: already complete")

// statusError is an HTTP refusal of an item request.
type statusError struct {
	code       int
	relay      string        // the relay that answered, from Meshup-Relay; "" for the rendezvous
	retryAfter time.Duration // from Retry-After, 0 when none
	err        error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// defaultHTTP is the client used where a caller passes none, with a
// transport of the library's own (httpapi.NewTransport says why).
var defaultHTTP = &http.Client{Transport: httpapi.NewTransport()}

// orDefault returns hc, or defaultHTTP when hc is nil.
func orDefault(hc *http.Client) *http.Client {
	if hc == nil {
		return defaultHTTP
	}
	return hc
}

// Open requests an item's bytes from off on, following the rendezvous's
// redirect to an exit relay. For an end-to-end encrypted item these are
// ciphertext bytes, as any HTTP client gets them; DownloadFile and
// DownloadTo decrypt, Inspect tells the plaintext name, type and size.
func Open(ctx context.Context, hc *http.Client, itemURL string, off int64) (*Download, error) {
	return open(ctx, hc, http.MethodGet, itemURL, off, "")
}

// Stat returns an item's size, name and type with a HEAD request; its Body
// is empty.
func Stat(ctx context.Context, hc *http.Client, itemURL string) (*Download, error) {
	return open(ctx, hc, http.MethodHead, itemURL, 0, "")
}

// open requests the bytes from off on. With ifRange set (a validator, the
// ETag of an earlier response), the Range applies only while the item
// still has that validator (RFC 9110 13.1.5): otherwise the answer is the
// whole item (200, Start 0).
func open(ctx context.Context, hc *http.Client, method, itemURL string, off int64, ifRange string) (*Download, error) {
	hc = orDefault(hc)
	req, err := http.NewRequestWithContext(ctx, method, itemURL, nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: get item: %w", err)
	}
	d := &Download{Body: resp.Body, MIME: resp.Header.Get("Content-Type"),
		Relay: resp.Header.Get("Meshup-Relay"), ETag: resp.Header.Get("ETag")}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil && params["filename"] != "" {
		d.Name = path.Base(params["filename"])
	}
	switch resp.StatusCode {
	case http.StatusOK:
		d.Size = resp.ContentLength
		if method == http.MethodGet && d.Size >= 0 {
			d.Body = &exactBody{ReadCloser: resp.Body, left: d.Size, relay: d.Relay}
		}
	case http.StatusPartialContent:
		var end int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &d.Start, &end, &d.Size); err != nil || d.Start < 0 || end < d.Start || end >= d.Size {
			resp.Body.Close()
			return nil, fmt.Errorf("client: bad Content-Range %q", resp.Header.Get("Content-Range"))
		}
		if method == http.MethodGet {
			// A chunked body has no Content-Length for the transport to
			// hold it to: hold it to its Content-Range.
			d.Body = &exactBody{ReadCloser: resp.Body, left: end - d.Start + 1, relay: d.Relay}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		var size int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes */%d", &size); err == nil && size == off {
			return nil, errComplete
		} else if err == nil && off > size {
			return nil, &statusError{code: resp.StatusCode, relay: d.Relay, err: fmt.Errorf("client: %w: asked for bytes from %d, the item has %d", ErrLongerThanItem, off, size)}
		}
		return nil, &statusError{code: resp.StatusCode, relay: d.Relay, err: fmt.Errorf("client: get item: %s", resp.Status)}
	default:
		defer resp.Body.Close()
		se := &statusError{code: resp.StatusCode, relay: d.Relay, err: fmt.Errorf("client: get item: %s", resp.Status)}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			se.retryAfter = time.Duration(secs) * time.Second
		}
		var e struct {
			Status proto.Status `json:"status"`
			Error  string       `json:"error"`
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			se.err = fmt.Errorf("client: get item: %s: %w", resp.Status, &proto.Error{Status: e.Status, Msg: e.Error})
		}
		return nil, se
	}
	return d, nil
}

// ErrLongerThanItem means a file to resume holds more bytes than the item.
var ErrLongerThanItem = errors.New("the file is longer than the item")

// ErrBodyTooLong means a response carried more bytes than its
// Content-Range or Content-Length announced: the relay is broken or lies.
// No byte past the announced end is written.
var ErrBodyTooLong = errors.New("client: the response carries more bytes than it announced")

// exactBody holds a response body to its announced length: it never
// returns a byte past it, and fails with ErrBodyTooLong when the body goes
// on.
type exactBody struct {
	io.ReadCloser
	left  int64 // bytes announced and not read yet
	relay string
}

func (b *exactBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("%w (relay %s)", ErrBodyTooLong, orUnknown(b.relay))
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// FileOptions configures DownloadFile.
type FileOptions struct {
	HTTPClient *http.Client
	// IfRange, when set, is the validator (ETag) the bytes already in the
	// file were of: a resumed download asks for the rest with If-Range,
	// so that a server whose item changed sends it whole and the file is
	// started over instead of being completed with other bytes. Empty: the
	// file is resumed without a validator (the caller vouches for it).
	IfRange string
	// OnProgress, if set, is called with bytes on disk and the item size
	// as the download goes.
	OnProgress func(done, size int64)
	// OnStart, if set, is called once the response is open, before any
	// byte is written.
	OnStart func(d *Download)
	// OnRetry, if set, is called when the download is interrupted and
	// goes on: the exit relay failed (its body ended early, its
	// connection broke, it refused) and the rest is asked for through
	// another, or a chunk of an encrypted item failed its integrity
	// check and is fetched through another relay; err says what failed,
	// where, and what happens next.
	OnRetry func(err error)
	// RetryWait bounds how long an interrupted download keeps trying,
	// with backoff, while no byte arrives; a byte written starts the wait
	// anew. Defaults to DefaultRetryWait (2 minutes); negative: no
	// waiting, only one immediate resume after each failure that came
	// after some progress.
	RetryWait time.Duration
	// StallTimeout ends a response of the exit relay that delivers no
	// byte for this long, and resumes through another exit (as for an
	// exit that failed): a machine that died without closing its
	// connections, a frozen relay. Defaults to DefaultStallTimeout (1
	// minute); negative: never.
	StallTimeout time.Duration
	// Logger receives the download's warnings. Defaults to discarding.
	Logger *slog.Logger

	validator string // IfRange, when the file holds bytes (set by the download)
}

// DownloadFile downloads an item to the file at path. If the file already
// holds a prefix of the item, only the rest is requested (a Range request;
// with opt.IfRange, one that holds only while the item has that validator,
// else the file is started over). No byte past a response's announced
// length is written (ErrBodyTooLong, and the rest comes from another
// relay).
//
// An end-to-end encrypted item is decrypted with the key in itemURL's
// fragment (#k=...): the file only ever receives authenticated plaintext;
// a resumed download continues at the chunk boundary before the file's
// end; a chunk that fails its integrity check is fetched again through
// another relay when there is one. Without the key it fails with ErrNoKey,
// with a wrong one with ErrWrongKey or an integrity error naming chunk 0,
// and writes nothing. The returned count is of plaintext bytes written.
func DownloadFile(ctx context.Context, itemURL, file string, opt FileOptions) (written int64, err error) {
	l, err := parseLink(itemURL)
	if err != nil {
		return 0, err
	}
	info, err := inspect(ctx, opt.HTTPClient, l)
	if errors.Is(err, errNoDescription) && !l.has {
		// No description (a relay's URL, say) and no key: fetch the
		// bytes as they are, as before encryption existed.
		return downloadPlain(ctx, l.url, file, opt)
	}
	if err != nil {
		return 0, err
	}
	if info.Encrypted {
		return downloadEncrypted(ctx, info, file, opt)
	}
	return downloadPlain(ctx, l.url, file, opt)
}

// DownloadTo writes a whole item to w: decrypted, as DownloadFile does,
// when it is encrypted. It returns the bytes written.
func DownloadTo(ctx context.Context, itemURL string, w io.Writer, opt FileOptions) (int64, error) {
	l, err := parseLink(itemURL)
	if err != nil {
		return 0, err
	}
	info, err := inspect(ctx, opt.HTTPClient, l)
	if errors.Is(err, errNoDescription) && !l.has {
		info, err = &ItemInfo{}, nil // fetch the bytes as they are
	}
	if err != nil {
		return 0, err
	}
	pw := &progressWriter{w: w, size: info.Size, fn: opt.OnProgress}
	if info.Encrypted {
		return decryptTo(ctx, info, 0, pw, opt)
	}
	f := newFetcher(l.url, true, opt)
	d, err := f.open(ctx, 0)
	if err != nil {
		return 0, err
	}
	pw.size = d.Size
	if opt.OnStart != nil {
		opt.OnStart(d)
	}
	return f.copyPlain(ctx, d, pw)
}

// downloadPlain is DownloadFile for a plaintext item.
func downloadPlain(ctx context.Context, itemURL, file string, opt FileOptions) (written int64, err error) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("client: %w", cerr)
		}
	}()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	ft := newFetcher(itemURL, true, opt)
	if have > 0 {
		ft.validator = opt.IfRange
	}
	d, err := ft.open(ctx, have)
	if errors.Is(err, errComplete) {
		if opt.OnProgress != nil {
			opt.OnProgress(have, have)
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if d.Start != have { // the server ignored the Range: start over
		if err := f.Truncate(0); err != nil {
			d.Body.Close()
			return 0, fmt.Errorf("client: %w", err)
		}
		if _, err := f.Seek(d.Start, io.SeekStart); err != nil {
			d.Body.Close()
			return 0, fmt.Errorf("client: %w", err)
		}
	}
	if opt.OnStart != nil {
		opt.OnStart(d)
	}
	pw := &progressWriter{w: f, done: d.Start, size: d.Size, fn: opt.OnProgress}
	return ft.copyPlain(ctx, d, pw)
}

type progressWriter struct {
	w          io.Writer
	done, size int64
	fn         func(done, size int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.fn != nil {
		p.fn(p.done, p.size)
	}
	return n, err
}

// FormatBytes formats n bytes for people: "1.5 GiB" (internal/units,
// the one formatter of the module).
func FormatBytes(n int64) string { return units.Format(n) }

// CheckRendezvous fetches GET /v1/info from the rendezvous at base. A
// server that answers, but not as a meshup rendezvous does (a web page,
// another API), gives a *NotMeshupError: a permanent error, not worth
// retrying. Other errors (no answer, a 5xx) may pass.
func CheckRendezvous(ctx context.Context, hc *http.Client, base string) (*proto.Info, error) {
	hc = orDefault(hc)
	u := strings.TrimSuffix(base, "/") + "/v1/info"
	var info proto.Info
	if err := getJSON(ctx, hc, u, &info); err != nil {
		return nil, err
	}
	if info.Version == 0 || info.PeerID == "" || info.TokenKey == "" {
		return nil, &NotMeshupError{URL: u, Detail: "GET /v1/info answered JSON that is not a rendezvous's description (no version, peer_id, token_key)"}
	}
	return &info, nil
}
