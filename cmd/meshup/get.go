package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/proto"
)

const getUsage = `usage: meshup get [flags] URL

Downloads an item. URL is a share link (.../i/ID) or a download URL
(.../v1/items/ID); flags may come before or after it.

The bytes go to NAME.part, beside a small record NAME.part.meshup of the
item and version they are of; NAME.part is renamed to NAME once every byte
arrived. An interrupted download started again resumes NAME.part with a
Range request that holds only while the item is the same version
(If-Range); a NAME.part of another item is never resumed, and an
existing NAME never overwritten, unless --force starts over.

When the item's sender is offline, get waits for it (--wait). When the
exit relay fails mid-transfer the download resumes through another relay.
An encrypted item is decrypted with the key in the URL's fragment (quote
it: 'https://.../i/ID#k=...'); only authenticated bytes are written.

A live channel's link streams from the live edge until the channel ends:
a sealed channel's 'https://.../l/ID#k=...' (decrypted; a relay that
alters, drops or reorders a record, or a channel cut before its end mark,
is an error), or a plaintext channel's https://.../v1/live/ID. A sealed
channel must reach its live edge: within --live-catch-up of its first
record, a record at most --live-max-lag behind this machine's clock must
arrive, else a relay is replaying or delaying it and get fails.

Flags:
`

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output file, a directory to put the item's name in, or - for stdout (default: the item's name in the current directory)")
	force := fs.Bool("force", false, "replace an existing output file, and start over a partial download (.part) that is not of this item")
	wait := waitFlag(-1)
	fs.Var(&wait, "wait", "how long to wait for an offline sender to come online: a duration (30s, 5m), 0 not to wait, or forever")
	via := fs.String("via", "", "pin the exit relay by its id (diagnosis)")
	stall := fs.Duration("stall-timeout", client.DefaultStallTimeout, "a response of the exit relay that delivers no byte for this long is given up, and the download resumes through another relay; 0 or less: never")
	retryWait := fs.Duration("retry-wait", client.DefaultRetryWait, "when the rendezvous or the exit relay fails, keep trying (with backoff, through other relays) this long while no byte arrives; 0 or less: resume once, at once, then give up")
	progress := fs.String("progress", "auto", "progress bar on stderr: auto (when stderr is a terminal), on, off")
	liveMaxLag := fs.Duration("live-max-lag", proto.LiveDefaultMaxLag, "sealed live channel: how far behind this machine's clock its live edge may be (a relay replaying or delaying it, or the publisher's clock off, fails the read); negative: no check")
	liveCatchUp := fs.Duration("live-catch-up", proto.LiveDefaultCatchUp, "sealed live channel: how long from its first record to wait for a record within --live-max-lag")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), getUsage)
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "want one URL, got %d arguments", len(pos))
	}
	showBar := false
	switch *progress {
	case "on":
		showBar = true
	case "off":
	case "auto":
		if f, ok := stderr.(*os.File); ok {
			showBar = term.IsTerminal(int(f.Fd()))
		}
	default:
		return usageError(fs, "--progress %q: want auto, on or off", *progress)
	}
	if isLiveURL(pos[0]) { // live.go: a live channel streams until it ends
		return runLiveGet(ctx, pos[0], *out, stdout, client.LiveOptions{MaxLag: *liveMaxLag, CatchUp: *liveCatchUp})
	}
	u, err := client.ItemURL(pos[0], *via)
	if err != nil {
		return err
	}
	id := itemIDOf(u)
	opt := client.FileOptions{
		OnRetry:      func(err error) { fmt.Fprintf(stderr, "\r%v\n", explain(err, id)) },
		RetryWait:    *retryWait,
		StallTimeout: *stall,
	}
	if opt.RetryWait <= 0 {
		opt.RetryWait = -1 // FileOptions: no waiting
	}
	if opt.StallTimeout <= 0 {
		opt.StallTimeout = -1 // FileOptions: never
	}

	it, err := describe(ctx, u, time.Duration(wait), *retryWait, showBar, stderr)
	if err != nil {
		return explain(err, id)
	}

	start := time.Now()
	bar := newBar(showBar, stderr)
	opt.OnStart = bar.start
	opt.OnProgress = bar.progress

	if *out == "-" {
		n, err := client.DownloadTo(ctx, u, stdout, opt)
		bar.finish()
		if err != nil {
			return explain(err, id)
		}
		fmt.Fprintf(stderr, "%s to stdout in %s\n", client.FormatBytes(n), time.Since(start).Round(time.Millisecond))
		return nil
	}

	file := *out
	if fi, err := os.Stat(file); file == "" || err == nil && fi.IsDir() {
		file = filepath.Join(file, safeName(it.Name)) // -o DIR: the item's name in DIR
	}
	ifRange, err := preparePart(file, it, *force)
	if err != nil {
		return err
	}
	part, recPath := file+partSuffix, file+recordSuffix
	opt.IfRange = ifRange
	opt.OnStart = func(d *client.Download) {
		switch {
		case d.Start > 0:
			fmt.Fprintf(stderr, "resuming %s at %s of %s\n", part, client.FormatBytes(d.Start), client.FormatBytes(it.Size))
		case ifRange != "":
			fmt.Fprintf(stderr, "the item changed since %s was written: starting over\n", part)
		}
		if d.ETag != ifRange {
			rec := &partRecord{Item: it.ID, Size: it.Size, Encrypted: it.Encrypted, ETag: d.ETag}
			if err := rec.save(recPath); err != nil {
				fmt.Fprintf(stderr, "download record: %v\n", err) // a resume then starts over
			}
		}
		bar.start(d)
	}
	n, err := client.DownloadFile(ctx, u, part, opt)
	bar.finish()
	if err != nil {
		if fi, serr := os.Stat(part); serr == nil && fi.Size() == 0 {
			os.Remove(part) // nothing to resume
			os.Remove(recPath)
		} else if serr == nil {
			fmt.Fprintf(stderr, "kept %s (%s of %s): run the same command again to resume\n", part, client.FormatBytes(fi.Size()), client.FormatBytes(it.Size))
		}
		return explain(err, id)
	}
	// Verify before it takes the name.
	fi, err := os.Stat(part)
	if err == nil && fi.Size() != it.Size {
		err = fmt.Errorf("%s has %d bytes after the download, the item %d; keeping it as it is", part, fi.Size(), it.Size)
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(file); err == nil && !*force {
		return fmt.Errorf("%s appeared during the download; not overwriting it (the bytes are in %s)", file, part)
	}
	if err := os.Rename(part, file); err != nil {
		return err
	}
	os.Remove(recPath)
	el := time.Since(start)
	fmt.Fprintf(stderr, "%s: %s in %s (%s/s)\n", file, client.FormatBytes(n), el.Round(time.Millisecond), client.FormatBytes(int64(float64(n)/max(el.Seconds(), 1e-3))))
	return nil
}

