package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// STOR/DATA over WebSocket (issue 11, protocol 1), the protocol of
// WebSocketFileTransfer, at GET /v1/stor. A thin adapter on the upload
// core (upload.go):
//
//	client                                        relay
//	AUTH: {"login":"u","password":"p"}     -->    (optional; auth webhook)
//	                                       <--    {"type":"AUTH","code":200,"message":"..."}
//	STOR: {"filename":"a.bin","size":N,
//	       "type":"binary","parameters":{}} -->   (createUpload: auth webhook)
//	                                       <--    {"type":"STOR","code":200,"message":"...",
//	                                               "share":URL,"url":URL,"expires":RFC3339}
//	block (binary frame, or base64 text)   -->
//	                                       <--    {"type":"DATA","code":200,"bytesRead":n}
//	... until N bytes arrived: the upload is complete.
//
// "type" is "base64" (text frames of base64, the default: older clients
// send no type) or "binary" (binary frames); a binary frame is taken as
// is in either mode. bytesRead is the decoded size of that one block
// (clients add it to their offset). Every reply is one text frame holding
// one JSON object. An error is a reply of the same type with a non-200
// code (an HTTP status) and a message, after which the relay closes the
// connection with a close code 4000+proto.Status and the message as
// reason. A connection that closes before N bytes arrived is an
// interrupted upload: its readers see it fail, never a short item taken
// for whole.
//
// Limits: a block decodes to at most Config.StorMaxBlock bytes; an AUTH or
// STOR message is at most 64 KiB; the connection counts in MaxConns and
// the limits per source, like a push connection, and its bytes in the
// memory budget, like every upload.

// maxStorMessage bounds an AUTH or STOR text message.
const maxStorMessage = 64 << 10

// storReply is one reply of the STOR protocol.
type storReply struct {
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Message   string `json:"message,omitempty"`
	BytesRead *int   `json:"bytesRead,omitempty"`
	Share     string `json:"share,omitempty"`
	URL       string `json:"url,omitempty"`
	Expires   string `json:"expires,omitempty"`
}

// storRequest is the JSON of a STOR message.
type storRequest struct {
	Filename   string          `json:"filename"`
	Size       *int64          `json:"size"`
	Type       string          `json:"type"`
	Parameters json.RawMessage `json:"parameters"`
}

