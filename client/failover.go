package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/meshup/meshup/proto"
)

// This file resumes a download whose exit relay failed (issue 10): its
// body ended early, its connection was reset, or it refused the resume
// (a 5xx, a refused connection). The download goes on with a Range
// request from the first byte not yet written (for an encrypted item, from
// the chunk boundary before it) through the rendezvous, with
// ?avoid=ID1,ID2 naming the exits that failed, so that the rendezvous,
// which knows which relays are live, sends it to another. Every relay
// names itself in the Meshup-Relay header of its item responses.
//
// Transient failures are retried, with exponential backoff and jitter (and
// at least the Retry-After the rendezvous asks for), until RetryWait has
// passed without a byte written; the first resume after bytes arrived
// goes at once. Permanent refusals (no such item, a wrong key, a Range the
// item cannot satisfy) end the download at once.
//
// No wrong byte is written: a resumed response must start where it was
// asked to and have the size and validator (ETag) of the first one; a
// plaintext item that changed under the download ends it with
// ErrItemChanged. (An encrypted item needs no validator: every chunk is
// authenticated against the item's key and index.)

// DefaultRetryWait is FileOptions.RetryWait's default: how long a download
// waits, with no byte arriving, for a relay to carry it again.
const DefaultRetryWait = 2 * time.Minute

// DefaultStallTimeout is FileOptions.StallTimeout's default. It is longer
// than a relay's own wait for a publisher that went quiet (the relay's
// --need-timeout, 30 s by default, during which the reader sees a pause),
// so that only an exit that is itself gone (a machine that died without
// closing its connections, a frozen process) is left.
const DefaultStallTimeout = time.Minute

// errStalled ends a response that delivered nothing for StallTimeout.
var errStalled = errors.New("client: no byte arrived for the stall timeout")

// ErrItemChanged means a resumed response was for other bytes than the
// download started with: another size, another validator (ETag), or
// another starting byte than asked for.
var ErrItemChanged = errors.New("client: the item changed during the download")

// transientError is a failure worth retrying: the way to an exit relay or
// the exit itself failed, or the rendezvous asked to come back later.
type transientError struct {
	relay      string        // the exit that failed; "" when unknown or the rendezvous answered
	retryAfter time.Duration // the server's Retry-After, 0 when none
	err        error
}

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// fetcher opens an item's bytes from a given offset through the
// rendezvous, steering around exit relays that failed. It is used by one
// download, from one goroutine.
type fetcher struct {
	hc    *http.Client
	url   string // the download URL, without via and avoid
	via   string // the exit pinned by the user, or for a retry after an integrity error
	avoid []string
	plain bool   // check the responses' start, size and validator here
	size  int64  // of the item, from the first response; -1 before
	etag  string // of the first response
	// validator is sent as If-Range with every request from an offset
	// past 0: the ETag of the first response, or the caller's
	// (FileOptions.IfRange) for the bytes it already holds.
	validator string
	opened    bool // a response was taken
	retryWait time.Duration
	stall     time.Duration // <= 0: no watchdog
	bo        *backoff.ExponentialBackOff
	// progressAt is when the last byte was written; moved is whether one
	// was written since the last failure.
	progressAt time.Time
	moved      bool
	wrong      int // wrong answers (ErrItemChanged) so far
	onRetry    func(error)
	log        *slog.Logger
}

