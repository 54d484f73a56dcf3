// Package nodeflag registers the flags of the libp2p node that the relay
// and the rendezvous both run: listen addresses, port mapping, stream
// limits and the circuit relay service's limits.
package nodeflag

import (
	"flag"
	"strings"

	"github.com/meshup/meshup/cmd/internal/cliconf"
	"github.com/meshup/meshup/mesh"
)

// Flags holds the node flags of one binary.
type Flags struct {
	P2P      string // comma-separated listen multiaddrs
	Portmap  bool
	Streams  int   // libp2p streams per peer and protocol
	Window   int   // yamux receive window per stream, bytes
	Memory   int64 // bytes the node may reserve, all peers together; 0: go-libp2p's default
	Circuits mesh.RelayService
}

// Register adds the node flags to fs; who names the binary in the help
// ("this relay", "the rendezvous").
func (f *Flags) Register(fs *flag.FlagSet, who string) {
	fs.StringVar(&f.P2P, "p2p", strings.Join(mesh.DefaultListenAddrs, ","), "comma-separated libp2p listen `multiaddrs`")
	fs.BoolVar(&f.Portmap, "nat-portmap", false, "ask the home router for a port mapping with UPnP or NAT-PMP")
	fs.IntVar(&f.Streams, "max-streams-per-peer", mesh.DefaultMaxStreamsPerPeer, "limit on the libp2p streams of one protocol one peer may have open with "+who+", per direction (tunnelled connections into one relay are streams)")
	cliconf.IntSizeVar(fs, &f.Window, "max-stream-window", mesh.DefaultMaxStreamWindow, "`bytes` one libp2p stream may have in flight towards "+who+", unread (yamux receive window)")
	cliconf.SizeVar(fs, &f.Memory, "mesh-memory", 0, "`bytes` the libp2p node of "+who+" may hold for its connections and unread stream windows, all peers together, outside any --budget; a peer whose new stream does not fit loses its connection (0: go-libp2p's default, an eighth of the machine's memory)")
	fs.DurationVar(&f.Circuits.CircuitDuration, "circuit-duration", mesh.DefaultCircuitDuration, "limit on the life of one relayed connection between relays")
	cliconf.SizeVar(fs, &f.Circuits.CircuitData, "circuit-data", mesh.DefaultCircuitData, "limit on the `bytes` relayed in each direction of one relayed connection")
	fs.IntVar(&f.Circuits.MaxReservations, "max-reservations", mesh.DefaultMaxReservations, "limit on circuit reservations held by relays behind NAT")
	fs.IntVar(&f.Circuits.MaxCircuits, "max-circuits", mesh.DefaultMaxCircuits, "limit on relayed connections per relay")
}

// ListenAddrs returns the --p2p multiaddrs as a list.
func (f *Flags) ListenAddrs() []string { return cliconf.SplitList(f.P2P) }
