package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"

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
	id, sec := proto.NewLiveSecret()
	if *secret != "" {
		var err error
		if id, err = proto.LiveID(*secret); err != nil {
			return fmt.Errorf("--secret: %w", err)
		}
		sec = *secret
	}
	base := strings.TrimSuffix(*rdv, "/")
	u := base + "/v1/live/" + id.String()
	switch {
	case !*plain:
		u += "?enc=" + proto.LiveEncVersion
	case *volunteers:
		u += "?volunteers=1"
	}
	meta := proto.LiveMeta{Type: *typ, Name: *name}
	if _, err := proto.AppendLiveHead(nil, meta, nil); err != nil {
		return fmt.Errorf("live: --type/--name: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+sec)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("live: ask the rendezvous for a relay: %w", err)
	}
	var entry proto.LiveEntry
	err = decodeOK(resp, &entry)
	if err != nil {
		return fmt.Errorf("live: ask the rendezvous for a relay: %w", err)
	}
	body, ctype := io.Reader(io.NopCloser(stdin)), "application/octet-stream"
	var sealed *sealedBody
	if *plain {
		fmt.Fprintln(stdout, entry.URL)
	} else {
		k := proto.NewE2EKey()
		share := entry.Share
		if share == "" { // a rendezvous that predates sealed channels' pages
			share = base + "/l/" + id.String()
		}
		fmt.Fprintln(stdout, share+"#"+k.Fragment())
		sealed = newSealedBody(stdin, k, id, meta)
		body, ctype = sealed, proto.LiveContentType
	}
	if f, ok := stdout.(interface{ Sync() error }); ok {
		f.Sync()
	}

	// The body is stdin as it comes (sealed into records): a chunked
	// request, flushed chunk by chunk by net/http.
	preq, err := http.NewRequestWithContext(ctx, http.MethodPut, entry.PushURL, body)
	if err != nil {
		return err
	}
	preq.ContentLength = -1
	preq.Header.Set("Authorization", "Bearer "+sec)
	preq.Header.Set("Content-Type", ctype)
	presp, err := http.DefaultClient.Do(preq)
	if err != nil {
		return fmt.Errorf("live: push to relay: %w", err)
	}
	var done struct {
		Bytes  int64  `json:"bytes"`
		Status int    `json:"status"`
		Reason string `json:"reason"`
	}
	if err := decodeOK(presp, &done); err != nil {
		return fmt.Errorf("live: push to relay: %w", err)
	}
	if sealed != nil {
		if err := sealed.err(); err != nil {
			return fmt.Errorf("live: read stdin: %w", err)
		}
		if done.Status != 0 {
			return fmt.Errorf("live: the relay ended the channel: %s", done.Reason)
		}
		fmt.Fprintf(stderr, "live channel ended after %d bytes of stdin (%d sealed)\n", sealed.n, done.Bytes)
		return nil
	}
	fmt.Fprintf(stderr, "live channel ended after %d bytes\n", done.Bytes)
	return nil
}

// sealedBody is a PUT body of live1 records: a head, stdin's bytes as
// they come (one data record per read), and the last record at stdin's
// EOF. A read error of stdin fails the body, so the channel ends without
// its end mark and readers know it is cut short.
type sealedBody struct {
	src  io.Reader
	lw   *proto.LiveWriter
	out  bytes.Buffer // sealed records not yet read
	buf  []byte
	n    int64 // stdin bytes read
	done bool
	rerr error // stdin's read error, other than EOF
}

func newSealedBody(src io.Reader, k proto.E2EKey, id proto.ItemID, meta proto.LiveMeta) *sealedBody {
	b := &sealedBody{src: src, buf: make([]byte, proto.LiveMaxPlain)}
	b.lw = proto.NewLiveWriter(&b.out, k, id)
	b.lw.Head(meta, nil) // checked by the caller
	return b
}

