package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/relay"
)

// benchSize is the bytes moved per measurement.
const benchSize = 512 << 20

// loopbackTCP measures raw loopback TCP throughput with the same buffer
// size the HTTP consumer uses, in bytes per second.
func loopbackTCP(b *testing.B, n int64) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	src := make([]byte, 256<<10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for sent := int64(0); sent < n; sent += int64(len(src)) {
			if _, err := c.Write(src); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	got, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	if got < n {
		b.Fatalf("raw TCP moved %d bytes, want %d", got, n)
	}
	return float64(got) / time.Since(start).Seconds()
}

// BenchmarkRelayHop measures, in one run, raw loopback TCP and a publisher
// -> relay -> HTTP consumer transfer of the same size, and reports both
// rates and their ratio (relay_ratio; the goal is >= 0.3).
func BenchmarkRelayHop(b *testing.B) {
	m := startMesh(b, 1, relay.Config{})
	data := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{9}).Read(data)
	src := &repeatReader{data: data, size: benchSize}
	c, err := client.New(client.Config{Rendezvous: m.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	it, err := c.Publish(ctx, client.Source{Plain: true, Volunteers: true, Name: "bench.bin", Size: benchSize, Reader: src})
	if err != nil {
		b.Fatal(err)
	}
	var tcpRate, hopRate float64
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		tcpRate += loopbackTCP(b, benchSize)
		start := time.Now()
		resp, err := http.Get(it.DownloadURL)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
		resp.Body.Close()
		if err != nil || n != benchSize {
			b.Fatalf("relay hop moved %d bytes: %v", n, err)
		}
		hopRate += float64(n) / time.Since(start).Seconds()
	}
	b.StopTimer()
	tcpRate /= float64(b.N)
	hopRate /= float64(b.N)
	b.ReportMetric(tcpRate/1e6, "tcp_MB/s")
	b.ReportMetric(hopRate/1e6, "relay_MB/s")
	b.ReportMetric(hopRate/tcpRate, "relay_ratio")
	fmt.Printf("raw loopback TCP %8.0f MB/s | sender->relay->HTTP %8.0f MB/s | ratio %.2f\n", tcpRate/1e6, hopRate/1e6, hopRate/tcpRate)
}

// repeatReader is an io.ReaderAt of size bytes repeating data.
type repeatReader struct {
	data []byte
	size int64
}

func (r *repeatReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < r.size {
		k := copy(p[n:], r.data[off%int64(len(r.data)):])
		k = int(min(int64(k), r.size-off))
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
