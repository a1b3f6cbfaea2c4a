package proxy

import (
	"net/netip"
	"sync"

	wm "github.com/weftmesh/weft/internal/metrics"
)

// Outcomes of weft_sidecar_inbound_peer_connections_total: what this
// sidecar verified of a connection it accepted or refused. weftctl
// dashboard draws the mesh graph's edges from them.
const (
	peerMTLS      = "mtls"      // the client's X.509-SVID verified; peer is its SPIFFE ID
	peerTLS       = "tls"       // TLS without a client certificate (a chain that does not require one); peer is the source address
	peerPlaintext = "plaintext" // accepted without TLS (a PERMISSIVE chain); peer is the source address
	peerRefused   = "refused"   // refused; peer is the SPIFFE ID when the client's SVID verified (denied by policy), else the source address
)

// peerOther is the peer label once maxPeerSeries is reached.
const peerOther = "other"

// maxPeerSeries bounds the series of the peer counter. A client chooses its
// source address (and a refused one any SPIFFE ID another trust domain's
// bundle vouches for), so an unbounded label would let one app grow every
// scrape of this sidecar, and its memory, without limit: past this many
// distinct (outcome, peer) pairs the new ones are counted as peer "other".
const maxPeerSeries = 512

// peerCounter counts inbound connections by outcome and peer.
type peerCounter struct {
	vec  *wm.CounterVec
	mu   sync.Mutex
	seen map[[2]string]bool
}

func newPeerCounter(reg *wm.Registry) (*peerCounter, error) {
	vec, err := reg.NewCounterVec("weft_sidecar_inbound_peer_connections_total",
		"Inbound connections by outcome (mtls: client SVID verified; tls: TLS without a client certificate; plaintext: accepted without TLS; refused) and peer (the verified SPIFFE ID, else the source address; \"other\" past 512 distinct peers).",
		"outcome", "peer")
	if err != nil {
		return nil, err
	}
	return &peerCounter{vec: vec, seen: map[[2]string]bool{}}, nil
}

// count counts one connection of outcome from peer: a SPIFFE ID when one
// was verified, else src ("ip:port", of which the address is kept).
func (c *peerCounter) count(outcome, id, src string) {
	peer := id
	if peer == "" {
		peer = src
		if ap, err := netip.ParseAddrPort(src); err == nil {
			peer = ap.Addr().Unmap().WithZone("").String()
		}
	}
	k := [2]string{outcome, peer}
	c.mu.Lock()
	if !c.seen[k] {
		if len(c.seen) < maxPeerSeries {
			c.seen[k] = true
		} else {
			peer = peerOther
		}
	}
	c.mu.Unlock()
	c.vec.With(outcome, peer).Inc()
}
