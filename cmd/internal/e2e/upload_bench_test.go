package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zishang520/socket.io/servers/socket/v3"
	"github.com/zishang520/socket.io/v3/pkg/types"

	"github.com/meshup/meshup/mesh/meshtest"
)

// uploadBenchSIOSize is the default size of the socket.io upload: the
// Node client holds the file in memory and sends it in acknowledged 1 MiB
// chunks (the relay's default --max-upload-chunk), one round trip each.
// The run in the 10240-byte chunks sends a sixteenth of it.
const uploadBenchSIOSize = 256 << 20

// BenchmarkUploadProtocols measures uploads through the legacy protocols
// (issue 11) into a relay and out to a reader that streams the item while
// it arrives, file to file on tmpfs, against raw loopback TCP in the same
// run. The rendezvous and relay are the real binaries, separate
// processes; the rate is the size over the time from the upload's start
// to the reader's last byte. An item over the relay's --upload-hold
// (64 MiB) streams through its --upload-window: the uploader is paced by
// the reader.
//
//   - PUT: curl -T FILE to /v1/upload/{name}, read by curl from the URL
//     in the relay's 103 Early Hints;
//   - STOR binary and STOR base64: a Go STOR client (this process) sending
//     1 MiB blocks, each acknowledged before the next, as
//     WebSocketFileTransfer does, read by curl;
//   - tus: a Go tus client (POST, then one streaming PATCH of the whole
//     file, as tus-js-client does with its default chunkSize);
//   - socket.io: socket.io-client 4.x in Node (relay/testdata/node), in
//     1 MiB chunks and in the 10240-byte chunks, each acknowledged
//     before the next. Two floors measured with the same Node client and
//     file show where socket.io's time goes: "ws floor" is the `ws`
//     package (which socket.io-client uses in Node) sending the chunks to
//     a bare Go WebSocket server that answers each one, no socket.io at
//     all; "socket.io floor" is a minimal zishang520/socket.io server in
//     this process that acknowledges each chunk and keeps nothing, so the
//     relay's own cost is the gap between it and the relay.
//
// MESHUP_BENCH_SIZE (default 1 GiB) sizes the PUT, STOR and tus runs,
// MESHUP_BENCH_SIO_SIZE (256 MiB) the socket.io runs.
func BenchmarkUploadProtocols(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_SIZE", cliBenchSize)
	sioSize := benchSizeEnv(b, "MESHUP_BENCH_SIO_SIZE", uploadBenchSIOSize)
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("curl is not installed")
	}
	shm, err := os.MkdirTemp("/dev/shm", "meshup-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	src := filepath.Join(shm, "src.bin")
	sioSrc := filepath.Join(shm, "sio.bin")
	sioSmall := filepath.Join(shm, "sio-small.bin")
	dst := filepath.Join(shm, "dst.bin")
	sum := writeRandom(b, src, size)
	sioSum := writeRandom(b, sioSrc, sioSize)
	smallSize := max(sioSize/16, 10240)
	smallSum := writeRandom(b, sioSmall, smallSize)
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
	rport := freePortB(b)
	relayURL := fmt.Sprintf("http://127.0.0.1:%d", rport)
	startB(b, filepath.Join(dir, "relay"), "--rendezvous", rdv, "--http", fmt.Sprintf("127.0.0.1:%d", rport), "--public-url", relayURL,
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs")
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
	floors := startSIOFloors(b)

	var raw, put, storBin, storB64, tus, sio, sioS, wsFloor, sioFloor, wsFloorS, sioFloorS float64
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		raw += rawTCPFile(b, src, dst, size)
		check(b, dst, size, sum)
		os.Remove(dst)
		put += putUpload(b, relayURL, src, dst, size, i)
		check(b, dst, size, sum)
		os.Remove(dst)
		storBin += storUpload(b, relayURL, src, dst, size, true)
		check(b, dst, size, sum)
		os.Remove(dst)
		storB64 += storUpload(b, relayURL, src, dst, size, false)
		check(b, dst, size, sum)
		os.Remove(dst)
		tus += benchTus(b, endpoint("tus"), src, dst, size)
		check(b, dst, size, sum)
		os.Remove(dst)
		if nerr == nil {
			sio += benchSocketIO(b, node, nodeDir, endpoint("socketio"), sioSrc, dst, sioSize, 1<<20)
			check(b, dst, sioSize, sioSum)
			os.Remove(dst)
			sioS += benchSocketIO(b, node, nodeDir, endpoint("socketio"), sioSmall, dst, smallSize, 10240)
			check(b, dst, smallSize, smallSum)
			os.Remove(dst)
			wsFloor += floors.ws(b, node, nodeDir, sioSrc, sioSize, 1<<20)
			sioFloor += floors.sio(b, node, nodeDir, sioSrc, sioSize, 1<<20)
			wsFloorS += floors.ws(b, node, nodeDir, sioSmall, smallSize, 10240)
			sioFloorS += floors.sio(b, node, nodeDir, sioSmall, smallSize, 10240)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	for _, v := range []*float64{&raw, &put, &storBin, &storB64, &tus, &sio, &sioS, &wsFloor, &sioFloor, &wsFloorS, &sioFloorS} {
		*v /= n
	}
	b.ReportMetric(raw/1e6, "raw_MB/s")
	b.ReportMetric(put/raw, "put/raw")
	b.ReportMetric(storBin/raw, "stor_binary/raw")
	b.ReportMetric(storB64/raw, "stor_base64/raw")
	b.ReportMetric(tus/raw, "tus/raw")
	rate := func(name string, v float64) string {
		return fmt.Sprintf("%-34s %7.1f MB/s %6.3fx raw", name, v/1e6, v/raw)
	}
	fmt.Printf("upload protocols, file->file, load average %s: raw loopback TCP %.0f MB/s\n", loadAvg(), raw/1e6)
	fmt.Printf("upload protocols   %s\n", rate(fmt.Sprintf("PUT (curl) %d MiB", size>>20), put))
	fmt.Printf("upload protocols   %s\n", rate(fmt.Sprintf("STOR binary %d MiB, 1 MiB blocks", size>>20), storBin))
	fmt.Printf("upload protocols   %s\n", rate(fmt.Sprintf("STOR base64 %d MiB, 1 MiB blocks", size>>20), storB64))
	fmt.Printf("upload protocols   %s\n", rate(fmt.Sprintf("tus %d MiB, one PATCH", size>>20), tus))
	if nerr != nil {
		fmt.Printf("upload protocols   socket.io skipped (%v; npm ci in relay/testdata/node)\n", nerr)
		return
	}
	b.ReportMetric(sio/raw, "socketio/raw")
	for _, r := range []struct {
		chunk          string
		sz             int64
		relay, ws, sio float64
	}{{"1 MiB", sioSize, sio, wsFloor, sioFloor}, {"10240 B", smallSize, sioS, wsFloorS, sioFloorS}} {
		fmt.Printf("upload protocols   %s | ws floor %.1f MB/s | socket.io floor %.1f MB/s | relay/socket.io floor %.2f\n",
			rate(fmt.Sprintf("socket.io %d MiB, %s chunks", r.sz>>20, r.chunk), r.relay), r.ws/1e6, r.sio/1e6, r.relay/r.sio)
	}
}

// sioFloors are the two floors under socket.io uploads from Node (see
// BenchmarkUploadProtocols), served by this process.
type sioFloors struct {
	wsURL  string // bare WebSocket server answering each message
	sioURL string // minimal socket.io server acknowledging each chunk
}

func startSIOFloors(b *testing.B) *sioFloors {
	mux := http.NewServeMux()
	up := websocket.Upgrader{ReadBufferSize: 64 << 10, WriteBufferSize: 4 << 10}
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 32<<10)
		for {
			_, rd, err := c.NextReader()
			if err != nil {
				return
			}
			n, _ := io.CopyBuffer(io.Discard, rd, buf)
			if c.WriteMessage(websocket.TextMessage, []byte(strconv.FormatInt(n, 10))) != nil {
				return
			}
		}
	})
	opts := socket.DefaultServerOptions()
	opts.SetPath("/socket.io")
	opts.SetServeClient(false)
	opts.SetMaxHttpBufferSize(2 << 20)
	opts.SetHttpCompression(nil)
	opts.SetPerMessageDeflate(nil)
	opts.SetCors(&types.Cors{Origin: "*"})
	io := socket.NewServer(nil, opts)
	io.On("connection", func(a ...any) {
		sock := a[0].(*socket.Socket)
		sock.On("begin_upload", func(args ...any) {
			ack, _ := args[len(args)-1].(socket.Ack)
			m, _ := args[0].(map[string]any)
			id, _ := m["sessionID"].(string)
			var got int64
			sock.On("upload_chunk_"+id, func(args ...any) {
				ack, _ := args[len(args)-1].(socket.Ack)
				m, _ := args[0].(map[string]any)
				if c, ok := m["chunk"].(types.BufferInterface); ok {
					got += int64(c.Len())
				}
				ack([]any{map[string]any{"received": got}}, nil)
				if m["last"] == true {
					sock.Emit("upload_success_"+id, map[string]any{"sessionID": id, "size": got})
				}
			})
			ack([]any{map[string]any{"sessionID": id, "url": ""}}, nil)
		})
	})
	mux.Handle("/socket.io/", io.ServeHandler(opts))
	srv := httptest.NewServer(mux)
	b.Cleanup(func() {
		io.Close(nil)
		srv.Close()
	})
	return &sioFloors{wsURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", sioURL: srv.URL + "/socket.io/"}
}

