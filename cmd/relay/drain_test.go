package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/cmd/internal/cliconf/cliconftest"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestDrainOnSIGTERM starts a real relay process, starts a download
// through it, sends the process SIGTERM mid-transfer and checks that the
// relay reports draining on /readyz, refuses a new request with 503 and
// Retry-After, that the rendezvous stops sending consumers to it, that the
// running download completes intact, and that the process then exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay process and moves 64 MiB")
	}
	data := make([]byte, 64<<20)
	rand.Read(data)
	// A loaded test machine may starve the relay process for a while:
	// no drop for a late heartbeat.
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute})
	cmd := cliconftest.Command("--rendezvous", rv.URL, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0",
		"--allow-private-addrs", "--debug-addr", "off", "--log-format", "json", "--drain-timeout", "2m")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// The relay's JSON log gives its address and, at the end, whether it
	// drained.
	addr, drained := make(chan string, 1), make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var saw bool
		for sc.Scan() {
			var line struct{ Msg, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				t.Logf("relay: not JSON: %s", sc.Text())
				continue
			}
			switch line.Msg {
			case "relay starting":
				addr <- line.HTTP
			case "drained":
				saw = true
			}
		}
		drained <- saw
		exited <- cmd.Wait()
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not start in 30s")
	}
	waitStatus(t, base+"/readyz", http.StatusOK, "relay ready (registered)")
	if got := get(t, base+"/livez"); got.StatusCode != http.StatusOK {
		t.Errorf("livez: got %d, want 200", got.StatusCode)
	}

	c, err := client.New(client.Config{Rendezvous: rv.URL, Logger: rendezvoustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	it, err := c.Publish(t.Context(), client.Source{Name: "big.bin", Size: int64(len(data)), Reader: bytes.NewReader(data), Plain: true})
	if err != nil {
		t.Fatal(err)
	}
	resp := get(t, it.DownloadURL)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("download: got %s %q from %s, want 200", resp.Status, b, resp.Request.URL)
	}
	exitURL := resp.Request.URL.String() // the relay, after the rendezvous's redirect
	if !strings.HasPrefix(exitURL, base) {
		t.Fatalf("download served by %s, want the relay %s", exitURL, base)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}

	// Mid-transfer: the relay drains.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	body := waitStatus(t, base+"/readyz", http.StatusServiceUnavailable, "relay draining")
	if !strings.Contains(body, "draining") {
		t.Errorf("readyz while draining: got %q, want it to say draining", body)
	}
	var st struct{ Draining bool }
	sr := get(t, base+"/v1/status")
	json.NewDecoder(sr.Body).Decode(&st)
	sr.Body.Close()
	if !st.Draining {
		t.Error("/v1/status while draining: got draining false, want true")
	}
	again := get(t, exitURL)
	again.Body.Close()
	if again.StatusCode != http.StatusServiceUnavailable || again.Header.Get("Retry-After") == "" {
		t.Errorf("new request while draining: got %s, Retry-After %q; want 503 with Retry-After", again.Status, again.Header.Get("Retry-After"))
	}
	// The rendezvous stops choosing the relay: with no other, it has
	// nowhere to send a new consumer.
	meshtest.Eventually(t, 30*time.Second, "rendezvous to stop sending consumers to the draining relay", func() bool {
		r, err := rendezvoustest.NoRedirect.Get(it.DownloadURL)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	})

	// The running download completes, intact.
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("download cut after %d more bytes: %v", n, err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) || n != int64(len(data))-1<<20 {
		t.Fatalf("download: got %d bytes after the signal with another hash, want %d intact", n, len(data)-1<<20)
	}
	select {
	case saw := <-drained:
		if !saw {
			t.Error("the relay did not log that it drained")
		}
		err := <-exited
		exited <- err // for the cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("relay exit: got %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("relay still running 30s after the transfer ended")
	}
}

func get(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := rendezvoustest.HTTP.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// waitStatus polls url until it answers status, and returns the body.
func waitStatus(t *testing.T, url string, status int, what string) string {
	t.Helper()
	var body []byte
	meshtest.Eventually(t, 30*time.Second, what, func() bool {
		resp := get(t, url)
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == status
	})
	return string(body)
}
