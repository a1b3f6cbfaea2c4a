package proxy

import (
	"net/netip"
	"sync"

	"github.com/weftmesh/weft/api/admin"
	wm "github.com/weftmesh/weft/internal/metrics"
)

// Outcomes of weft_sidecar_inbound_peer_connections_total (api/admin
// holds the contract with its reader, weftctl dashboard).
const (
	peerMTLS      = admin.PeerMTLS
	peerTLS       = admin.PeerTLS
	peerPlaintext = admin.PeerPlaintext
	peerRefused   = admin.PeerRefused
)

// A refused client is named by its address, never by the SPIFFE ID its
// certificate claims: TLS 1.3 hands the certificate to the authorizer
// before it checks the client's signature, so anyone can present another
// workload's certificate (every sidecar shows its own to whoever
// connects) and be refused under that name. Only a completed handshake
// proves the ID.

// peerOther is the peer label past a budget.
const peerOther = admin.PeerOther

// maxPeerSeries bounds the peers of each budget: verified SPIFFE IDs
// (mtls), and source addresses (every other outcome). A client chooses
// its source address, so an unbounded label would let one app grow every
// scrape of this sidecar, and its memory, without limit: past this many
// distinct peers in a budget the new ones are counted as peer "other".
// The budgets are separate so that addresses, however many, never crowd
// out the mesh's own verified workloads.
const maxPeerSeries = 512

// peerCounter counts inbound connections by outcome and peer.
type peerCounter struct {
	vec  *wm.CounterVec
	mu   sync.Mutex
	seen [2]map[[2]string]bool // [verified IDs, addresses]
}

func newPeerCounter(reg *wm.Registry) (*peerCounter, error) {
	vec, err := reg.NewCounterVec(admin.PeerConnectionsMetric,
		"Inbound connections by outcome (mtls: handshake completed, client SVID verified; tls: TLS without a client certificate; plaintext: accepted without TLS; refused) and peer (the verified SPIFFE ID for mtls, else the source address; \"other\" past 512 distinct IDs or 512 addresses).",
		"outcome", "peer")
	if err != nil {
		return nil, err
	}
	return &peerCounter{vec: vec, seen: [2]map[[2]string]bool{{}, {}}}, nil
}

// verified counts a connection whose handshake completed with the
// client's SVID verified as id.
func (c *peerCounter) verified(id string) { c.count(0, peerMTLS, id) }

// byAddress counts a connection of outcome from src ("ip:port", of which
// the address is kept).
func (c *peerCounter) byAddress(outcome, src string) {
	peer := src
	if ap, err := netip.ParseAddrPort(src); err == nil {
		peer = ap.Addr().Unmap().WithZone("").String()
	}
	c.count(1, outcome, peer)
}

func (c *peerCounter) count(budget int, outcome, peer string) {
	k := [2]string{outcome, peer}
	c.mu.Lock()
	if seen := c.seen[budget]; !seen[k] {
		if len(seen) < maxPeerSeries {
			seen[k] = true
		} else {
			peer = peerOther
		}
	}
	c.mu.Unlock()
	c.vec.With(outcome, peer).Inc()
}
