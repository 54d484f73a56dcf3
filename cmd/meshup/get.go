package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/proto"
)

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "output file, or - for stdout (default: the item's name in the current directory)")
	via := fs.String("via", "", "pin the exit relay by its id (diagnosis)")
	stall := fs.Duration("stall-timeout", client.DefaultStallTimeout, "a response of the exit relay that delivers no byte for this long is given up, and the download resumes through another relay; 0 or less: never")
	retryWait := fs.Duration("retry-wait", client.DefaultRetryWait, "when the exit relay fails, keep trying (with backoff, through other relays) this long while no byte arrives; 0 or less: resume once, at once, then give up")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshup get [flags] URL\n\nDownloads an item. URL is a share link (.../i/ID) or a download URL\n(.../v1/items/ID). A partial output file is resumed with a Range request.\nWhen the exit relay fails mid-transfer the download resumes with a Range\nrequest through another relay.\nAn encrypted item is decrypted with the key in the URL's fragment\n(quote it: 'https://.../i/ID#k=...'); only authenticated bytes are written.")
		fs.PrintDefaults()
	}
	// Accept flags after the URL too: meshup get URL -o FILE.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return flag.ErrHelp
	}
	if isLiveURL(pos[0]) { // live.go: a live channel streams until it ends
		return runLiveGet(ctx, pos[0], *out, stdout)
	}
	u, err := client.ItemURL(pos[0], *via)
	if err != nil {
		return err
	}
	onRetry := func(err error) { fmt.Fprintf(stderr, "\r%v\n", err) }
	wait := *retryWait
	if wait <= 0 {
		wait = -1 // FileOptions: no waiting
	}
	stallTimeout := *stall
	if stallTimeout <= 0 {
		stallTimeout = -1 // FileOptions: never
	}
	if *out == "-" {
		_, err := client.DownloadTo(ctx, u, stdout, client.FileOptions{OnRetry: onRetry, RetryWait: wait, StallTimeout: stallTimeout})
		return err
	}
	file := *out
	if file == "" {
		var name string
		info, err := client.Inspect(ctx, nil, u)
		switch {
		case err == nil:
			name = info.Name
		case errors.Is(err, client.ErrNoKey) || errors.Is(err, client.ErrWrongKey) || errors.Is(err, proto.ErrE2EKey):
			return err
		default: // no item description (a relay's URL): ask the item's headers
			d, err := client.Stat(ctx, nil, u)
			if err != nil {
				return err
			}
			d.Body.Close()
			name = d.Name
		}
		file = filepath.Base(name)
		if file == "" || file == "." || file == "/" || strings.HasPrefix(file, ".") {
			file = "download"
		}
	}

	isTTY := false
	if f, ok := stderr.(*os.File); ok {
		isTTY = term.IsTerminal(int(f.Fd()))
	}
	start := time.Now()
	var lastDraw time.Time
	var startAt int64 = -1
	opt := client.FileOptions{
		OnRetry:      onRetry,
		RetryWait:    wait,
		StallTimeout: stallTimeout,
		OnStart: func(d *client.Download) {
			startAt = d.Start
			if d.Start > 0 {
				fmt.Fprintf(stderr, "resuming %s at %s\n", file, client.FormatBytes(d.Start))
			}
		},
		OnProgress: func(done, size int64) {
			if !isTTY || time.Since(lastDraw) < 100*time.Millisecond && done != size {
				return
			}
			lastDraw = time.Now()
			fmt.Fprintf(stderr, "\r%s", progressBar(done, size, max(done-max(startAt, 0), 0), time.Since(start)))
		},
	}
	n, err := client.DownloadFile(ctx, u, file, opt)
	if isTTY {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(stderr, "%s: %s in %s (%s/s)\n", file, client.FormatBytes(n), el.Round(time.Millisecond), client.FormatBytes(int64(float64(n)/max(el.Seconds(), 1e-3))))
	return nil
}

// progressBar renders one line: a bar, the bytes and the rate.
func progressBar(done, size, moved int64, el time.Duration) string {
	const width = 30
	frac := 0.0
	if size > 0 {
		frac = float64(done) / float64(size)
	}
	full := int(frac * width)
	bar := strings.Repeat("=", full) + strings.Repeat(" ", width-full)
	rate := float64(moved) / max(el.Seconds(), 1e-3)
	return fmt.Sprintf("[%s] %5.1f%% %s / %s  %s/s   ", bar, 100*frac, client.FormatBytes(done), client.FormatBytes(size), client.FormatBytes(int64(rate)))
}
