package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshup/meshup/client"
)

// sendClip is `meshup send --clip FILE` (issue 12): it publishes src as a
// clip, prints the share link and the download URL like send, waits
// until the relays hold it whole, says until when it stays readable, and
// returns: the clip lives on without this process.
func sendClip(ctx context.Context, c *client.Client, src client.Source, stdout, stderr io.Writer) error {
	it, err := c.PublishClip(ctx, src)
	if err != nil {
		return fmt.Errorf("publish clip: %w", err)
	}
	fmt.Fprintln(stdout, it.ShareURL)
	fmt.Fprintln(stdout, it.DownloadURL)
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	fmt.Fprintf(stderr, "pushing clip %s (%s) into relay memory...\n", src.Name, client.FormatBytes(src.Size))
	st, err := c.WaitClipStored(ctx, it, 100*time.Millisecond)
	if err != nil {
		return fmt.Errorf("clip %s not stored: %w", it.ID, err)
	}
	fmt.Fprintf(stderr, "clip stored on %d relay(s); readable until %s\n", st.Holders, st.Expires.Local().Format(time.RFC1123))
	if st.Sealed == 0 {
		fmt.Fprintln(stderr, "note: no holder confirmed it keeps the clip's sealed name and type (older relays): a restart of the rendezvous loses the clip unless it is sent again")
	}
	return nil
}
