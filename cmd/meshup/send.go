package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"os"
	"path/filepath"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/cmd/internal/logflag"
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
	if err := state.swarmCheck(statePath, rdv, path, fi.Size(), src.Plain); err != nil {
		return nil, err
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

// swarmCheck refuses to join the swarm item st records with the file at
// path of size bytes.
func (st *sendState) swarmCheck(statePath, rdv, path string, size int64, plain bool) error {
	switch {
	case st.ID.IsZero() || st.Owner == "":
		return fmt.Errorf("state file %s: no item id and owner secret", statePath)
	case st.Rendezvous != rdv:
		return fmt.Errorf("state file %s is of rendezvous %s, not %s", statePath, st.Rendezvous, rdv)
	case st.Size != size:
		return fmt.Errorf("state file %s is of a file of %d bytes, %s has %d: a swarm member must hold the same bytes", statePath, st.Size, path, size)
	case st.Key == "" && !plain:
		return fmt.Errorf("state file %s is of a plaintext item: add --plain", statePath)
	case st.Key != "" && plain:
		return fmt.Errorf("state file %s is of an encrypted item: drop --plain", statePath)
	}
	return nil
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rdv := fs.String("rendezvous", defaultRendezvous(), "rendezvous base URL (env MESHUP_RENDEZVOUS)")
	name := fs.String("name", "", "item name (default: the file's base name; one FILE only)")
	typ := fs.String("type", "", "MIME type (default: from the file extension)")
	var logFlags logflag.Flags
	logFlags.Register(fs, slog.LevelWarn)
	via := fs.String("via", "", "pin the entry relay the file is pushed to, by its id (diagnosis of one path)")
	plain := fs.Bool("plain", false, "publish the file unencrypted (default: end-to-end encrypted, key in the link's #k= fragment)")
	volunteers := fs.Bool("volunteers", false, "with --plain, let volunteer relays carry the plaintext (default: operator relays only)")
	statePath := fs.String("state", "", "keep the item's id and owner secret in this JSON file, so that a restarted send keeps the same link (default: none; one FILE only)")
	swarm := fs.Bool("swarm", false, "publish together with other senders of the same file (needs --state FILE, shared by all of them): the first starts the item and writes FILE, the others join it; parts are spread over every sender, and the item stays up while one is left")
	qr := fs.Bool("qr", false, "print each share link as a QR code on stderr too")
	connectWait := fs.Duration("connect-wait", 30*time.Second, "how long to keep trying a rendezvous that does not answer, with backoff, before giving up")
	clip := fs.Bool("clip", false, "publish FILE as a clip (clip.go): pushed whole into relay memory now, readable after send exits until it expires; send exits once it is stored")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: meshup send [flags] FILE...\n\nPublishes each FILE (one item and one link per file) and serves their\nparts to relays until interrupted. Flags may come before or after the\nfiles. Prints, for each file, the share link and the download URL on\nstdout, one per line. Shows on stderr the bytes pushed per file, and\n\"download complete\" once every byte of a file was pushed at least once.\nBy default a file is end-to-end encrypted: both links carry the key\nafter '#k=', which HTTP clients never send; relays see only ciphertext.\n'meshup get LINK' decrypts; curl on the download URL gets ciphertext.\n\nSwarm: several senders of the same file (same bytes, on one machine\nor many) can publish one item together: run each with --swarm and\nthe same --state FILE (copy FILE to the other machines after the\nfirst sender wrote it; it holds the owner secret and the key). The\nrendezvous spreads parts over all of them and keeps the item up\nwhile any is left.\n\nFlags:")
		fs.PrintDefaults()
	}
	paths, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usageError(fs, "want at least one FILE")
	}
	if len(paths) > 1 && (*statePath != "" || *swarm || *name != "") {
		return usageError(fs, "--state, --swarm and --name take one FILE, not %d", len(paths))
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		return err
	}
	type file struct {
		path string
		f    *os.File
		st   os.FileInfo
		name string
		wire int64 // bytes pushed for a whole copy: the ciphertext size when encrypted
		it   *client.Item
	}
	files := make([]*file, 0, len(paths))
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		n := *name
		if n == "" {
			n = filepath.Base(p)
		}
		files = append(files, &file{path: p, f: f, st: st, name: n})
	}
	if *swarm {
		// Before any network: these refusals are about the command line.
		if *statePath == "" {
			return errors.New("--swarm needs --state FILE: the members of a swarm share the item's id, owner secret and key through it")
		}
		st, err := loadSendState(*statePath)
		if err != nil {
			return err
		}
		if st != nil {
			if err := st.swarmCheck(*statePath, *rdv, files[0].path, files[0].st.Size(), *plain); err != nil {
				return err
			}
		}
	}
	if err := checkRendezvous(ctx, *rdv, *connectWait, stderr); err != nil {
		return err
	}

	pushed := newPushTracker()
	c, err := client.New(client.Config{
		Rendezvous: *rdv,
		Logger:     log,
		OnProgress: pushed.add,
		OnState: func(on bool, err error) {
			if !on && err != nil && ctx.Err() == nil {
				fmt.Fprintf(stderr, "\rrendezvous connection lost (%v); reconnecting\n", err)
			}
		},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, fl := range files {
		typ := *typ
		if typ == "" {
			typ = mime.TypeByExtension(filepath.Ext(fl.path))
		}
		src := client.Source{Name: fl.name, MIME: typ, Size: fl.st.Size(), Reader: fl.f, Via: *via, Plain: *plain, Volunteers: *volunteers, Swarm: *swarm}
		if *clip { // clip.go: stored whole in relay memory; nothing to serve after
			if err := sendClip(ctx, c, src, stdout, stderr); err != nil {
				return fmt.Errorf("%s: %w", fl.path, err)
			}
			continue
		}
		it, err := publishWithState(ctx, c, src, *rdv, fl.path, fl.st, *statePath, stderr)
		if err != nil {
			return fmt.Errorf("%s: %w", fl.path, err)
		}
		fl.it, fl.wire = it, fl.st.Size()
		if it.Encrypted {
			if fl.wire, err = proto.E2ECipherSize(fl.st.Size()); err != nil {
				return err
			}
		}
		pushed.watch(it.ID, fl.name, fl.wire)
		fmt.Fprintln(stdout, it.ShareURL)
		fmt.Fprintln(stdout, it.DownloadURL)
		if f, ok := stdout.(*os.File); ok {
			f.Sync()
		}
		mode := "end-to-end encrypted; fetch with: meshup get '" + it.ShareURL + "'"
		if !it.Encrypted {
			mode = "not encrypted; fetch with: meshup get " + it.ShareURL
		}
		fmt.Fprintf(stderr, "serving %s (%s, %s)\n", fl.name, client.FormatBytes(fl.st.Size()), mode)
		if *qr {
			if err := printQR(stderr, it.ShareURL); err != nil {
				return err
			}
		}
	}
	if *clip {
		return nil // every clip is stored in relay memory: nothing left to serve
	}
	fmt.Fprintln(stderr, "press Ctrl-C to stop")

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "\nserved %s in all\n", client.FormatBytes(pushed.total()))
			return nil
		case <-tick.C:
			if line, done := pushed.report(); line != "" || len(done) > 0 {
				for _, n := range done {
					fmt.Fprintf(stderr, "\r%s: download complete (every byte pushed at least once)\n", n)
				}
				if line != "" {
					fmt.Fprintf(stderr, "\r%s   ", line)
				}
			}
		}
	}
}

