package rendezvoustest

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// Control is the client side of a control WebSocket, driven by hand.
type Control struct {
	// Conn is the WebSocket, for tests that write raw frames.
	Conn *websocket.Conn
	// Welcome is the first message the rendezvous sent.
	Welcome proto.Welcome

	wmu sync.Mutex // serializes writes
}

// DialControl opens a control session to rv with subprotocol meshup.v1 and
// reads the Welcome. The connection is closed at tb's cleanup.
func DialControl(tb testing.TB, rv *Server) *Control {
	tb.Helper()
	c, resp, err := DialControlHeader(rv.ControlURL(), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("rendezvoustest: dial control (HTTP %d): %v", status, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// DialControlHeader opens a control session to url (ws://.../v1/control)
// with extra request headers, offering subprotocol meshup.v1, and reads
// the Welcome. On a refused handshake it returns the HTTP response. The
// caller closes the Control.
func DialControlHeader(url string, h http.Header) (*Control, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: Timeout, Subprotocols: []string{proto.Subprotocol}}
	conn, resp, err := d.Dial(url, h)
	if err != nil {
		return nil, resp, err
	}
	c := &Control{Conn: conn}
	m, err := c.Recv(Timeout)
	if err != nil {
		conn.Close()
		return nil, resp, fmt.Errorf("rendezvoustest: read welcome: %w", err)
	}
	w, ok := m.(*proto.Welcome)
	if !ok {
		conn.Close()
		return nil, resp, fmt.Errorf("rendezvoustest: first message is %T, want *proto.Welcome", m)
	}
	c.Welcome = *w
	// As real clients do: a session that says nothing is closed at the
	// rendezvous's handshake deadline.
	if err := c.Send(&proto.Hello{Client: "rendezvoustest"}); err != nil {
		conn.Close()
		return nil, resp, fmt.Errorf("rendezvoustest: send hello: %w", err)
	}
	return c, resp, nil
}

// Send writes m as one text message. Safe for concurrent use.
func (c *Control) Send(m proto.Message) error {
	data, err := proto.EncodeMessage(m)
	if err != nil {
		return err
	}
	return c.SendRaw(websocket.TextMessage, data)
}

// SendRaw writes one message of type typ (websocket.TextMessage or
// BinaryMessage) with data as is.
func (c *Control) SendRaw(typ int, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	return c.Conn.WriteMessage(typ, data)
}

// Recv reads and decodes the next message, waiting at most timeout. A
// close from the server is returned as a *websocket.CloseError. Not safe
// for concurrent use.
func (c *Control) Recv(timeout time.Duration) (proto.Message, error) {
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	_, data, err := c.Conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	return proto.DecodeMessage(data, proto.DefaultMaxMessage)
}

// Publish sends p and returns the Published reply; any other reply fails
// the test.
func (c *Control) Publish(tb testing.TB, p proto.Publish) proto.Published {
	tb.Helper()
	if err := c.Send(&p); err != nil {
		tb.Fatalf("rendezvoustest: send publish: %v", err)
	}
	m, err := c.Recv(Timeout)
	if err != nil {
		tb.Fatalf("rendezvoustest: read published: %v", err)
	}
	pub, ok := m.(*proto.Published)
	if !ok {
		tb.Fatalf("rendezvoustest: publish answered with %T %+v, want *proto.Published", m, m)
	}
	return *pub
}

// Close closes the connection without a close handshake. It is safe to
// call more than once.
func (c *Control) Close() { c.Conn.Close() }
