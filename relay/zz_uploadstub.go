package relay

// TEMPORARY: signatures of the upload core (branch uploads), removed when
// it is merged.

import (
	"context"
	"time"

	"github.com/meshup/meshup/proto"
)

type uploadSpec struct {
	Protocol, Name, MIME string
	Size                 int64
	Auth, Meta           map[string]string
	Client               string
}

type uploadInfo struct {
	ID                    proto.ItemID
	ShareURL, DownloadURL string
	Expires               time.Time
	Size, Offset, MaxSize int64
	Meta                  map[string]string
}

type upload struct{ key string }

func (s *Server) createUpload(ctx context.Context, spec uploadSpec) (*upload, error) {
	return nil, nil
}
func (s *Server) upload(key string) (*upload, bool)                 { return nil, false }
func (u *upload) Key() string                                      { return u.key }
func (u *upload) Info() uploadInfo                                 { return uploadInfo{} }
func (u *upload) Offset() int64                                    { return 0 }
func (u *upload) Size() int64                                      { return 0 }
func (u *upload) Done() bool                                       { return false }
func (u *upload) Err() error                                       { return nil }
func (u *upload) SetSize(n int64) error                            { return nil }
func (u *upload) Write(ctx context.Context, p []byte) (int, error) { return 0, nil }
func (u *upload) Finish() error                                    { return nil }
func (u *upload) Abort(reason error)                               {}
func (u *upload) Terminate()                                       {}

var _ = func() int { return 0 }

const stubUploadSocketIO, stubUploadTUS = "socketio", "tus"
