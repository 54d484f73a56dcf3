package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/mesh/meshtest"
)

// BenchmarkUploads measures the legacy upload protocols (issue 11) into a
// relay and out to a reader, file to file on tmpfs, against raw loopback
// TCP in the same run: the rendezvous and the relay are the real binaries
// as separate processes, the reader is curl (GET of the item's download
// URL, following the rendezvous's redirect to the relay), started as soon
// as the item is named and reading while the upload runs:
//
//   - PUT: curl -T FILE to /v1/upload/{name}; the relay's 103 Early Hints
//     names the item at once.
//   - STOR binary: a Go STOR client (this process) sending 1 MiB binary
//     blocks, each acknowledged before the next, as WebSocketFileTransfer
//     does.
//
// An item of 1 GiB is over the relay's --upload-hold, so it streams
// through the relay's window: the uploader is paced by the reader.
func BenchmarkUploads(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_SIZE", cliBenchSize)
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("curl is not installed")
	}
	shm, err := os.MkdirTemp("/dev/shm", "meshup-upbench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "src.bin")
	dst := filepath.Join(shm, "dst.bin")
	sum := writeRandom(b, src, size)

	dir, err := binaries()
	if err != nil {
		b.Fatal(err)
	}
	rdv := startBenchRendezvous(b, dir)
	rport := freePortB(b)
	relayURL := fmt.Sprintf("http://127.0.0.1:%d", rport)
	startB(b, filepath.Join(dir, "relay"), "--rendezvous", rdv, "--http", fmt.Sprintf("127.0.0.1:%d", rport), "--public-url", relayURL,
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
	meshtest.Eventually(b, 20*time.Second, "relay to register", func() bool { return len(liveRelays(rdv)) == 1 })

	var raw, put, stor float64
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		raw += rawTCPFile(b, src, dst, size)
		check(b, dst, size, sum)
		os.Remove(dst)
		put += putUpload(b, relayURL, src, dst, size, i)
		check(b, dst, size, sum)
		os.Remove(dst)
		stor += storUpload(b, relayURL, src, dst, size)
		check(b, dst, size, sum)
		os.Remove(dst)
	}
	b.StopTimer()
	n := float64(b.N)
	raw, put, stor = raw/n, put/n, stor/n
	b.ReportMetric(raw/1e6, "raw_MB/s")
	b.ReportMetric(put/1e6, "put_MB/s")
	b.ReportMetric(stor/1e6, "stor_MB/s")
	fmt.Printf("uploads file->file %d MiB: raw loopback TCP %6.0f MB/s | PUT (curl) -> relay -> curl %6.0f MB/s %.2fx raw | STOR binary -> relay -> curl %6.0f MB/s %.2fx raw\n",
		size>>20, raw/1e6, put/1e6, put/raw, stor/1e6, stor/raw)
}

// putUpload uploads src with curl -T and reads the item with curl into
// dst; it returns the rate.
func putUpload(b *testing.B, relayURL, src, dst string, size int64, i int) float64 {
	start := time.Now()
	up := exec.Command("curl", "-sS", "-D", "-", "-o", "/dev/null", "-T", src, "-H", "Content-Type: application/octet-stream",
		fmt.Sprintf("%s/v1/upload/bench%d.bin", relayURL, i))
	stdout, err := up.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	up.Stderr = os.Stderr
	if err := up.Start(); err != nil {
		b.Fatal(err)
	}
	// The 103 (and the final answer) headers: the item's URL comes first.
	item := ""
	final := make(chan string, 1)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(strings.ToLower(line), "meshup-item-url:"); ok && item == "" {
			item = strings.TrimSpace(line[len(line)-len(v):])
			break
		}
	}
	go func() {
		var status strings.Builder
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "HTTP/") {
				status.Reset()
				status.WriteString(sc.Text())
			}
		}
		io.Copy(io.Discard, stdout)
		final <- status.String()
	}()
	if item == "" {
		up.Wait()
		b.Fatal("PUT: no Meshup-Item-URL")
	}
	get := exec.Command("curl", "-sSfL", "-o", dst, item)
	if out, err := get.CombinedOutput(); err != nil {
		b.Fatalf("curl GET: %v %s", err, out)
	}
	st := <-final
	if err := up.Wait(); err != nil || !strings.Contains(st, " 201") {
		b.Fatalf("curl PUT: %v, final status %q", err, st)
	}
	return float64(size) / time.Since(start).Seconds()
}

// storUpload uploads src with STOR binary blocks of 1 MiB and reads the
// item with curl into dst; it returns the rate.
func storUpload(b *testing.B, relayURL, src, dst string, size int64) float64 {
	start := time.Now()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(relayURL, "http")+"/v1/stor", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	req, _ := json.Marshal(map[string]any{"filename": "bench.bin", "size": size, "type": "binary"})
	ws.WriteMessage(websocket.TextMessage, append([]byte("STOR: "), req...))
	var ans struct {
		Code      int    `json:"code"`
		URL       string `json:"url"`
		BytesRead int    `json:"bytesRead"`
	}
	if err := ws.ReadJSON(&ans); err != nil || ans.Code != 200 {
		b.Fatalf("STOR: %+v %v", ans, err)
	}
	got := make(chan error, 1)
	go func() {
		out, err := exec.Command("curl", "-sSfL", "-o", dst, ans.URL).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v %s", err, out)
		}
		got <- err
	}()
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if err := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
				b.Fatal(err)
			}
			if err := ws.ReadJSON(&ans); err != nil || ans.Code != 200 || ans.BytesRead != n {
				b.Fatalf("DATA: %+v %v", ans, err)
			}
		}
		if rerr != nil {
			break
		}
	}
	if err := <-got; err != nil {
		b.Fatalf("curl GET: %v", err)
	}
	return float64(size) / time.Since(start).Seconds()
}