// ws sends file with wsacks.mjs; it returns the rate from the client's
// own timing (the WebSocket is open).
func (f *sioFloors) ws(b *testing.B, node, nodeDir, file string, size int64, chunk int) float64 {
	out, err := nodeCmd(node, nodeDir, "wsacks.mjs", f.wsURL, file, strconv.Itoa(chunk)).Output()
	if err != nil {
		b.Fatalf("wsacks.mjs: %v", err)
	}
	return nodeRate(b, out, "done", size)
}

// sio sends file with socketio.mjs to the minimal socket.io server; it
// returns the rate from the client's own timing (from before connecting
// to upload_success).
func (f *sioFloors) sio(b *testing.B, node, nodeDir, file string, size int64, chunk int) float64 {
	u, _ := url.Parse(f.sioURL)
	path := u.Path
	u.Path = ""
	out, err := nodeCmd(node, nodeDir, "socketio.mjs", u.String(), path, file, strconv.Itoa(chunk), "upload").Output()
	if err != nil {
		b.Fatalf("socketio.mjs: %v", err)
	}
	return nodeRate(b, out, "success", size)
}

func nodeCmd(node, dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	return cmd
}

// nodeRate returns size over the "ms" of the event named ev in out.
func nodeRate(b *testing.B, out []byte, ev string, size int64) float64 {
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil || e["event"] != ev {
			continue
		}
		if ms, ok := e["ms"].(float64); ok && ms > 0 {
			return float64(size) / (ms / 1000)
		}
	}
	b.Fatalf("no %q event with a time in %s", ev, out)
	return 0
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
func benchSocketIO(b *testing.B, node, nodeDir, endpoint, src, dst string, size int64, chunk int) float64 {
	u, err := url.Parse(endpoint)
	if err != nil {
		b.Fatal(err)
	}
	path := u.Path
	u.Path = ""
	cmd := exec.Command(node, "socketio.mjs", u.String(), path, src, strconv.Itoa(chunk), "upload")
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
	var clientTime time.Duration
	var success time.Time
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch ev["event"] {
		case "success":
			// The client's own time from before connecting to
			// upload_success (as for the floors), then the reader's
			// lag after it.
			ms, _ := ev["ms"].(float64)
			clientTime = time.Duration(ms * float64(time.Millisecond))
			success = time.Now()
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
	if success.IsZero() {
		b.Fatal("socket.io client ended without upload_success")
	}
	return float64(size) / (clientTime + time.Since(success)).Seconds()
}
