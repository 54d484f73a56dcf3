package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/meshtest"
)

// uploadBenchSIOSize is the default size of the socket.io upload: the
// Node client holds the file in memory and sends it in acknowledged 1 MiB
// chunks (the relay's default --max-upload-chunk), one round trip each.
const uploadBenchSIOSize = 256 << 20

// BenchmarkUploadProtocols measures uploads through the legacy protocols
// (issue 11) into a relay and out to a reader that streams the item while
// it arrives, file to file on tmpfs, against raw loopback TCP in the same
// run: tus (a Go tus client: POST, then one streaming PATCH of the whole
// file, as tus-js-client does with its default chunkSize) and socket.io
// (socket.io-client 4.x in Node, relay/testdata/node, 1 MiB chunks). The
// rendezvous and relay are the real binaries, separate processes. The
// rate is the size over the time from the upload's start to the reader's
// last byte.
func BenchmarkUploadProtocols(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_SIZE", cliBenchSize)
	sioSize := benchSizeEnv(b, "MESHUP_BENCH_SIO_SIZE", uploadBenchSIOSize)
	shm, err := os.MkdirTemp("/dev/shm", "meshup-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "src.bin")
	sioSrc := filepath.Join(shm, "sio.bin")
	dst := filepath.Join(shm, "dst.bin")
	sum := writeRandom(b, src, size)
	sioSum := writeRandom(b, sioSrc, sioSize)
	nodeDir, _ := filepath.Abs("../../../relay/testdata/node")
	node, nerr := exec.LookPath("node")
	if nerr == nil {
		_, nerr = os.Stat(filepath.Join(nodeDir, "node_modules", "socket.io-client"))
	}

	dir, err := binaries()
	if err != nil {
		b.Fatal(err)
	}
	rdv := startBenchRendezvous(b, dir)
	startB(b, filepath.Join(dir, "relay"), "--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
	meshtest.Eventually(b, 20*time.Second, "relay to register", func() bool { return len(liveRelays(rdv)) == 1 })
	endpoint := func(protocol string) string {
		var ep struct {
			URL string `json:"url"`
		}
		if err := getJSON(rdv+"/v1/upload?volunteers=1&protocol="+protocol, &ep); err != nil || ep.URL == "" {
			b.Fatalf("GET /v1/upload?protocol=%s: %v", protocol, err)
		}
		return ep.URL
	}

	var raw, tus, sio float64
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		raw += rawTCPFile(b, src, dst, size)
		check(b, dst, size, sum)
		os.Remove(dst)
		tus += benchTus(b, endpoint("tus"), src, dst, size)
		check(b, dst, size, sum)
		os.Remove(dst)
		if nerr == nil {
			sio += benchSocketIO(b, node, nodeDir, endpoint("socketio"), sioSrc, dst, sioSize)
			check(b, dst, sioSize, sioSum)
			os.Remove(dst)
		}
	}
	n := float64(b.N)
	raw, tus, sio = raw/n, tus/n, sio/n
	b.ReportMetric(tus/1e6, "tus_MB/s")
	b.ReportMetric(tus/raw, "tus/raw")
	line := fmt.Sprintf("upload protocols, file->file: raw loopback TCP %6.0f MB/s | tus %d MiB -> relay -> reader %6.0f MB/s, %.2fx raw",
		raw/1e6, size>>20, tus/1e6, tus/raw)
	if nerr == nil {
		b.ReportMetric(sio/1e6, "socketio_MB/s")
		line += fmt.Sprintf(" | socket.io %d MiB in 1 MiB chunks %6.0f MB/s, %.2fx raw", sioSize>>20, sio/1e6, sio/raw)
	} else {
		line += fmt.Sprintf(" | socket.io skipped (%v; npm ci in relay/testdata/node)", nerr)
	}
	fmt.Println(line)
}

// benchRead streams url into dst and reports the bytes read.
func benchRead(url, dst string) chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("GET %s: %s", url, resp.Status)
			return
		}
		f, err := os.Create(dst)
		if err != nil {
			done <- err
			return
		}
		_, err = io.CopyBuffer(f, resp.Body, make([]byte, 256<<10))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return done
}

// benchTus uploads src with tus and reads it into dst while it arrives;
// it returns the rate in bytes per second.
func benchTus(b *testing.B, endpoint, src, dst string, size int64) float64 {
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, endpoint, nil)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", strconv.FormatInt(size, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("tus POST: %s", resp.Status)
	}
	base, _ := url.Parse(endpoint)
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil {
		b.Fatal(err)
	}
	read := benchRead(resp.Header.Get("Meshup-Item-URL"), dst)
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	req, _ = http.NewRequest(http.MethodPatch, loc.String(), f)
	req.ContentLength = size
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b.Fatalf("tus PATCH: %s", resp.Status)
	}
	if err := <-read; err != nil {
		b.Fatalf("reader: %v", err)
	}
	return float64(size) / time.Since(start).Seconds()
}

// benchSocketIO uploads src with socket.io-client in Node and reads it
// into dst while it arrives; it returns the rate in bytes per second.
func benchSocketIO(b *testing.B, node, nodeDir, endpoint, src, dst string, size int64) float64 {
	u, err := url.Parse(endpoint)
	if err != nil {
		b.Fatal(err)
	}
	path := u.Path
	u.Path = ""
	start := time.Now()
	cmd := exec.Command(node, "socketio.mjs", u.String(), path, src, strconv.Itoa(1<<20), "upload")
	cmd.Dir = nodeDir
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	var read chan error
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch ev["event"] {
		case "begin":
			s, _ := ev["url"].(string)
			read = benchRead(s, dst)
		case "error":
			b.Fatalf("socket.io client: %v", ev)
		}
	}
	if read == nil {
		b.Fatal("socket.io client ended before begin_upload was acknowledged")
	}
	if err := <-read; err != nil {
		b.Fatalf("reader: %v", err)
	}
	return float64(size) / time.Since(start).Seconds()
}
