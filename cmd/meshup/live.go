package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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

func runLive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return liveFrom(ctx, args, os.Stdin, stdout, stderr)
}

// liveFrom is runLive with stdin given.
func liveFrom(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("live", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rdv := fs.String("rendezvous", defaultRendezvous(), "rendezvous base URL (default $MESHUP_RENDEZVOUS or http://127.0.0.1:8080)")
	volunteers := fs.Bool("volunteers", false, "let volunteer relays carry this plaintext channel (default: operator relays only)")
	secret := fs.String("secret", "", "the channel secret (at least 22 characters of A-Z a-z 0-9 - _ . ~), e.g. an EvSocket channel name; default: a fresh random one")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cmd | meshup live [flags]\n\nStreams stdin into a live channel: prints the channel's link on stdout\n(read it with 'meshup get LINK' or any HTTP client, from the live edge)\nand ends the channel at EOF. Live channels are plaintext at relays.")
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
	u := strings.TrimSuffix(*rdv, "/") + "/v1/live/" + id.String()
	if *volunteers {
		u += "?volunteers=1"
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
	fmt.Fprintln(stdout, entry.URL)
	if f, ok := stdout.(interface{ Sync() error }); ok {
		f.Sync()
	}

	// The body is stdin as it comes: a chunked request, flushed chunk by
	// chunk by net/http.
	preq, err := http.NewRequestWithContext(ctx, http.MethodPut, entry.PushURL, io.NopCloser(stdin))
	if err != nil {
		return err
	}
	preq.ContentLength = -1
	preq.Header.Set("Authorization", "Bearer "+sec)
	preq.Header.Set("Content-Type", "application/octet-stream")
	presp, err := http.DefaultClient.Do(preq)
	if err != nil {
		return fmt.Errorf("live: push to relay: %w", err)
	}
	var done struct {
		Bytes int64 `json:"bytes"`
	}
	if err := decodeOK(presp, &done); err != nil {
		return fmt.Errorf("live: push to relay: %w", err)
	}
	fmt.Fprintf(stderr, "live channel ended after %d bytes\n", done.Bytes)
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

// isLiveURL reports whether raw is a live channel's link (/v1/live/ID).
func isLiveURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && strings.HasPrefix(u.Path, "/v1/live/")
}

// errLiveCut means a live channel's body did not end cleanly.
var errLiveCut = errors.New("live channel cut off before its end (slow reader, or the publisher or a relay was lost; see the relay's log)")

// runLiveGet streams a live channel from the live edge to out (a file
// name, or "-" or "" for stdout) until the channel ends.
func runLiveGet(ctx context.Context, link, out string, stdout io.Writer) error {
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