// handleStor upgrades to the STOR WebSocket and serves it until it ends.
func (s *Server) handleStor(w http.ResponseWriter, r *http.Request) {
	if !s.originAllowed(r) {
		s.stats.refused("origin")
		writeError(w, proto.Errorf(proto.StatusOriginRefused, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	if s.stats.pushConns.Add(1) > int64(s.cfg.MaxConns) {
		s.stats.pushConns.Add(-1)
		s.stats.refused("max_conns")
		writeError(w, proto.Errorf(proto.StatusOverLimit, "relay has %d upload connections", s.cfg.MaxConns))
		return
	}
	defer s.stats.pushConns.Add(-1)
	if !s.goStart() {
		writeError(w, errShutdown)
		return
	}
	defer s.wg.Done()
	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.HandshakeTimeout,
		ReadBufferSize:   wsReadBuffer,
		WriteBufferPool:  s.wbufs,
		CheckOrigin:      func(*http.Request) bool { return true }, // checked above
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client
	}
	defer ws.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	sc := &storConn{s: s, ws: ws, client: r.RemoteAddr, log: s.log.With("peer", r.RemoteAddr, "protocol", proto.UploadSTOR)}
	sc.serve(ctx)
}

// storConn is one STOR connection. Its handler goroutine reads and writes.
type storConn struct {
	s      *Server
	ws     *websocket.Conn
	client string
	log    interface {
		Info(string, ...any)
		Debug(string, ...any)
	}
	auth map[string]string // from AUTH
	u    *upload
	b64  bool // blocks are base64 text frames
	buf  bytes.Buffer
}

func (c *storConn) serve(ctx context.Context) {
	s := c.s
	for {
		c.ws.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		typ, rd, err := c.ws.NextReader()
		if err != nil {
			if c.u != nil && !c.u.Done() {
				c.log.Info("STOR upload interrupted", "item", c.u.id, "offset", c.u.Offset(), "err", err)
				c.u.Abort(proto.Errorf(proto.StatusSourceError, "upload interrupted at byte %d of %d: the uploader's connection closed", c.u.Offset(), c.u.Size()))
			}
			return
		}
		if c.u == nil {
			if typ != websocket.TextMessage {
				c.fail("STOR", proto.Errorf(proto.StatusProtocol, "expected an AUTH or STOR text message, got a binary frame"))
				return
			}
			msg, err := readAtMost(rd, maxStorMessage)
			if err != nil {
				c.fail("STOR", proto.Errorf(proto.StatusTooLarge, "AUTH or STOR message over %d bytes", maxStorMessage))
				return
			}
			if !c.command(ctx, msg) {
				return
			}
			continue
		}
		if c.u.Done() {
			c.fail("DATA", proto.Errorf(proto.StatusProtocol, "the upload is complete: no more blocks"))
			return
		}
		n, err := c.block(ctx, typ, rd)
		if err != nil {
			c.u.Abort(err)
			c.fail("DATA", asProtoError(err))
			return
		}
		if !c.reply(storReply{Type: "DATA", Code: http.StatusOK, BytesRead: &n}) {
			c.u.Abort(nil)
			return
		}
		if c.u.Offset() == c.u.Size() {
			if err := c.u.Finish(); err != nil {
				c.fail("DATA", asProtoError(err))
				return
			}
			c.log.Info("STOR upload complete", "item", c.u.id, "size", c.u.Size())
		}
	}
}

// command handles an AUTH or STOR message; it reports whether the
// connection goes on.
func (c *storConn) command(ctx context.Context, msg []byte) bool {
	verb, body, _ := strings.Cut(string(msg), ":")
	verb = strings.ToUpper(strings.TrimSpace(verb))
	switch verb {
	case "AUTH":
		if c.auth != nil {
			c.fail("AUTH", proto.Errorf(proto.StatusProtocol, "AUTH sent twice"))
			return false
		}
		var a struct {
			Login    string `json:"login"`
			Password string `json:"password"`
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			c.fail("AUTH", proto.Errorf(proto.StatusMalformed, "AUTH is not a JSON object with login and password: %v", err))
			return false
		}
		c.auth = map[string]string{"login": a.Login, "password": a.Password}
		if err := c.s.checkUpload(ctx, uploadSpec{Protocol: proto.UploadSTOR, Size: -1, Auth: c.auth, Client: c.client}); err != nil {
			c.fail("AUTH", asProtoError(err))
			return false
		}
		return c.reply(storReply{Type: "AUTH", Code: http.StatusOK, Message: "authenticated"})
	case "STOR":
		var req storRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			c.fail("STOR", proto.Errorf(proto.StatusMalformed, "STOR is not a JSON object: %v", err))
			return false
		}
		switch {
		case req.Size == nil || *req.Size < 0:
			c.fail("STOR", proto.Errorf(proto.StatusMalformed, "STOR needs a size, a number of bytes"))
			return false
		case req.Type != "" && req.Type != "base64" && req.Type != "binary":
			c.fail("STOR", proto.Errorf(proto.StatusMalformed, "STOR type %.20q is neither base64 nor binary", req.Type))
			return false
		}
		c.b64 = req.Type != "binary"
		name := path.Base(strings.ReplaceAll(req.Filename, "\\", "/"))
		if name == "." || name == "/" {
			name = ""
		}
		ctype := mime.TypeByExtension(path.Ext(name))
		u, err := c.s.createUpload(ctx, uploadSpec{
			Protocol: proto.UploadSTOR, Name: name, MIME: ctype, Size: *req.Size,
			Auth: c.auth, Meta: storParameters(req.Parameters), Client: c.client,
		})
		if err != nil {
			c.fail("STOR", asProtoError(err))
			return false
		}
		c.u = u
		in := u.Info()
		ok := c.reply(storReply{
			Type: "STOR", Code: http.StatusOK, Message: "ready to receive " + strconv.FormatInt(*req.Size, 10) + " bytes",
			Share: in.ShareURL, URL: in.DownloadURL, Expires: in.Expires.UTC().Format(time.RFC3339),
		})
		if !ok {
			u.Abort(nil)
			return false
		}
		c.log.Info("STOR upload started", "item", u.id, "size", *req.Size, "base64", c.b64)
		if *req.Size == 0 {
			u.Finish()
		}
		return true
	}
	c.fail("STOR", proto.Errorf(proto.StatusProtocol, "expected AUTH: or STOR:, got %.20q", verb))
	return false
}

// block reads one block and appends it to the upload; it returns the
// decoded size.
func (c *storConn) block(ctx context.Context, typ int, rd io.Reader) (int, error) {
	max := c.s.cfg.StorMaxBlock
	if typ == websocket.BinaryMessage {
		b, err := c.read(rd, max)
		if err != nil {
			return 0, err
		}
		_, err = c.u.Write(ctx, b)
		return len(b), err
	}
	enc, err := c.read(rd, base64.StdEncoding.EncodedLen(max)+4)
	if err != nil {
		return 0, err
	}
	enc = bytes.TrimSpace(enc)
	// Decode in place: the decoded bytes never overtake the encoded
	// ones.
	dec := enc[:base64.StdEncoding.DecodedLen(len(enc))]
	n, err := base64.StdEncoding.Decode(dec, enc)
	if err != nil {
		n, err = base64.RawStdEncoding.Decode(dec, bytes.TrimRight(enc, "="))
		if err != nil {
			return 0, proto.Errorf(proto.StatusMalformed, "block is not base64: %v", err)
		}
	}
	if n > max {
		return 0, proto.Errorf(proto.StatusTooLarge, "block of %d bytes over the limit of %d", n, max)
	}
	_, err = c.u.Write(ctx, dec[:n])
	return n, err
}

// read reads a whole frame of at most max bytes into the connection's
// buffer, which the next read reuses.
func (c *storConn) read(rd io.Reader, max int) ([]byte, error) {
	c.buf.Reset()
	if _, err := c.buf.ReadFrom(io.LimitReader(rd, int64(max)+1)); err != nil {
		return nil, proto.Errorf(proto.StatusSourceError, "read block: %v", err)
	}
	if c.buf.Len() > max {
		return nil, proto.Errorf(proto.StatusTooLarge, "block over the limit of %d bytes", c.s.cfg.StorMaxBlock)
	}
	return c.buf.Bytes(), nil
}

// reply writes one JSON reply; it reports whether the write went out.
func (c *storConn) reply(m storReply) bool {
	b, _ := json.Marshal(m)
	c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b) == nil
}

