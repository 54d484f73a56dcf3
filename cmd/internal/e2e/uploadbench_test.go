package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

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

// storUpload uploads src with STOR blocks of 1 MiB (binary frames, or
// base64 text frames when !binary) and reads the item with curl into dst;
// it returns the rate.
func storUpload(b *testing.B, relayURL, src, dst string, size int64, binary bool) float64 {
	start := time.Now()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(relayURL, "http")+"/v1/stor", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	typ := "base64"
	if binary {
		typ = "binary"
	}
	req, _ := json.Marshal(map[string]any{"filename": "bench.bin", "size": size, "type": typ})
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
			var err error
			if binary {
				err = ws.WriteMessage(websocket.BinaryMessage, buf[:n])
			} else {
				err = ws.WriteMessage(websocket.TextMessage, []byte(base64.StdEncoding.EncodeToString(buf[:n])))
			}
			if err != nil {
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
