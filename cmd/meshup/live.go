package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/proto"
)

// meshup live (issue 12): stdin into a live channel. The channel's secret
// is drawn here and never leaves this process but as the bearer token of
// the push; the printed link names the channel id (proto.LiveID), which
// lets anyone read the channel from the live edge, not write into it.
//
// By default the channel is sealed (proto/livee2e.go): a key K is drawn
// for the channel, stdin goes out as live1 records, and the printed link
// is the share page RDV/l/ID#k=K, whose fragment never reaches a server.
// Relays, volunteers included, carry records they cannot read or alter
// unnoticed. --plain keeps the plaintext channel readable with curl.

func runLive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return liveFrom(ctx, args, os.Stdin, stdout, stderr)
}

// liveFrom is runLive with stdin given.
func liveFrom(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("live", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rdv := fs.String("rendezvous", defaultRendezvous(), "rendezvous base URL (default $MESHUP_RENDEZVOUS or http://127.0.0.1:8080)")
	volunteers := fs.Bool("volunteers", false, "with --plain: let volunteer relays carry this plaintext channel (default: operator relays only; sealed channels may always go through volunteers)")
	secret := fs.String("secret", "", "the channel secret (at least 22 characters of A-Z a-z 0-9 - _ . ~), e.g. an EvSocket channel name; default: a fresh random one")
	plain := fs.Bool("plain", false, "a plaintext channel, readable by relays and any HTTP client (curl) at the printed /v1/live/ID link; default: sealed end to end (live1)")
	typ := fs.String("type", "application/octet-stream", "MIME type of the stream, in the sealed channel's head (players use it)")
	name := fs.String("name", "", "file name of the stream, in the sealed channel's head")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cmd | meshup live [flags]\n\nStreams stdin into a live channel: prints the channel's link on stdout\nand ends the channel at EOF. The channel is sealed end to end: the link\n(RDV/l/ID#k=KEY; quote it) carries the key in its fragment, relays see\nonly record sizes; read it with 'meshup get LINK' or in a browser.\nWith --plain, the link is RDV/v1/live/ID, plaintext at relays, readable\nwith any HTTP client from the live edge.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	p, err := client.PublishLive(ctx, client.LiveOptions{
		Rendezvous: *rdv,
		Secret:     *secret,
		Plain:      *plain,
		Volunteers: *volunteers,
		Meta:       proto.LiveMeta{Type: *typ, Name: *name},
	})
	if err != nil {
		return fmt.Errorf("live: %w", err)
	}
	fmt.Fprintln(stdout, p.Link)
	if f, ok := stdout.(interface{ Sync() error }); ok {
		f.Sync()
	}
	// stdin as it comes: one record (or chunk) per read.
	buf := make([]byte, proto.LiveMaxPlain)
	var n int64
	for {
		k, rerr := stdin.Read(buf)
		if k > 0 {
			n += int64(k)
			if _, err := p.Write(buf[:k]); err != nil {
				_, cerr := p.Close()
				return fmt.Errorf("live: push to relay: %w", errors.Join(cerr, err))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			p.Abort(rerr)
			return fmt.Errorf("live: read stdin: %w", rerr)
		}
	}
	res, err := p.Close()
	if err != nil {
		return fmt.Errorf("live: %w", err)
	}
	if *plain {
		fmt.Fprintf(stderr, "live channel ended after %d bytes\n", res.Bytes)
	} else {
		fmt.Fprintf(stderr, "live channel ended after %d bytes of stdin (%d sealed)\n", n, res.Bytes)
	}
	return nil
}

// decodeOK decodes a 200 response's JSON body into v, or returns the
// error body's message.
func decodeOK(resp *http.Response, v any) error {
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, 1<<20)
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(body).Decode(&e)
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return json.NewDecoder(body).Decode(v)
}

// isLiveURL reports whether raw is a live channel's link (/v1/live/ID, or
// a sealed channel's page /l/ID).
func isLiveURL(raw string) bool { return client.IsLiveURL(raw) }

// errLiveNoKey means a sealed channel's link lacks its key.
var errLiveNoKey = errors.New("live: this live channel is sealed end to end and the link has no key: use the whole link printed by 'meshup live', with its #k=... fragment (quote it in the shell)")

// liveReadError words a sealed channel's read error for people.
func liveReadError(err error) error {
	switch {
	case errors.Is(err, proto.ErrLiveIntegrity):
		var re *proto.LiveRecordError
		if errors.As(err, &re) && re.Kind == proto.LiveHead && re.Seq == 0 {
			return fmt.Errorf("live: the channel's head does not open with the link's key: wrong key, or altered by a relay (%w)", err)
		}
		return fmt.Errorf("live: a record failed its check, a relay altered or spliced data, or withheld a newer channel head: %w", err)
	case errors.Is(err, proto.ErrLiveMissing):
		return fmt.Errorf("live: %w", err)
	case errors.Is(err, proto.ErrLiveStale):
		return fmt.Errorf("live: %w (see --live-max-lag, --live-catch-up)", err)
	case errors.Is(err, proto.ErrLiveNoEnd):
		return fmt.Errorf("live: %w (the publisher, a relay or this reader was cut off: slow reader, lost publisher or relay; see the relay's log)", err)
	}
	return fmt.Errorf("live: %w", err)
}

// runLiveGet streams a live channel from the live edge to out (a file
// name, or "-" or "" for stdout) until the channel ends. opt holds a
// sealed channel's reader limits (MaxLag, CatchUp).
func runLiveGet(ctx context.Context, link, out string, stdout io.Writer, opt client.LiveOptions) error {
	ls, err := client.ReadLiveWith(ctx, link, opt)
	if err != nil {
		if errors.Is(err, client.ErrLiveNoKey) {
			return errLiveNoKey
		}
		return fmt.Errorf("live: %w", err)
	}
	defer ls.Close()
	if ls.Sealed {
		if _, err := ls.Reader.Head(); err != nil {
			return liveReadError(err)
		}
	}
	w := stdout
	if out != "" && out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if _, err := ls.WriteTo(w); err != nil {
		if ls.Sealed {
			return liveReadError(err)
		}
		return err
	}
	return nil
}
