package e2e

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

// TestUploadReaderPaced runs a real relay process with a small
// --upload-window and a short --body-timeout (issue 11):
//
//   - a PUT much larger than the window, read by a reader that stops for
//     twice --body-timeout part-way: the uploader waits for the reader
//     (the relay counts the wait) for longer than --body-timeout, and the
//     upload still completes (201) with the reader's SHA-256 equal to the
//     file's: time the relay spends waiting for readers is not the body's
//     slowness;
//   - an uploader that stalls mid-body (a raw connection that stops
//     sending) is cut after --body-timeout with 408 and a message naming
//     the slow body and the byte to resume at.
//
// --min-body-rate is set so high that the bytes sent earn no extra time:
// only --body-timeout and the time spent waiting for readers count.
func TestUploadReaderPaced(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	const (
		size        = 32 << 20 // well past the relay's and the sockets' buffers
		window      = 256 << 10
		bodyTimeout = time.Second
	)
	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port), "--p2p", "/ip4/127.0.0.1/tcp/0",
		"--public-url", rdv, "--stun", "127.0.0.1:0", "--allow-private-addrs")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	rport := freePort(t)
	relay := fmt.Sprintf("http://127.0.0.1:%d", rport)
	start(t, "relay", nil, "--rendezvous", rdv, "--http", fmt.Sprintf("127.0.0.1:%d", rport), "--public-url", relay,
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs",
		"--upload-hold", "1MiB", "--upload-window", fmt.Sprint(window),
		"--body-timeout", bodyTimeout.String(), "--min-body-rate", "1GiB")
	waitFor(t, "relay to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 1 })

	t.Run("reader-paced upload completes", func(t *testing.T) {
		file, want := randomFile(t, size) // want: the file's SHA-256
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var before struct {
			Stats struct {
				Uploads struct {
					Waits int64 `json:"waits"`
				} `json:"uploads"`
			} `json:"stats"`
		}
		if err := getJSON(relay+"/v1/status", &before); err != nil {
			t.Fatal(err)
		}
		itemURL := make(chan string, 1)
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if u := h.Get("Meshup-Item-Url"); u != "" {
				select {
				case itemURL <- u:
				default:
				}
			}
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodPut, relay+"/v1/upload/paced.bin", f)
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
		put := make(chan *http.Response, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("PUT: %v", err)
			}
			put <- resp
		}()
		var u string
		select {
		case u = <-itemURL:
		case resp := <-put:
			t.Fatalf("PUT ended before naming its item: %v", resp)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
			t.Fatalf("reading the first MiB: %v", err)
		}
		// The reader stops: the relay's window fills and the uploader
		// waits, for longer than --body-timeout in all. The pause is
		// the condition under test, not a synchronisation.
		<-time.After(2 * bodyTimeout)
		type result struct {
			n   int64
			err error
		}
		read := make(chan result, 1)
		go func() {
			n, err := io.Copy(h, resp.Body)
			read <- result{n, err}
		}()
		// The PUT ends first: a cut body would leave the item waiting
		// for a resume, and the reader with it.
		pr := <-put
		if pr == nil {
			t.FailNow()
		}
		body, _ := io.ReadAll(pr.Body)
		pr.Body.Close()
		if pr.StatusCode != http.StatusCreated {
			t.Fatalf("PUT: got %d %s, want 201", pr.StatusCode, body)
		}
		r := <-read
		if r.err != nil || r.n != size-1<<20 {
			t.Fatalf("reader: %d bytes after the first MiB, %v; want %d", r.n, r.err, size-1<<20)
		}
		if got := h.Sum(nil); string(got) != string(want) {
			t.Errorf("reader's SHA-256 %x, want %x", got, want)
		}
		var after = before
		if err := getJSON(relay+"/v1/status", &after); err != nil {
			t.Fatal(err)
		}
		if after.Stats.Uploads.Waits <= before.Stats.Uploads.Waits {
			t.Errorf("upload waits: %d before, %d after; want the uploader to have waited for the reader", before.Stats.Uploads.Waits, after.Stats.Uploads.Waits)
		}
	})

	t.Run("stalled uploader is cut", func(t *testing.T) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", rport))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		const sent = 64 << 10
		fmt.Fprintf(conn, "PUT /v1/upload/stalled.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", 1<<20)
		if _, err := conn.Write(make([]byte, sent)); err != nil {
			t.Fatal(err)
		}
		// Then nothing: the relay must end the body after --body-timeout.
		br := bufio.NewReader(conn)
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the relay's answer to a stalled body: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 200 {
				continue // 103 Early Hints naming the item
			}
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "too slow") ||
				!strings.Contains(string(body), fmt.Sprintf("resume at byte %d", sent)) {
				t.Errorf("stalled PUT: got %d %s, want 408 naming the slow body and the byte to resume at (%d)", resp.StatusCode, body, sent)
			}
			break
		}
	})
}
