package rendezvous_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestEncryptedItem publishes an encrypted item and checks what the
// rendezvous keeps and tells: /meta says encrypted and carries the sealed
// metadata untouched; the read token carries no name and an opaque type.
func TestEncryptedItem(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay-a.test:8081/")
	c := rendezvoustest.DialControl(t, rv)
	size, _ := proto.E2ECipherSize(1 << 20)
	const meta = "c2VhbGVkIG1ldGFkYXRh"
	pub := c.Publish(t, proto.Publish{Kind: proto.KindFile, MIME: "application/octet-stream", Size: size, Enc: proto.E2EVersion, Meta: meta})

	var m rendezvous.ItemMeta
	rendezvoustest.GetJSON(t, rv.URL+"/v1/items/"+pub.ID.String()+"/meta", &m)
	if !m.Encrypted || m.Enc != proto.E2EVersion || m.Meta != meta || m.Size != size || m.Name != "" || m.MIME != "application/octet-stream" {
		t.Errorf("meta: got %+v, want encrypted %s with the sealed meta, size %d, no name", m, proto.E2EVersion, size)
	}

	resp, body := do(t, http.MethodGet, pub.DownloadURL)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("GET: status %d, want 307: %s", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := proto.ParseToken(tokenKey(t, rv), loc.Query().Get("t"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if claims.Relay != relay.ID || claims.Name != "" || claims.MIME != "application/octet-stream" || claims.Size != size {
		t.Errorf("read token: got %+v, want no name, application/octet-stream, size %d", claims, size)
	}

	plain := publishFile(t, c, 100)
	var pm rendezvous.ItemMeta
	rendezvoustest.GetJSON(t, rv.URL+"/v1/items/"+plain.ID.String()+"/meta", &pm)
	if pm.Encrypted || pm.Enc != "" || pm.Meta != "" || pm.Name != "video.mp4" {
		t.Errorf("plaintext item meta: got %+v", pm)
	}
}

func TestEncryptedPublishRefused(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	good, _ := proto.E2ECipherSize(1000)
	tests := []struct {
		name string
		pub  proto.Publish
		want proto.Status
		msg  string
	}{
		{"unknown format", proto.Publish{Kind: proto.KindFile, Size: good, Enc: "e2e9"}, proto.StatusMalformed, "unknown encryption"},
		{"meta without enc", proto.Publish{Kind: proto.KindFile, Size: 10, Meta: "abc"}, proto.StatusMalformed, "only allowed on encrypted"},
		{"meta too large", proto.Publish{Kind: proto.KindFile, Size: good, Enc: proto.E2EVersion, Meta: strings.Repeat("A", proto.E2EMaxMeta+1)}, proto.StatusTooLarge, "meta of"},
		{"impossible size", proto.Publish{Kind: proto.KindFile, Size: proto.E2ESealedChunkSize + 3, Enc: proto.E2EVersion}, proto.StatusMalformed, "ciphertext size"},
		{"size below a tag", proto.Publish{Kind: proto.KindFile, Size: 10, Enc: proto.E2EVersion}, proto.StatusMalformed, "ciphertext size"},
		{"name in clear", proto.Publish{Kind: proto.KindFile, Size: good, Enc: proto.E2EVersion, Name: "secret.pdf"}, proto.StatusMalformed, "no name in clear"},
		{"type in clear", proto.Publish{Kind: proto.KindFile, Size: good, Enc: proto.E2EVersion, MIME: "application/pdf"}, proto.StatusMalformed, "MIME type"},
		{"message", proto.Publish{Kind: proto.KindMessage, Text: "hi", Enc: proto.E2EVersion}, proto.StatusMalformed, "message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pub.Ref = tt.name
			if err := c.Send(&tt.pub); err != nil {
				t.Fatal(err)
			}
			e := recvAs[proto.ErrorMsg](t, c.Recv)
			if e.Status != tt.want || e.Ref != tt.name || !strings.Contains(e.Reason, tt.msg) {
				t.Errorf("got %d %q, want %d containing %q", e.Status, e.Reason, tt.want, tt.msg)
			}
		})
	}
}

// TestEncryptedMetaOnReclaim checks the second step of publishing an
// encrypted item: its owner sends the sealed metadata once it knows the id.
func TestEncryptedMetaOnReclaim(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	size, _ := proto.E2ECipherSize(10)
	pub := c.Publish(t, proto.Publish{Kind: proto.KindFile, Size: size, Enc: proto.E2EVersion})
	metaURL := rv.URL + "/v1/items/" + pub.ID.String() + "/meta"
	var m rendezvous.ItemMeta
	rendezvoustest.GetJSON(t, metaURL, &m)
	if !m.Encrypted || m.Meta != "" {
		t.Fatalf("meta before: %+v", m)
	}
	c.Publish(t, proto.Publish{ID: pub.ID, Owner: pub.Owner, Kind: proto.KindFile, Size: size, Enc: proto.E2EVersion, Meta: "c2VhbGVk"})
	rendezvoustest.GetJSON(t, metaURL, &m)
	if m.Meta != "c2VhbGVk" {
		t.Errorf("meta after reclaim: got %q, want c2VhbGVk", m.Meta)
	}
	// A plaintext item gains no meta that way.
	plain := publishFile(t, c, 100)
	c.Publish(t, proto.Publish{ID: plain.ID, Owner: plain.Owner, Kind: proto.KindFile, Meta: "c2VhbGVk"})
	var pm rendezvous.ItemMeta
	rendezvoustest.GetJSON(t, rv.URL+"/v1/items/"+plain.ID.String()+"/meta", &pm)
	if pm.Meta != "" || pm.Encrypted {
		t.Errorf("plaintext item after reclaim with meta: %+v", pm)
	}
}
