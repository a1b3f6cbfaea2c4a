package proxy

import (
	"cmp"
	"crypto/tls"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/sidecar/egress"
)

// conn is one live proxied connection. The fields set before it is
// published (established) are read-only afterwards; byte counters are
// atomic.
type conn struct {
	id        uint64
	direction string
	src       string // the downstream peer
	dst       string // the original destination
	start     time.Time
	// by is when the client's part of establishing the connection must be
	// done (Config.HandshakeTimeout from accept, wall time).
	by time.Time

	mu          sync.Mutex
	established bool
	chain       string
	cluster     string
	upstream    string // the dialled address
	tls         *TLSInfo
	// egressReason is why an egress connection a rule allowed was denied
	// or flagged anyway (bindName); its audit event carries it.
	egressReason string
	// nameUnknown is the decision nameUnknown took for an egress
	// connection without a name; its audit event reports it.
	nameUnknown *egress.Decision
	closers     []net.Conn
	kick        func()     // wakes the connection's parked flows; before closers close
	watch       *idleWatch // once established: Config.IdleTimeout

	toUp, toDown atomic.Int64
}

// TLSInfo describes the mTLS leg of a connection (api/admin).
type TLSInfo = admin.TLSInfo

func newTLSInfo(st tls.ConnectionState, peerID string) *TLSInfo {
	ti := &TLSInfo{PeerID: peerID, Version: tls.VersionName(st.Version),
		Cipher: tls.CipherSuiteName(st.CipherSuite), ALPN: st.NegotiatedProtocol}
	if len(st.PeerCertificates) > 0 {
		ti.PeerNotAfter = st.PeerCertificates[0].NotAfter.UTC()
	}
	return ti
}

// track adds c to what drain force-closes.
func (c *conn) track(nc net.Conn) {
	c.mu.Lock()
	c.closers = append(c.closers, nc)
	c.mu.Unlock()
}

func (c *conn) closeAll() {
	c.mu.Lock()
	cs := slices.Clone(c.closers)
	kick := c.kick
	c.mu.Unlock()
	if kick != nil {
		kick()
	}
	for _, nc := range cs {
		nc.Close()
	}
}

// ConnInfo is one entry of the admin endpoint /connections (api/admin): a
// connection the proxy is forwarding.
type ConnInfo = admin.ConnInfo

// registry holds every open connection.
type registry struct {
	next  atomic.Uint64
	mu    sync.Mutex
	conns map[uint64]*conn
	empty chan struct{} // closed and replaced as the registry empties; see wait
}

func newRegistry() *registry { return &registry{conns: map[uint64]*conn{}} }

func (r *registry) add(c *conn) {
	c.id = r.next.Add(1)
	r.mu.Lock()
	r.conns[c.id] = c
	r.mu.Unlock()
}

func (r *registry) remove(c *conn) {
	r.mu.Lock()
	delete(r.conns, c.id)
	if len(r.conns) == 0 && r.empty != nil {
		close(r.empty)
		r.empty = nil
	}
	r.mu.Unlock()
}

func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// emptied returns a channel closed once no connection is open.
func (r *registry) emptied() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	if len(r.conns) == 0 {
		close(ch)
		return ch
	}
	if r.empty == nil {
		r.empty = make(chan struct{})
	}
	return r.empty
}

func (r *registry) all() []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*conn, 0, len(r.conns))
	for _, c := range r.conns {
		out = append(out, c)
	}
	return out
}

// snapshot lists the established connections, oldest first.
func (r *registry) snapshot() []ConnInfo {
	var out []ConnInfo
	for _, c := range r.all() {
		c.mu.Lock()
		if c.established {
			out = append(out, ConnInfo{ID: c.id, Direction: c.direction, Source: c.src, Destination: c.dst,
				Chain: c.chain, Cluster: c.cluster, Upstream: c.upstream, MTLS: c.tls != nil, TLSInfo: c.tls,
				BytesIn: c.toUp.Load(), BytesOut: c.toDown.Load(), Start: c.start.UTC()})
		}
		c.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
