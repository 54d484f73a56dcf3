package relay

import (
	"encoding/json"
	"net/http"

	"github.com/meshup/meshup/proto"
)

// handleChallenge answers GET /v1/challenge?n=NONCE: the rendezvous's proof
// that the relay's public URL reaches this relay (see proto/challenge.go).
// It signs the nonce, the relay's peer id and its PublicURL with the
// relay's libp2p key.
func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request) {
	n := r.URL.Query().Get("n")
	if !proto.ValidNonce(n) {
		writeError(w, proto.Errorf(proto.StatusMalformed, "challenge nonce must be 32 lowercase hex digits"))
		return
	}
	sig, err := s.cfg.Node.Sign(proto.ChallengeMessage(n, s.id, s.cfg.PublicURL))
	if err != nil {
		s.log.Warn("challenge not signed", "err", err)
		writeError(w, proto.Errorf(proto.StatusInternal, "challenge not signed"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(proto.ChallengeResponse{Peer: s.id, Sig: sig})
}
