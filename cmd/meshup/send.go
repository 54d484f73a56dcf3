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
// With src.Swarm it joins the item of the state file instead (joinSwarm).
func publishWithState(ctx context.Context, c *client.Client, src client.Source, rdv, path string, fi os.FileInfo, statePath string, stderr io.Writer) (*client.Item, error) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if src.Swarm {
		return joinSwarm(pctx, c, src, rdv, path, fi, statePath, stderr)
	}
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

// joinSwarm publishes src as one member of a swarm (issue 10): when the
// state file exists, it joins the item it records, which other senders of
// the same bytes publish too; otherwise it publishes a new item and writes
// the state file for the others to join. The state file is shared, not
// rewritten: one that records another rendezvous, another size or another
// encryption is an error, never a new link.
func joinSwarm(ctx context.Context, c *client.Client, src client.Source, rdv, path string, fi os.FileInfo, statePath string, stderr io.Writer) (*client.Item, error) {
	if statePath == "" {
		return nil, errors.New("--swarm needs --state FILE: the members of a swarm share the item's id, owner secret and key through it")
	}
	state, err := loadSendState(statePath)
	if err != nil {
		return nil, err
	}
	if state == nil {
		it, err := c.Publish(ctx, src)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		state = &sendState{Rendezvous: rdv, ID: it.ID, Owner: it.Owner(), File: abs, Size: fi.Size(), Modified: fi.ModTime()}
		if it.Encrypted {
			state.Key = it.Key.String()
		}
		if err := state.save(statePath); err != nil {
			c.Unpublish(it.ID)
			return nil, err
		}
		fmt.Fprintf(stderr, "started swarm item %s; more senders of the same file join it with --swarm --state %s\n", it.ID, statePath)
		return it, nil
	}
	switch {
	case state.ID.IsZero() || state.Owner == "":
		return nil, fmt.Errorf("state file %s: no item id and owner secret", statePath)
	case state.Rendezvous != rdv:
		return nil, fmt.Errorf("state file %s is of rendezvous %s, not %s", statePath, state.Rendezvous, rdv)
	case state.Size != fi.Size():
		return nil, fmt.Errorf("state file %s is of a file of %d bytes, %s has %d: a swarm member must hold the same bytes", statePath, state.Size, path, fi.Size())
	case state.Key == "" && !src.Plain:
		return nil, fmt.Errorf("state file %s is of a plaintext item: add --plain", statePath)
	case state.Key != "" && src.Plain:
		return nil, fmt.Errorf("state file %s is of an encrypted item: drop --plain", statePath)
	}
	if !src.Plain {
		k, found, err := proto.ParseE2EFragment(proto.E2EFragmentKey + "=" + state.Key)
		if err != nil || !found {
			return nil, fmt.Errorf("state file %s: bad key", statePath)
		}
		src.Key = k
	}
	it, err := c.Reclaim(ctx, src, state.ID, state.Owner)
	if err != nil {
		return nil, fmt.Errorf("join swarm item %s: %w", state.ID, err)
	}
	fmt.Fprintf(stderr, "joined swarm item %s as one more sender\n", it.ID)
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
	swarm := fs.Bool("swarm", false, "publish together with other senders of the same file (needs --state FILE, shared by all of them): the first starts the item and writes FILE, the others join it; parts are spread over every sender, and the item stays up while one is left")
	clip := fs.Bool("clip", false, "publish FILE as a clip (clip.go): pushed whole into relay memory now, readable after send exits until it expires; send exits once it is stored")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshup send [flags] FILE\n\nPublishes FILE and serves its parts to relays until interrupted.\nPrints the share link and the download URL on stdout, one per line.\nBy default the file is end-to-end encrypted: both links carry the key\nafter '#k=', which HTTP clients never send; relays see only ciphertext.\n'meshup get LINK' decrypts; curl on the download URL gets ciphertext.\n\nSwarm: several senders of the same file (same bytes, on one machine\nor many) can publish one item together: run each with --swarm and\nthe same --state FILE (copy FILE to the other machines after the\nfirst sender wrote it; it holds the owner secret and the key). The\nrendezvous spreads parts over all of them and keeps the item up\nwhile any is left.")
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
	src := client.Source{Name: *name, MIME: *typ, Size: st.Size(), Reader: f, Via: *via, Plain: *plain, Volunteers: *volunteers, Swarm: *swarm}
	if *clip { // clip.go
		return sendClip(ctx, c, src, stdout, stderr)
	}
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
			fmt.Fprintf(stderr, "\nserved %s in all\n", client.FormatBytes(acked.Load()))
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
