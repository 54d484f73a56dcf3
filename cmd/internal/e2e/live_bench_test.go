package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
)

// BenchmarkLiveFanOut (issue 12): one live channel on one relay (the real
// binary, its own process) fanned out to 100 HTTP subscribers. The
// publisher (a chunked PUT) goes as fast as the slowest subscriber lets it
// (never more than 1 MiB ahead of it, so that nobody is cut off); prints
// the aggregate rate the relay delivered, and its CPU time per GiB
// delivered and its peak RSS. MESHUP_BENCH_LIVE_SIZE sets the bytes
// published (default 32 MiB), MESHUP_BENCH_LIVE_SUBS the subscribers
// (default 100).
func BenchmarkLiveFanOut(b *testing.B) {
	size := benchSizeEnv(b, "MESHUP_BENCH_LIVE_SIZE", 32<<20)
	subs := int(benchSizeEnv(b, "MESHUP_BENCH_LIVE_SUBS", 100))
	m := startBenchMesh(b, 1, false, "--live-buffer", "8388608", "--live-queue", "4194304", "--live-subscribers", "4096")
	defer m.stop()
	rel := m.relays[0]
	for range b.N {
		id, secret := proto.NewLiveSecret()
		// The bench mesh's relays are volunteers: allow them.
		req, _ := http.NewRequest(http.MethodPost, m.url+"/v1/live/"+id.String()+"?volunteers=1", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var entry proto.LiveEntry
		json.NewDecoder(resp.Body).Decode(&entry)
		resp.Body.Close()
		// The relay's counters, where the push goes: its own URL, or the
		// rendezvous's tunnel to it when the rendezvous has not yet
		// verified that URL (then the push URL is a tunnel URL too).
		su, err := url.Parse(entry.PushURL)
		if err != nil {
			b.Fatal(err)
		}
		su.Path, su.RawQuery = strings.TrimSuffix(su.Path, id.String())+"stats", ""
		stats := func() (st relay.LiveStats) {
			getJSON(su.String(), &st)
			return st
		}
		pr, pw := io.Pipe()
		pubDone := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodPut, entry.PushURL, pr)
			req.ContentLength = -1
			req.Header.Set("Authorization", "Bearer "+secret)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			pubDone <- err
		}()
		pw.Write(nil)
		meshtest.Eventually(b, 20*time.Second, "channel on the relay", func() bool { return stats().Channels == 1 })

		progress := make([]atomic.Int64, subs)
		wake := make(chan struct{}, 1)
		done := make(chan error, subs)
		tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: subs}
		client := &http.Client{Transport: tr}
		for i := range subs {
			go func() {
				resp, err := client.Get(m.url + "/v1/live/" + id.String())
				if err != nil {
					done <- err
					return
				}
				defer resp.Body.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := resp.Body.Read(buf)
					progress[i].Add(int64(n))
					select {
					case wake <- struct{}{}:
					default:
					}
					if err == io.EOF {
						done <- nil
						return
					}
					if err != nil {
						done <- err
						return
					}
				}
			}()
		}
		meshtest.Eventually(b, 60*time.Second, "subscribers", func() bool { return stats().Subscribers == int64(subs) })

		cpu0 := procCPU(rel.cmd.Process.Pid)
		var rssPeak int64
		start := time.Now()
		chunk := meshtest.RandomBytes(64<<10, 1)
		var sent int64
		for sent < size {
			if _, err := pw.Write(chunk); err != nil {
				b.Fatal(err)
			}
			sent += int64(len(chunk))
			for {
				low := sent
				for j := range progress {
					low = min(low, progress[j].Load())
				}
				if sent-low <= 1<<20 {
					break
				}
				select {
				case <-wake:
				case <-time.After(60 * time.Second):
					b.Fatalf("subscribers stalled at %d of %d bytes", low, sent)
				}
			}
			if sent%(4<<20) == 0 {
				rssPeak = max(rssPeak, procRSS(rel.cmd.Process.Pid))
			}
		}
		pw.Close()
		for range subs {
			if err := <-done; err != nil {
				b.Fatalf("subscriber: %v", err)
			}
		}
		el := time.Since(start)
		<-pubDone
		rssPeak = max(rssPeak, procRSS(rel.cmd.Process.Pid))
		cpu := procCPU(rel.cmd.Process.Pid) - cpu0
		var total int64
		for j := range progress {
			total += progress[j].Load()
		}
		if total != size*int64(subs) {
			b.Fatalf("subscribers got %d bytes in all, want %d", total, size*int64(subs))
		}
		st := stats()
		fmt.Printf("live fan-out to %d subscribers on one relay, %d MiB published, load average %s: aggregate %.0f MB/s (publisher %.1f MB/s) | relay CPU %.2f s/GiB delivered (%.0f%% of a core), RSS peak %d MiB | cut off %v\n",
			subs, size>>20, loadAvg(), float64(total)/el.Seconds()/1e6, float64(size)/el.Seconds()/1e6,
			cpu.Seconds()/(float64(total)/(1<<30)), 100*cpu.Seconds()/el.Seconds(), rssPeak>>20, st.Cutoffs)
		tr.CloseIdleConnections()
	}
}
