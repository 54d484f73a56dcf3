package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestLiveMetrics: the live counters of GET /v1/live/stats are Prometheus
// metrics too, read from a real relay carrying a channel.
func TestLiveMetrics(t *testing.T) {
	m := startDevMesh(t, 1)
	c := newLiveCollector(m.Relays[0])
	metric := func(name string) float64 {
		if v, ok := gather(t, c)[name]; ok {
			return v
		}
		return -1
	}

	id, secret := proto.NewLiveSecret()
	pr, pw := io.Pipe()
	go func() {
		req, _ := http.NewRequest(http.MethodPut, m.RelayURLs[0]+"/v1/live/"+id.String(), pr)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+secret)
		if resp, err := rendezvoustest.HTTP.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	meshtest.Eventually(t, 10*time.Second, "the channel", func() bool { return metric("meshup_relay_live_channels") == 1 })
	// The relay announces the channel to the rendezvous on its own time:
	// until then the rendezvous does not know where to send a reader.
	var resp *http.Response
	meshtest.Eventually(t, 10*time.Second, "the rendezvous sends readers to the channel", func() bool {
		r, err := rendezvoustest.HTTP.Get(m.URL + "/v1/live/" + id.String())
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != http.StatusOK {
			r.Body.Close()
			return false
		}
		resp = r
		return true
	})
	defer resp.Body.Close()
	meshtest.Eventually(t, 10*time.Second, "the subscriber", func() bool { return metric("meshup_relay_live_subscribers") == 1 })
	pw.Write([]byte(strings.Repeat("z", 1000)))
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	if in := metric("meshup_relay_live_bytes_in_total"); in != 1000 {
		t.Errorf("bytes in %v, want 1000", in)
	}
	// The relay counts bytes out once the write returned.
	meshtest.Eventually(t, 10*time.Second, "1000 bytes out", func() bool { return metric("meshup_relay_live_bytes_out_total") == 1000 })
	if v := metric("meshup_relay_live_forwarded_bytes_total"); v != 0 {
		t.Errorf("forwarded %v, want 0", v)
	}
	pw.Close()
	meshtest.Eventually(t, 10*time.Second, "the channel ended", func() bool { return metric("meshup_relay_live_channels") == 0 })
}