// safeName turns an item's name into a file name in the current directory.
func safeName(name string) string {
	file := filepath.Base(filepath.FromSlash(path.Clean("/" + name)))
	if file == "" || file == "." || file == "/" || file == string(filepath.Separator) || strings.HasPrefix(file, ".") {
		return "download"
	}
	return file
}

// itemIDOf returns the item id at the end of a download URL.
func itemIDOf(itemURL string) string {
	if u, err := url.Parse(itemURL); err == nil {
		return path.Base(u.Path)
	}
	return ""
}

// errOffline means the item's sender is not connected.
var errOffline = errors.New("the sender is offline")

// describe returns what the download of the item at u is of, waiting up
// to wait (negative: for ever) for its sender to come online, and
// retrying a rendezvous that does not answer for up to retryWait. Not
// found, a server that is not meshup and a wrong key fail at once.
func describe(ctx context.Context, u string, wait, retryWait time.Duration, tty bool, stderr io.Writer) (item, error) {
	pu, _ := url.Parse(u)
	if pu != nil && pu.Query().Get("t") != "" {
		// A relay's URL with a read token: no description to ask for,
		// the item's headers tell its size.
		d, err := client.Stat(ctx, nil, u)
		if err != nil {
			return item{}, err
		}
		d.Body.Close()
		id, _ := proto.ParseItemID(itemIDOf(u))
		return item{ID: id, Size: d.Size, Name: d.Name}, nil
	}
	var offlineSince, failingSince time.Time
	var stopLine func()
	defer func() {
		if stopLine != nil {
			stopLine()
		}
	}()
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 250*time.Millisecond, 5*time.Second
	op := func() (*client.ItemInfo, error) {
		info, err := client.Inspect(ctx, nil, u)
		var pe *proto.Error
		var nm *client.NotMeshupError
		switch {
		case err == nil && info.Online:
			return info, nil
		case err == nil || errors.As(err, &pe) && pe.Status == proto.StatusOffline:
			failingSince = time.Time{}
			if offlineSince.IsZero() {
				offlineSince = time.Now()
				if wait == 0 {
					return nil, backoff.Permanent(fmt.Errorf("%w (--wait 0: not waiting for it)", errOffline))
				}
				limit := "until interrupted"
				if wait > 0 {
					limit = "up to " + wait.String()
				}
				fmt.Fprintf(stderr, "the sender of item %s is offline; waiting for it to come online (%s; Ctrl-C to stop)\n", itemIDOf(u), limit)
				stopLine = waitingLine(tty, stderr, offlineSince)
			}
			if wait > 0 && time.Since(offlineSince) >= wait {
				return nil, backoff.Permanent(fmt.Errorf("%w: it did not come online within %s (--wait)", errOffline, wait))
			}
			return nil, errOffline
		case untrusted(err) != nil: // tlserr.go
			return nil, backoff.Permanent(untrusted(err))
		case errors.As(err, &nm), errors.As(err, &pe) && pe.Status == proto.StatusNotFound,
			errors.Is(err, client.ErrNoKey), errors.Is(err, client.ErrWrongKey), errors.Is(err, proto.ErrE2EKey),
			ctx.Err() != nil:
			return nil, backoff.Permanent(err)
		default: // no answer, a 5xx: the rendezvous may come back
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if retryWait <= 0 || time.Since(failingSince) >= retryWait {
				return nil, backoff.Permanent(err)
			}
			return nil, err
		}
	}
	notify := func(err error, next time.Duration) {
		if !errors.Is(err, errOffline) {
			fmt.Fprintf(stderr, "%v; trying again in %s\n", err, next.Round(100*time.Millisecond))
		}
	}
	info, err := backoff.Retry(ctx, op, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0), backoff.WithNotify(notify))
	if err != nil {
		if ctx.Err() != nil && !offlineSince.IsZero() {
			return item{}, fmt.Errorf("%w: stopped waiting for it", errOffline)
		}
		return item{}, err
	}
	if !offlineSince.IsZero() {
		stopLine()
		stopLine = nil
		fmt.Fprintf(stderr, "the sender is online after %s\n", time.Since(offlineSince).Round(time.Second))
	}
	return item{ID: info.ID, Size: info.Size, Encrypted: info.Encrypted, Name: info.Name}, nil
}

