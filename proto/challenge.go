package proto

import (
	"strings"
)

// The URL challenge. A relay's http_url is used for redirects only once
// the rendezvous has proved that the URL reaches that relay:
//
//	rendezvous -> GET {http_url}/v1/challenge?n=NONCE
//	relay      <- 200 {"peer": ID, "sig": base64(signature)}
//
// NONCE is 32 lowercase hex digits (128 random bits) chosen by the
// rendezvous. The relay signs ChallengeMessage(NONCE, its peer id, its own
// public URL) with its libp2p key; the rendezvous verifies it with the key
// of the peer id on the register connection and the http_url registered.
// The domain string keeps the signature from being valid for anything else
// the relay's key signs (relay records, libp2p handshakes).

// ChallengeDomain prefixes the bytes a challenge signature covers.
const ChallengeDomain = "meshup relay url challenge v1\n"

// ChallengePath is the relay's challenge route.
const ChallengePath = "/v1/challenge"

// MaxChallengeResponse bounds the body of a challenge response, in bytes.
const MaxChallengeResponse = 4096

// ChallengeResponse is the JSON body of a relay's answer.
type ChallengeResponse struct {
	Peer string `json:"peer"`
	Sig  []byte `json:"sig"`
}

// ChallengeMessage returns the bytes a relay signs: the domain, the nonce,
// the relay's peer id and its base URL (without a trailing slash), each on
// its own line.
func ChallengeMessage(nonce, peer, url string) []byte {
	return []byte(ChallengeDomain + nonce + "\n" + peer + "\n" + strings.TrimRight(url, "/"))
}

// ValidNonce reports whether n is a challenge nonce: 32 lowercase hex
// digits.
func ValidNonce(n string) bool {
	if len(n) != 32 {
		return false
	}
	for _, c := range n {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
