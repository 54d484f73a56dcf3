package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/relay"
)

// BenchmarkSeekUnderLoad measures the time of a small Range request (4 KiB
// at a random offset, through the rendezvous's redirect, as a video player
// seeks) on an idle relay and on the same relay while 8 consumers read the
// same publisher's item at full speed (issue 14: p95 under load should
// stay under 50 ms). It reports seek_p50_ms and seek_p95_ms for both.
func BenchmarkSeekUnderLoad(b *testing.B) {
	const (
		bulkReaders = 8
		seekLen     = 4 << 10
		itemSize    = 64 << 30 // virtual: bulk readers never reach the end
	)
	m := startMesh(b, 1, relay.Config{})
	data := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{9}).Read(data)
	c, err := client.New(client.Config{Rendezvous: m.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	it, err := c.Publish(ctx, client.Source{Name: "bench.bin", Size: itemSize, Reader: &repeatReader{data: data, size: itemSize}})
	if err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	seek := func(rng *rand.Rand) time.Duration {
		off := rng.Int64N(itemSize - seekLen)
		req, _ := http.NewRequest(http.MethodGet, it.DownloadURL, nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+seekLen-1))
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != seekLen || resp.StatusCode != http.StatusPartialContent {
			b.Fatalf("seek: %s, %d bytes, %v", resp.Status, n, err)
		}
		return time.Since(start)
	}
	measure := func(name, metric string, n int) {
		rng := rand.New(rand.NewPCG(1, 2))
		seek(rng) // warm the connections
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = seek(rng)
			time.Sleep(20 * time.Millisecond)
		}
		slices.Sort(ds)
		p50, p95 := ds[n/2], ds[n*95/100]
		b.ReportMetric(float64(p50.Microseconds())/1000, metric+"_seek_p50_ms")
		b.ReportMetric(float64(p95.Microseconds())/1000, metric+"_seek_p95_ms")
		fmt.Printf("seek of %d KiB, %-28s p50 %6.1f ms  p95 %6.1f ms  (%d seeks)\n", seekLen>>10, name+":", float64(p50.Microseconds())/1000, float64(p95.Microseconds())/1000, n)
	}

	b.ResetTimer()
	for range b.N {
		measure("idle", "idle", 100)

		lctx, lcancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var moved [bulkReaders]int64
		for i := range bulkReaders {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(lctx, http.MethodGet, it.DownloadURL, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				moved[i], _ = io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
			})
		}
		time.Sleep(2 * time.Second) // let the bulk reads reach full speed
		start := time.Now()
		measure(fmt.Sprintf("%d full-speed reads", bulkReaders), "loaded", 200)
		el := time.Since(start)
		lcancel()
		wg.Wait()
		var total int64
		for _, n := range moved {
			total += n
		}
		fmt.Printf("bulk reads moved %d MiB in all (%.0f MB/s over the seeks and the 2 s before)\n", total>>20, float64(total)/(el+2*time.Second).Seconds()/1e6)
	}
}