func (b *sealedBody) Read(p []byte) (int, error) {
	for b.out.Len() == 0 {
		if b.done {
			return 0, io.EOF
		}
		n, err := b.src.Read(b.buf)
		if n > 0 {
			b.n += int64(n)
			b.lw.Write(b.buf[:n])
		}
		if err == io.EOF {
			b.lw.Close()
			b.done = true
		} else if err != nil {
			b.rerr = err
			return 0, err
		}
	}
	return b.out.Read(p)
}

func (b *sealedBody) err() error { return b.rerr }

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
func isLiveURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (strings.HasPrefix(u.Path, "/v1/live/") || strings.HasPrefix(u.Path, "/l/"))
}

// errLiveNoKey means a sealed channel's link lacks its key.
var errLiveNoKey = errors.New("live: this live channel is sealed end to end and the link has no key: use the whole link printed by 'meshup live', with its #k=... fragment (quote it in the shell)")

func isLive1Type(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == proto.LiveContentType
}

// liveReadError words a sealed channel's read error for people.
func liveReadError(err error) error {
	switch {
	case errors.Is(err, proto.ErrLiveIntegrity):
		var re *proto.LiveRecordError
		if errors.As(err, &re) && re.Kind == proto.LiveHead && re.Seq == 0 {
			return fmt.Errorf("live: the channel's head does not open with the link's key: wrong key, or altered by a relay (%w)", err)
		}
		return fmt.Errorf("live: a record failed its check, the relay altered or spliced data: %w", err)
	case errors.Is(err, proto.ErrLiveMissing):
		return fmt.Errorf("live: %w", err)
	case errors.Is(err, proto.ErrLiveNoEnd):
		return fmt.Errorf("live: %w (the publisher, a relay or this reader was cut off: slow reader, lost publisher or relay; see the relay's log)", err)
	}
	return fmt.Errorf("live: %w", err)
}

// errLiveCut means a live channel's body did not end cleanly.
var errLiveCut = errors.New("live channel cut off before its end (slow reader, or the publisher or a relay was lost; see the relay's log)")

// runLiveGet streams a live channel from the live edge to out (a file
// name, or "-" or "" for stdout) until the channel ends.
func runLiveGet(ctx context.Context, link, out string, stdout io.Writer) error {
	u, err := url.Parse(link)
	if err != nil {
		return err
	}
	key, haveKey, err := proto.ParseE2EFragment(u.Fragment)
	if err != nil {
		return fmt.Errorf("live: the link's key (#k=...) is malformed: %w", err)
	}
	page := strings.HasPrefix(u.Path, "/l/")
	idText := strings.TrimPrefix(strings.TrimPrefix(u.Path, "/l/"), "/v1/live/")
	id, err := proto.ParseItemID(idText)
	if err != nil {
		return fmt.Errorf("live: %q names no live channel: %w", link, err)
	}
	if page && !haveKey {
		return errLiveNoKey
	}
	u.Fragment, u.RawFragment = "", ""
	if page {
		u.Path, u.RawPath = "/v1/live/"+id.String(), ""
	}
	link = u.String()
	w := stdout
	if out != "" && out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("live: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return decodeOK(resp, nil)
	}
	defer resp.Body.Close()
	sealedStream := isLive1Type(resp.Header.Get("Content-Type"))
	switch {
	case sealedStream && !haveKey:
		return errLiveNoKey
	case !sealedStream && haveKey:
		return fmt.Errorf("live: the link carries a key but the channel is not sealed (Content-Type %q)", resp.Header.Get("Content-Type"))
	case sealedStream:
		lr := proto.NewLiveReader(resp.Body, key, id)
		if _, err := lr.Head(); err != nil {
			return liveReadError(err)
		}
		if _, err := lr.WriteTo(w); err != nil {
			return liveReadError(err)
		}
		return nil
	}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil { // unbuffered: each chunk goes on as it comes
				return err
			}
		}
		if rerr == io.EOF {
			if resp.Trailer.Get("Meshup-Live-End") != "ok" {
				return errLiveCut
			}
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%w: %v", errLiveCut, rerr)
		}
	}
}
