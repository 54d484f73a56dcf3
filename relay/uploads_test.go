package relay_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// TestUploadsServed: a relay started with some upload protocols only
// (relay --uploads put) serves those; the others' endpoints answer 404
// with the reason, before any protocol work, and the rendezvous sends
// their uploaders elsewhere (here: nowhere, with the reason).
func TestUploadsServed(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.Uploads = []string{proto.UploadPUT}
	e := newEnv(t, cfg)
	rel := e.relays[0]

	off := func(what string, resp *http.Response, protocol string) {
		t.Helper()
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "does not serve "+protocol+" uploads") {
			t.Errorf("%s: got %d %q, want 404 saying the relay does not serve %s uploads", what, resp.StatusCode, body, protocol)
		}
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(rel.URL, "http")+"/v1/stor", nil)
	if err == nil || resp == nil {
		t.Fatalf("STOR WebSocket: got err %v, want a refused handshake", err)
	}
	off("STOR WebSocket", resp, proto.UploadSTOR)
	for _, m := range []string{http.MethodPost, http.MethodOptions} {
		req, _ := http.NewRequest(m, rel.URL+"/v1/files/", nil)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Upload-Length", "5")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		off("tus "+m, resp, proto.UploadTUS)
	}
	resp, err = httpClient.Get(rel.URL + "/v1/socket.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	off("socket.io handshake", resp, proto.UploadSocketIO)

	req, _ := http.NewRequest(http.MethodPut, rel.URL+"/v1/upload/hello.txt", strings.NewReader("hello"))
	req.Header.Set("Content-Type", "text/plain")
	resp, err = httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("PUT: got %d, want 201", resp.StatusCode)
	}

	var st struct {
		Uploads []string `json:"uploads"`
	}
	getJSON(t, rel.URL+"/v1/status", &st)
	if !slices.Equal(st.Uploads, []string{proto.UploadPUT}) {
		t.Errorf("relay status uploads %q, want [put]", st.Uploads)
	}
	for protocol, want := range map[string]int{proto.UploadPUT: 200, proto.UploadTUS: 503} {
		resp, err := httpClient.Get(e.rv.URL + "/v1/upload?protocol=" + protocol + "&volunteers=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || want == 503 && !strings.Contains(string(body), "no live relay serves tus uploads") {
			t.Errorf("rendezvous GET /v1/upload?protocol=%s: got %d %s, want %d", protocol, resp.StatusCode, body, want)
		}
	}
}

// getJSON decodes the JSON body of GET url into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
