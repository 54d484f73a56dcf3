package rendezvous

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/meshup/meshup/proto"
)

// The auth webhook (issue 11): the application's say. With
// Config.AuthWebhook set, the rendezvous POSTs a JSON description
// (webhookRequest) to it before an item is published (control Publish of
// a new item), before an upload is created (any legacy protocol, through
// the relay that receives it: proto.Hold), and before an item is read
// (GET /v1/items/{id}, before the redirect). A 2xx answer allows, and may
// carry a JSON body (webhookReply) that attaches metadata or lowers the
// limits of an upload; any other status, a timeout
// (Config.AuthWebhookTimeout) or an unreachable webhook denies: it fails
// closed, and the client is told why.
//
// Example request body:
//
//	{
//	  "operation": "upload",
//	  "item": {"id": "", "name": "cat.mp4", "mime": "video/mp4", "size": 1048576, "kind": "file", "protocol": "put"},
//	  "client": {"addr": "192.0.2.7:51234"},
//	  "credentials": {"authorization": "Bearer abc"},
//	  "metadata": {"filename": "cat.mp4"},
//	  "time": "2026-12-02T11:00:00Z"
//	}
//
// Example answer (every field optional):
//
//	{"metadata": {"user": "42"}, "max_size": 10485760, "expires_in": 3600}

// Webhook operations.
const (
	WebhookPublish = "publish"
	WebhookUpload  = "upload"
	WebhookRead    = "read"
)

// DefaultAuthWebhookTimeout bounds one call of the auth webhook.
const DefaultAuthWebhookTimeout = 5 * time.Second

// maxWebhookReply bounds the body of a webhook's answer that is read.
const maxWebhookReply = 64 << 10

// Rejection reasons of the auth webhook (see counters.reject).
const (
	RejectWebhookDenied      = "webhook_denied"      // the webhook answered non-2xx
	RejectWebhookUnreachable = "webhook_unreachable" // no answer: timeout, connection refused, bad reply
)

// webhookRequest is the JSON body POSTed to the auth webhook.
type webhookRequest struct {
	Operation   string            `json:"operation"` // publish, upload or read
	Item        webhookItem       `json:"item"`
	Client      webhookClient     `json:"client"`
	Credentials map[string]string `json:"credentials,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Time        string            `json:"time"` // RFC 3339
}

// webhookItem describes the item of a webhook request. ID is empty for an
// upload not created yet; Size is -1 while unknown.
type webhookItem struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	MIME     string `json:"mime"`
	Size     int64  `json:"size"`
	Kind     string `json:"kind"`
	Protocol string `json:"protocol,omitempty"` // the upload protocol, for uploads and held items
	Enc      string `json:"enc,omitempty"`      // end-to-end encryption, if any
}

// webhookClient is who asks.
type webhookClient struct {
	Addr string `json:"addr"`
}

// webhookReply is the optional JSON body of a 2xx answer.
type webhookReply struct {
	Metadata  map[string]string `json:"metadata,omitempty"`
	MaxSize   int64             `json:"max_size,omitempty"`   // bytes; lowers the upload's limit
	ExpiresIn int64             `json:"expires_in,omitempty"` // seconds; shortens the upload's expiry
}

// askWebhook asks the auth webhook about req. Without a webhook it allows
// everything. A denial is a *proto.Error: StatusForbidden when the webhook
// said no, StatusUnavailable when it could not be asked.
func (s *Server) askWebhook(ctx context.Context, req webhookRequest) (webhookReply, *proto.Error) {
	var reply webhookReply
	if s.cfg.AuthWebhook == "" {
		return reply, nil
	}
	s.stats.webhookCalls.Add(1)
	req.Time = s.cfg.Now().UTC().Format(time.RFC3339)
	body, err := json.Marshal(req)
	if err != nil {
		return reply, proto.Errorf(proto.StatusInternal, "auth webhook: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AuthWebhookTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.AuthWebhook, bytes.NewReader(body))
	if err != nil {
		return reply, s.webhookUnreachable(req, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("User-Agent", "meshup-rendezvous")
	resp, err := s.webhook.Do(hr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v", s.cfg.AuthWebhookTimeout)
		}
		return reply, s.webhookUnreachable(req, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxWebhookReply))
	if err != nil {
		return reply, s.webhookUnreachable(req, fmt.Errorf("read answer: %w", err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.stats.reject(RejectWebhookDenied)
		why := strings.TrimSpace(string(data))
		if len(why) > 200 {
			why = why[:200]
		}
		s.log.Info("auth webhook denied", "operation", req.Operation, "item", req.Item.ID, "client", req.Client.Addr, "status", resp.StatusCode)
		if why != "" {
			return reply, proto.Errorf(proto.StatusForbidden, "denied by the application (auth webhook answered %d: %s)", resp.StatusCode, why)
		}
		return reply, proto.Errorf(proto.StatusForbidden, "denied by the application (auth webhook answered %d)", resp.StatusCode)
	}
	if len(bytes.TrimSpace(data)) > 0 && strings.HasPrefix(strings.TrimSpace(resp.Header.Get("Content-Type")), "application/json") {
		if err := json.Unmarshal(data, &reply); err != nil {
			return webhookReply{}, s.webhookUnreachable(req, fmt.Errorf("answer is not the JSON expected: %w", err))
		}
	}
	if reply.MaxSize < 0 || reply.ExpiresIn < 0 {
		return webhookReply{}, s.webhookUnreachable(req, errors.New("answer has a negative max_size or expires_in"))
	}
	return reply, nil
}

// webhookUnreachable is the denial when the webhook could not be asked:
// fail closed.
func (s *Server) webhookUnreachable(req webhookRequest, err error) *proto.Error {
	s.stats.reject(RejectWebhookUnreachable)
	s.log.Warn("auth webhook unreachable: denying", "operation", req.Operation, "err", err)
	return proto.Errorf(proto.StatusUnavailable, "denied: the application's auth webhook could not be asked (%v)", err)
}