// waitingLine shows, on a terminal, how long get has waited for the
// sender, until the returned function is called.
func waitingLine(tty bool, w io.Writer, since time.Time) (stop func()) {
	if !tty {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(w, "\rwaiting for the sender: %s ", time.Since(since).Round(time.Second))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// explain puts a download's error in plain words where it has a common
// cause.
func explain(err error, id string) error {
	var pe *proto.Error
	var nm *client.NotMeshupError
	switch {
	case errors.As(err, &nm):
		return nm
	case errors.As(err, &pe) && pe.Status == proto.StatusNotFound:
		return fmt.Errorf("item %s not found: the link is wrong, or its sender stopped sharing it (%w)", id, pe)
	case errors.As(err, &pe) && pe.Status == proto.StatusOffline:
		return fmt.Errorf("the sender of item %s is offline (%w)", id, err)
	case errors.Is(err, errOffline):
		return fmt.Errorf("item %s: %w", id, err)
	}
	return err
}

// bar is get's progress bar (schollz/progressbar) on stderr: bytes, rate
// and ETA of this run's bytes. Its methods are no-ops when off.
type bar struct {
	on   bool
	w    io.Writer
	pb   *progressbar.ProgressBar
	from int64 // item offset the run started at
	max  int64
}

func newBar(on bool, w io.Writer) *bar { return &bar{on: on, w: w} }

func (b *bar) start(d *client.Download) {
	if !b.on || b.pb != nil || d.Size-d.Start <= 0 {
		return
	}
	b.from, b.max = d.Start, d.Size-d.Start
	b.pb = progressbar.NewOptions64(b.max,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
	)
}

// progress sets the bar to done of size bytes of the item. Counts past
// the announced size (which the client never writes) are held to it.
func (b *bar) progress(done, size int64) {
	if b.pb == nil {
		return
	}
	b.pb.Set64(min(max(done-b.from, 0), b.max))
}

func (b *bar) finish() {
	if b.pb == nil {
		return
	}
	b.pb.Exit()
	fmt.Fprintln(b.w)
	b.pb = nil
}

// waitFlag is a duration flag where "forever" (a negative duration) means
// no limit.
type waitFlag time.Duration

func (w *waitFlag) String() string {
	if *w < 0 {
		return "forever"
	}
	return time.Duration(*w).String()
}

func (w *waitFlag) Set(s string) error {
	if s == "forever" {
		*w = -1
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("want a duration (30s, 5m), 0 or forever")
	}
	*w = waitFlag(d)
	return nil
}
