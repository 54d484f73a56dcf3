package rendezvous_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// testConfig keeps relays alive for the whole of a test without heartbeats.
func testConfig() rendezvous.Config {
	return rendezvous.Config{DeadAfter: time.Minute}
}

// wait bounds every wait for a message in the tests.
const wait = rendezvoustest.Timeout

var noRedirect = &http.Client{
	Transport:     rendezvoustest.HTTP.Transport,
	Timeout:       wait,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends a request without following redirects and returns the response
// with its body read.
func do(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, body
}

// apiError decodes a JSON error body.
func apiError(t *testing.T, body []byte) (status proto.Status, msg string) {
	t.Helper()
	var e struct {
		Status proto.Status `json:"status"`
		Error  string       `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error == "" {
		t.Errorf("error body %s has no error text", body)
	}
	return e.Status, e.Error
}

// status is the body of GET /v1/status as a client sees it.
type status struct {
	Relays []struct {
		ID    string `json:"id"`
		Addrs struct {
			Observed   []string `json:"observed"`
			Advertised []string `json:"advertised"`
		} `json:"addrs"`
		NAT      string `json:"nat"`
		Public   bool   `json:"public"`
		Reach    string `json:"reach"`
		HTTPURL  string `json:"http_url"`
		Streams  int    `json:"streams"`
		Reserved int64  `json:"reserved"`
		Served   int64  `json:"served"`
		LastSeen string `json:"last_seen"`
		Alive    bool   `json:"alive"`
	} `json:"relays"`
	Sessions    int `json:"sessions"`
	Items       int `json:"items"`
	ItemsOnline int `json:"items_online"`
}

func getStatus(t *testing.T, rv *rendezvoustest.Server) status {
	t.Helper()
	var st status
	rendezvoustest.GetJSON(t, rv.URL+"/v1/status", &st)
	return st
}

// eventually polls cond until it holds or the wait is over.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	meshtest.Eventually(t, wait, what, cond)
}

// tokenKey returns the token key from GET /v1/info.
func tokenKey(t *testing.T, rv *rendezvoustest.Server) ed25519.PublicKey {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(rv.Info(t).TokenKey)
	if err != nil || len(b) != ed25519.PublicKeySize {
		t.Fatalf("token_key: %d bytes, err %v", len(b), err)
	}
	return b
}

// recvAs reads the next message from recv and fails unless it is a *T.
func recvAs[T any](t *testing.T, recv func(time.Duration) (proto.Message, error)) *T {
	t.Helper()
	m, err := recv(wait)
	if err != nil {
		t.Fatalf("read message: %v", err)
	}
	v, ok := any(m).(*T)
	if !ok {
		var want *T
		t.Fatalf("got %T %+v, want %T", m, m, want)
	}
	return v
}

// publishFile publishes a file item of size bytes.
func publishFile(t *testing.T, c *rendezvoustest.Control, size int64) proto.Published {
	t.Helper()
	return c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "video.mp4", MIME: "video/mp4", Size: size})
}