// checkRendezvous checks that rdv is a meshup rendezvous before send
// connects to it: a server that is something else fails at once; one
// that does not answer is tried again, with backoff, for up to wait.
func checkRendezvous(ctx context.Context, rdv string, wait time.Duration, stderr io.Writer) error {
	op := func() (*proto.Info, error) {
		info, err := client.CheckRendezvous(ctx, nil, rdv)
		var nm *client.NotMeshupError
		if errors.As(err, &nm) {
			return nil, backoff.Permanent(err)
		}
		if u := untrusted(err); u != nil { // tlserr.go
			return nil, backoff.Permanent(u)
		}
		return info, err
	}
	notify := func(err error, next time.Duration) {
		fmt.Fprintf(stderr, "rendezvous %s: %v; trying again in %s\n", rdv, err, next.Round(100*time.Millisecond))
	}
	_, err := backoff.Retry(ctx, op, backoff.WithMaxElapsedTime(max(wait, time.Nanosecond)), backoff.WithNotify(notify))
	var nm *client.NotMeshupError
	if err != nil && !errors.As(err, &nm) && !errors.Is(err, errUntrusted) {
		return fmt.Errorf("rendezvous %s does not answer: %w", rdv, err)
	}
	if err != nil && errors.Is(err, errUntrusted) {
		return fmt.Errorf("rendezvous %s: %w", rdv, err)
	}
	return err
}
