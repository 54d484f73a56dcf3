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

	"github.com/meshup/meshup/proto"
)

// Download is an open response for an item's bytes from Start on.
type Download struct {
	Body  io.ReadCloser // the bytes; a short body ends in io.ErrUnexpectedEOF
	Start int64         // offset of Body's first byte in the item
	Size  int64         // size of the whole item
	Name  string        // from Content-Disposition, may be empty
	MIME  string
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

// Open requests an item's bytes from off on, following the rendezvous's
// redirect to an exit relay. For an end-to-end encrypted item these are
// ciphertext bytes, as any HTTP client gets them; DownloadFile and
// DownloadTo decrypt, Inspect tells the plaintext name, type and size.
func Open(ctx context.Context, hc *http.Client, itemURL string, off int64) (*Download, error) {
	return open(ctx, hc, http.MethodGet, itemURL, off)
}

// Stat returns an item's size, name and type with a HEAD request; its Body
// is empty.
func Stat(ctx context.Context, hc *http.Client, itemURL string) (*Download, error) {
	return open(ctx, hc, http.MethodHead, itemURL, 0)
}

func open(ctx context.Context, hc *http.Client, method, itemURL string, off int64) (*Download, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, method, itemURL, nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: get item: %w", err)
	}
	d := &Download{Body: resp.Body, MIME: resp.Header.Get("Content-Type")}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil && params["filename"] != "" {
		d.Name = path.Base(params["filename"])
	}
	switch resp.StatusCode {
	case http.StatusOK:
		d.Size = resp.ContentLength
	case http.StatusPartialContent:
		var end int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &d.Start, &end, &d.Size); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("client: bad Content-Range %q", resp.Header.Get("Content-Range"))
		}
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		var size int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes */%d", &size); err == nil && size == off {
			return nil, errComplete
		}
		return nil, fmt.Errorf("client: get item: %s", resp.Status)
	default:
		defer resp.Body.Close()
		var e struct {
			Status proto.Status `json:"status"`
			Error  string       `json:"error"`
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("client: get item: %s: %w", resp.Status, &proto.Error{Status: e.Status, Msg: e.Error})
		}
		return nil, fmt.Errorf("client: get item: %s", resp.Status)
	}
	return d, nil
}

// FileOptions configures DownloadFile.
type FileOptions struct {
	HTTPClient *http.Client
	// OnProgress, if set, is called with bytes on disk and the item size
	// as the download goes.
	OnProgress func(done, size int64)
	// OnStart, if set, is called once the response is open, before any
	// byte is written.
	OnStart func(d *Download)
	// OnRetry, if set, is called when a chunk of an encrypted item failed
	// its integrity check (or the body ended early) and the rest is
	// fetched through another relay; err names the chunk and both relays.
	OnRetry func(err error)
	// Logger receives the download's warnings. Defaults to discarding.
	Logger *slog.Logger
}

// DownloadFile downloads an item to the file at path. If the file already
// holds a prefix of the item, only the rest is requested (a Range request).
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
		log := opt.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		return decryptTo(ctx, opt.HTTPClient, info, 0, pw, opt.OnStart, opt.OnRetry, log)
	}
	d, err := Open(ctx, opt.HTTPClient, l.url, 0)
	if err != nil {
		return 0, err
	}
	defer d.Body.Close()
	pw.size = d.Size
	if opt.OnStart != nil {
		opt.OnStart(d)
	}
	n, err := io.CopyBuffer(pw, d.Body, make([]byte, 256<<10))
	if err != nil {
		return n, fmt.Errorf("client: download cut short at byte %d of %d: %w", n, d.Size, err)
	}
	if n != d.Size {
		return n, fmt.Errorf("client: download ended at byte %d of %d", n, d.Size)
	}
	return n, nil
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
	d, err := Open(ctx, opt.HTTPClient, itemURL, have)
	if errors.Is(err, errComplete) {
		if opt.OnProgress != nil {
			opt.OnProgress(have, have)
		}
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer d.Body.Close()
	if d.Start != have { // the server ignored the Range: start over
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("client: %w", err)
		}
		if _, err := f.Seek(d.Start, io.SeekStart); err != nil {
			return 0, fmt.Errorf("client: %w", err)
		}
	}
	if opt.OnStart != nil {
		opt.OnStart(d)
	}
	pw := &progressWriter{w: f, done: d.Start, size: d.Size, fn: opt.OnProgress}
	n, err := io.CopyBuffer(pw, d.Body, make([]byte, 256<<10))
	if err != nil {
		return n, fmt.Errorf("client: download cut short at byte %d of %d: %w", d.Start+n, d.Size, err)
	}
	if d.Start+n != d.Size {
		return n, fmt.Errorf("client: download ended at byte %d of %d", d.Start+n, d.Size)
	}
	return n, nil
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

// FormatBytes formats n bytes for people: "1.5 GiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
