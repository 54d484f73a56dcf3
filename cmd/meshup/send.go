package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/proto"
)

// publishWithState publishes src, or takes back the item recorded in the
// state file statePath (when set and still describing the same file).
func publishWithState(ctx context.Context, c *client.Client, src client.Source, rdv, path string, fi os.FileInfo, statePath string, stderr io.Writer) (*client.Item, error) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if statePath == "" {
		it, err := c.Publish(pctx, src)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		return it, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	state, err := loadSendState(statePath)
	if err != nil {
		return nil, err
	}
	if state.matches(rdv, abs, fi.Size(), fi.ModTime()) && (state.Key == "") == src.Plain {
		if !src.Plain {
			k, found, err := proto.ParseE2EFragment(proto.E2EFragmentKey + "=" + state.Key)
			if err != nil || !found {
				return nil, fmt.Errorf("state file %s: bad key", statePath)
			}
			src.Key = k
		}
		it, err := c.Reclaim(pctx, src, state.ID, state.Owner)
		if err == nil {
			return it, nil
		}
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Status != proto.StatusForbidden {
			return nil, fmt.Errorf("take back item %s: %w", state.ID, err)
		}
		fmt.Fprintf(stderr, "the rendezvous refused item %s of %s (%v); publishing a new link\n", state.ID, statePath, err)
	}
	it, err := c.Publish(pctx, src)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	state = &sendState{Rendezvous: rdv, ID: it.ID, Owner: it.Owner(), File: abs, Size: fi.Size(), Modified: fi.ModTime()}
	if it.Encrypted {
		state.Key = it.Key.String()
	}
	if err := state.save(statePath); err != nil {
		c.Unpublish(it.ID) // a link that cannot survive a restart was asked for
		return nil, err
	}
	return it, nil
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rdv := fs.String("rendezvous", defaultRendezvous(), "rendezvous base URL (env MESHUP_RENDEZVOUS)")
	name := fs.String("name", "", "item name (default: the file's base name)")
	typ := fs.String("type", "", "MIME type (default: from the file extension)")
	logLevel := fs.String("log", "warn", "log level: debug, info, warn, error")
	via := fs.String("via", "", "pin the entry relay the file is pushed to, by its id (diagnosis of one path)")
	plain := fs.Bool("plain", false, "publish the file unencrypted (default: end-to-end encrypted, key in the link's #k= fragment)")
	volunteers := fs.Bool("volunteers", false, "with --plain, let volunteer relays carry the plaintext (default: operator relays only)")
	statePath := fs.String("state", "", "keep the item's id and owner secret in this JSON file, so that a restarted send keeps the same link (default: none)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshup send [flags] FILE\n\nPublishes FILE and serves its parts to relays until interrupted.\nPrints the share link and the download URL on stdout, one per line.\nBy default the file is end-to-end encrypted: both links carry the key\nafter '#k=', which HTTP clients never send; relays see only ciphertext.\n'meshup get LINK' decrypts; curl on the download URL gets ciphertext.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return flag.ErrHelp
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	path := fs.Arg(0)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if *name == "" {
		*name = filepath.Base(path)
	}
	if *typ == "" {
		*typ = mime.TypeByExtension(filepath.Ext(path))
	}

	var acked atomic.Int64
	var online atomic.Bool
	c, err := client.New(client.Config{
		Rendezvous: *rdv,
		Logger:     log,
		OnProgress: func(p client.Progress) { acked.Store(p.Acked) },
		OnState: func(on bool, err error) {
			online.Store(on)
			if !on && err != nil && ctx.Err() == nil {
				fmt.Fprintf(stderr, "\rrendezvous connection lost (%v); reconnecting\n", err)
			}
		},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	src := client.Source{Name: *name, MIME: *typ, Size: st.Size(), Reader: f, Via: *via, Plain: *plain, Volunteers: *volunteers}
	it, err := publishWithState(ctx, c, src, *rdv, path, st, *statePath, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, it.ShareURL)
	fmt.Fprintln(stdout, it.DownloadURL)
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	mode := "end-to-end encrypted; fetch with: meshup get '" + it.ShareURL + "'"
	if !it.Encrypted {
		mode = "not encrypted"
	}
	fmt.Fprintf(stderr, "serving %s (%s, %s); press Ctrl-C to stop\n", *name, client.FormatBytes(st.Size()), mode)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stderr)
			return nil
		case <-tick.C:
			n := acked.Load()
			if n != last {
				fmt.Fprintf(stderr, "\rserved %s (%s/s)        ", client.FormatBytes(n), client.FormatBytes(n-last))
				last = n
			}
		}
	}
}