// fail replies an error of type typ and closes the connection with a
// close code that carries its status.
func (c *storConn) fail(typ string, e *proto.Error) {
	c.s.stats.refused("stor_" + strings.ToLower(typ))
	c.log.Info("STOR refused", "type", typ, "status", e.Status, "reason", e.Msg)
	c.reply(storReply{Type: typ, Code: e.Status.HTTPStatus(), Message: e.Error()})
	reason := e.Error()
	if len(reason) > 120 { // a close frame's reason fits in 123 bytes
		reason = reason[:120]
	}
	code := e.Status.CloseCode()
	if e.Status == proto.StatusTooLarge {
		code = websocket.CloseMessageTooBig
	}
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(c.s.cfg.WriteTimeout))
}

// storParameters flattens a STOR message's parameters to strings for the
// auth webhook: an object's values (strings as they are, others as JSON),
// or the whole value under "parameters".
func storParameters(raw json.RawMessage) map[string]string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return map[string]string{"parameters": string(raw)}
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		var str string
		if json.Unmarshal(v, &str) == nil {
			out[k] = str
		} else {
			out[k] = string(v)
		}
	}
	return out
}

// readAtMost reads all of r, failing past max bytes.
func readAtMost(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, errors.New("too large")
	}
	return b, nil
}