func newFetcher(itemURL string, plain bool, opt FileOptions) *fetcher {
	f := &fetcher{hc: opt.HTTPClient, plain: plain, size: -1, retryWait: opt.RetryWait, stall: opt.StallTimeout,
		bo: backoff.NewExponentialBackOff(), progressAt: time.Now(), moved: true,
		onRetry: opt.OnRetry, log: opt.Logger}
	f.hc = orDefault(f.hc)
	if f.retryWait == 0 {
		f.retryWait = DefaultRetryWait
	}
	if f.stall == 0 {
		f.stall = DefaultStallTimeout
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	// A resume waits at most 10 s between tries: a relay that comes back
	// is found soon after.
	f.bo.MaxInterval = 10 * time.Second
	f.url = itemURL
	if u, err := url.Parse(itemURL); err == nil {
		q := u.Query()
		f.via = q.Get("via")
		q.Del("via")
		q.Del("avoid")
		u.RawQuery = q.Encode()
		f.url = u.String()
	}
	return f
}

// requestURL is the download URL with the pinned exit, or the exits to
// avoid.
func (f *fetcher) requestURL() string {
	if f.via == "" && len(f.avoid) == 0 {
		return f.url
	}
	u, err := url.Parse(f.url)
	if err != nil {
		return f.url
	}
	q := u.Query()
	if f.via != "" {
		q.Set("via", f.via)
	} else {
		q.Set("avoid", strings.Join(f.avoid, ","))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// avoidExit adds relay to the exits the rendezvous is asked to avoid,
// keeping the proto.MaxAvoid most recent.
func (f *fetcher) avoidExit(relay string) {
	if relay == "" {
		return
	}
	if i := slices.Index(f.avoid, relay); i >= 0 {
		f.avoid = slices.Delete(f.avoid, i, i+1)
	}
	f.avoid = append(f.avoid, relay)
	if len(f.avoid) > proto.MaxAvoid {
		f.avoid = f.avoid[len(f.avoid)-proto.MaxAvoid:]
	}
}

// progress records that bytes were written.
func (f *fetcher) progress() {
	f.progressAt = time.Now()
	f.moved = true
	f.bo.Reset()
}

// open opens the item's bytes from off, retrying transient failures. It
// returns errComplete when the item has no byte from off, and permanent
// errors as they are.
func (f *fetcher) open(ctx context.Context, off int64) (*Download, error) {
	for {
		d, err := f.try(ctx, off)
		if err == nil {
			if err = f.check(d, off); err == nil {
				return d, nil
			}
			d.Body.Close()
			// Either the item changed, or this exit lies: a second
			// exit telling the same settles it.
			if f.wrong++; f.wrong > 1 || d.Relay == "" {
				return nil, err
			}
			f.avoidExit(d.Relay)
			f.via = ""
			f.report(fmt.Errorf("%w; asking another relay", err))
			continue
		}
		var te *transientError
		if !errors.As(err, &te) || ctx.Err() != nil {
			return nil, err
		}
		if te.relay != "" {
			f.avoidExit(te.relay)
			f.via = ""
		}
		if err := f.pause(ctx, err, te.retryAfter); err != nil {
			return nil, err
		}
	}
}

// check refuses a response that does not continue the download.
func (f *fetcher) check(d *Download, off int64) error {
	if !f.opened {
		// The first response sets the validator of every resume: the
		// caller's, when the server kept it, or the item's new one
		// (the server then sent it whole, and the caller starts over).
		f.opened, f.validator = true, d.ETag
	}
	if !f.plain {
		return nil // decryptTo checks sizes and chunk boundaries
	}
	if f.size < 0 {
		f.size, f.etag = d.Size, d.ETag
		return nil
	}
	switch {
	case d.Size != f.size:
		return fmt.Errorf("%w: relay %s serves %d bytes, the download started with %d", ErrItemChanged, orUnknown(d.Relay), d.Size, f.size)
	case d.ETag != f.etag:
		return fmt.Errorf("%w: relay %s serves version %s, the download started with %s", ErrItemChanged, orUnknown(d.Relay), d.ETag, f.etag)
	case d.Start != off:
		return fmt.Errorf("%w: relay %s answered from byte %d, not %d", ErrItemChanged, orUnknown(d.Relay), d.Start, off)
	}
	return nil
}

// try makes one request for the bytes from off.
func (f *fetcher) try(ctx context.Context, off int64) (*Download, error) {
	var target string // the exit the rendezvous redirected to
	hc := *f.hc
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if t := req.URL.Query().Get("t"); t != "" {
			target = tokenRelay(t)
		}
		if f.hc.CheckRedirect != nil {
			return f.hc.CheckRedirect(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	// The request's own context: the stall watchdog ends it.
	rctx, cancel := context.WithCancelCause(ctx)
	ifRange := ""
	if off > 0 {
		ifRange = f.validator
	}
	d, err := open(rctx, &hc, http.MethodGet, f.requestURL(), off, ifRange)
	if err != nil {
		cancel(nil)
		return nil, classify(ctx, err, target)
	}
	if d.Relay == "" {
		d.Relay = target
	}
	d.Body = watchBody(rctx, d.Body, f.stall, cancel)
	return d, nil
}

// classify marks the failures of a request worth retrying; target is the
// exit the rendezvous redirected to, if any.
func classify(ctx context.Context, err error, target string) error {
	var se *statusError
	switch {
	case errors.Is(err, errComplete):
		return err
	case errors.As(err, &se):
		if se.code >= 500 || se.code == http.StatusTooManyRequests {
			return &transientError{relay: se.relay, retryAfter: se.retryAfter, err: err}
		}
		return err
	case ctx.Err() != nil:
		return err
	default: // no answer: the exit (when redirected) or the rendezvous is unreachable
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its URL holds a read token
		}
		if target != "" {
			return &transientError{relay: target, err: fmt.Errorf("client: exit relay %s does not answer: %w", target, err)}
		}
		return &transientError{err: fmt.Errorf("client: the rendezvous does not answer: %w", err)}
	}
}

// failed records that the exit relay serving the download failed at byte
// at, and returns nil when the download is to resume (after a pause when
// no byte arrived since the last failure), or the error that ends it.
func (f *fetcher) failed(ctx context.Context, relay string, at int64, cause error) error {
	if ctx.Err() != nil {
		return cause
	}
	err := fmt.Errorf("client: exit relay %s failed at byte %d: %w", orUnknown(relay), at, cause)
	f.avoidExit(relay)
	f.via = ""
	if f.moved {
		f.moved = false
		f.report(fmt.Errorf("%w; resuming through another relay", err))
		return nil
	}
	return f.pause(ctx, err, 0)
}

// pause waits before the next try: the backoff's next interval, at least
// retryAfter, never past RetryWait without progress. It returns cause,
// marked as the end, when the wait is used up.
func (f *fetcher) pause(ctx context.Context, cause error, retryAfter time.Duration) error {
	left := f.retryWait - time.Since(f.progressAt)
	if left <= 0 {
		if f.retryWait < 0 {
			return cause
		}
		return fmt.Errorf("%w (nothing arrived for %s: giving up)", cause, f.retryWait)
	}
	d := min(max(f.bo.NextBackOff(), retryAfter), left)
	f.report(fmt.Errorf("%w; trying again in %s", cause, d.Round(100*time.Millisecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("client: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

func (f *fetcher) report(err error) {
	f.log.Warn("download interrupted", "err", err)
	if f.onRetry != nil {
		f.onRetry(err)
	}
}

// watchedBody ends its request (through cancel) when no byte arrives
// for stall; Read then fails with errStalled.
type watchedBody struct {
	io.ReadCloser
	stall  time.Duration
	timer  *time.Timer
	ctx    context.Context // the request's
	cancel context.CancelCauseFunc
}

func watchBody(ctx context.Context, b io.ReadCloser, stall time.Duration, cancel context.CancelCauseFunc) io.ReadCloser {
	w := &watchedBody{ReadCloser: b, stall: stall, ctx: ctx, cancel: cancel}
	if stall > 0 {
		w.timer = time.AfterFunc(stall, func() { cancel(errStalled) })
	}
	return w
}

func (w *watchedBody) Read(p []byte) (int, error) {
	n, err := w.ReadCloser.Read(p)
	if n > 0 && w.timer != nil {
		w.timer.Reset(w.stall)
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(w.ctx), errStalled) {
		err = fmt.Errorf("%w (%s)", errStalled, w.stall)
	}
	return n, err
}

func (w *watchedBody) Close() error {
	if w.timer != nil {
		w.timer.Stop()
	}
	err := w.ReadCloser.Close()
	w.cancel(nil)
	return err
}

// progressOf returns a writer that records f's progress as w takes bytes,
// and keeps w's error apart from the reader's.
func (f *fetcher) progressOf(w io.Writer) *fetchWriter { return &fetchWriter{w: w, f: f} }

type fetchWriter struct {
	w   io.Writer
	f   *fetcher
	err error // of w
}

func (fw *fetchWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	if n > 0 {
		fw.f.progress()
	}
	if err != nil {
		fw.err = err
	}
	return n, err
}

// copyPlain writes the bytes of d's body to w and, when its exit fails
// before the end of the item, the rest from other exits. It closes d's
// body and returns the bytes written.
func (f *fetcher) copyPlain(ctx context.Context, d *Download, w io.Writer) (int64, error) {
	buf := make([]byte, 256<<10)
	pos, size := d.Start, d.Size
	var n int64
	for {
		fw := f.progressOf(w)
		m, err := io.CopyBuffer(fw, d.Body, buf)
		d.Body.Close()
		n += m
		pos += m
		switch {
		case fw.err != nil:
			return n, fmt.Errorf("client: write: %w", fw.err)
		case err == nil && pos == size:
			return n, nil
		case err == nil:
			err = io.ErrUnexpectedEOF
		}
		if ctx.Err() != nil {
			return n, fmt.Errorf("client: download cut short at byte %d of %d: %w", pos, size, err)
		}
		if err := f.failed(ctx, d.Relay, pos, err); err != nil {
			return n, err
		}
		d, err = f.open(ctx, pos)
		if errors.Is(err, errComplete) && pos == size {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
