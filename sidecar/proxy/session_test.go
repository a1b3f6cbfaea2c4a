package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// ticketCache is a client session cache that counts the sessions a server
// handed out (a TLS 1.3 NewSessionTicket, a TLS 1.2 ticket).
type ticketCache struct {
	tls.ClientSessionCache
	tickets atomic.Int64
}

func newTicketCache() *ticketCache {
	return &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.tickets.Add(1)
	}
	c.ClientSessionCache.Put(key, cs)
}

// resumingClient is an mTLS client as svid that keeps and offers sessions
// in cache and counts how often it verified the server's certificate.
func resumingClient(svid *x509svid.SVID, ca *certs.CA, server spiffeid.ID, cache tls.ClientSessionCache, verified *atomic.Int64) *tls.Config {
	cfg := tlsconfig.MTLSClientConfig(svid, ca.Bundle(), tlsconfig.AuthorizeID(server))
	verify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		verified.Add(1)
		return verify(raw, chains)
	}
	cfg.ClientSessionCache = cache
	cfg.ServerName = "echo.demo.svc.cluster.local" // one cache key for every connection
	return cfg
}

// dialTLS connects to addr with cfg and round-trips msg, which also makes
// the client read whatever session ticket the server sent after the
// handshake. The connection stays open until the test ends.
func dialTLS(t *testing.T, addr string, cfg *tls.Config, msg []byte) tls.ConnectionState {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, cfg)
	t.Cleanup(func() { tc.Close() })
	roundTrip(t, tc, msg)
	return tc.ConnectionState()
}

// TestInboundIssuesNoSessionTickets: the inbound side gives out no session
// to resume, so every connection is authenticated and authorized in full
// (a resumed TLS 1.3 session skips the certificate and the callback that
// verifies and authorizes it). The server config is TLS 1.3 only; TLS 1.2
// is refused (TestInboundRefusals).
func TestInboundIssuesNoSessionTickets(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	cache := newTicketCache()
	var verified atomic.Int64
	cfg := resumingClient(testutil.SVID(t, mp.ca, workloadID("shop", "cart"), time.Hour), mp.ca, mp.b.id, cache, &verified)
	for i, msg := range []string{"first", "second"} {
		st := dialTLS(t, mp.b.inboundAddr().String(), cfg, []byte(msg))
		if st.DidResume {
			t.Fatalf("connection %d resumed a session", i+1)
		}
		if st.Version != tls.VersionTLS13 || len(st.PeerCertificates) == 0 {
			t.Fatalf("connection %d: %s, %d peer certificates", i+1, tls.VersionName(st.Version), len(st.PeerCertificates))
		}
	}
	if n := cache.tickets.Load(); n != 0 {
		t.Fatalf("the sidecar issued %d session ticket(s): a later connection could resume without being authenticated and authorized", n)
	}
	if n := verified.Load(); n != 2 {
		t.Fatalf("client verified the sidecar's certificate %d times, want 2", n)
	}
	// The sidecar verified and authorized the client on each connection:
	// the peer ID is set by that callback, which a resumption skips.
	mp.b.waitCounter(2, "handshakes", inbound)
	conns := mp.b.connections()
	if len(conns) != 2 {
		t.Fatalf("B's connections: %+v", conns)
	}
	for _, c := range conns {
		if !c.MTLS || c.PeerID != workloadID("shop", "cart").String() {
			t.Fatalf("B's connection %+v: peer not authenticated in full", c)
		}
	}

	// The instrument works: the same client against a TLS server that
	// keeps tickets on gets one and resumes with it.
	server := tlsconfig.MTLSServerConfig(testutil.SVID(t, mp.ca, mp.b.id, time.Hour), mp.ca.Bundle(), tlsconfig.AuthorizeAny())
	ctl := startTLSEcho(t, server)
	ctlCache := newTicketCache()
	var ctlVerified atomic.Int64
	cfg = resumingClient(testutil.SVID(t, mp.ca, workloadID("shop", "cart"), time.Hour), mp.ca, mp.b.id, ctlCache, &ctlVerified)
	dialTLS(t, ctl.addr.String(), cfg, []byte("first"))
	if st := dialTLS(t, ctl.addr.String(), cfg, []byte("second")); !st.DidResume || ctlCache.tickets.Load() == 0 {
		t.Fatalf("control: a server with tickets on: resumed %v, %d tickets", st.DidResume, ctlCache.tickets.Load())
	}
}

// tlsEcho is a TLS echo server on loopback that records each connection's
// state as the server saw it.
type tlsEcho struct {
	addr   netip.AddrPort
	mu     sync.Mutex
	states []tls.ConnectionState
}

func startTLSEcho(t *testing.T, cfg *tls.Config) *tlsEcho {
	t.Helper()
	s := &tlsEcho{}
	s.addr = testutil.ServeTCP(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		defer tc.Close()
		if err := tc.Handshake(); err != nil {
			return
		}
		s.mu.Lock()
		s.states = append(s.states, tc.ConnectionState())
		s.mu.Unlock()
		_, _ = io.Copy(tc, tc)
	})
	return s
}

func (s *tlsEcho) seen() []tls.ConnectionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tls.ConnectionState(nil), s.states...)
}

// TestOutboundOffersNoResumption: the outbound side keeps no sessions, so
// even a peer that issues tickets and resumes (this one does) sees a full
// handshake, with A's certificate, each time, and A verifies the peer's
// SPIFFE ID each time.
func TestOutboundOffersNoResumption(t *testing.T) {
	ca := testutil.NewCA(t, td, nil)
	echoID := workloadID("demo", "echo")
	peer := startTLSEcho(t, tlsconfig.MTLSServerConfig(testutil.SVID(t, ca, echoID, time.Hour), ca.Bundle(), tlsconfig.AuthorizeAny()))
	a := startPod(t, ca, workloadID("shop", "frontend"))
	a.cfg.Store(meshConfig([]spiffeid.ID{echoID}, []model.Endpoint{{Addr: peer.addr}}, nil, false))

	for _, msg := range []string{"first", "second", "third"} {
		roundTrip(t, a.dialOutbound(netip.AddrPortFrom(serviceIP, 80)), []byte(msg))
	}
	states := peer.seen()
	if len(states) != 3 {
		t.Fatalf("peer saw %d handshakes, want 3", len(states))
	}
	for i, st := range states {
		if st.DidResume {
			t.Fatalf("connection %d: the sidecar resumed a session with its peer", i+1)
		}
		if len(st.PeerCertificates) == 0 {
			t.Fatalf("connection %d: no client certificate", i+1)
		}
	}
	a.waitCounter(3, "handshakes", outbound)
	for _, c := range a.connections() {
		if !c.MTLS || c.PeerID != echoID.String() {
			t.Fatalf("A's connection %+v: peer not verified in full", c)
		}
	}

	// Control: the peer does resume for a client that offers a session.
	var verified atomic.Int64
	cfg := resumingClient(testutil.SVID(t, ca, workloadID("shop", "cart"), time.Hour), ca, echoID, newTicketCache(), &verified)
	dialTLS(t, peer.addr.String(), cfg, []byte("first"))
	if st := dialTLS(t, peer.addr.String(), cfg, []byte("second")); !st.DidResume {
		t.Fatal("control: the peer did not resume an offered session")
	}
}
