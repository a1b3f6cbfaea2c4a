package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// refusedByB dials B's inbound listener directly with a TLS client using
// svid (nil: no client certificate) and expects the connection to be
// refused before any byte reaches the app.
func refusedByB(t *testing.T, mp *meshPair, svid *x509svid.SVID, maxVersion uint16) {
	t.Helper()
	var cfg *tls.Config
	if svid != nil {
		cfg = tlsconfig.MTLSClientConfig(svid, mp.ca.Bundle(), tlsconfig.AuthorizeAny())
	} else {
		cfg = tlsconfig.TLSClientConfig(mp.ca.Bundle(), tlsconfig.AuthorizeAny())
	}
	cfg.MaxVersion = maxVersion
	c, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	// TLS 1.3 clients finish their side of the handshake before the server
	// has checked their certificate: the refusal arrives as an alert on the
	// first read.
	if err := tc.Handshake(); err == nil {
		tc.Write([]byte("secret"))
		if n, err := tc.Read(make([]byte, 64)); err == nil {
			t.Fatalf("read %d bytes through a connection that should be refused", n)
		} else {
			t.Logf("refused: %v", err)
		}
	} else {
		t.Logf("refused in handshake: %v", err)
	}
	if n := mp.app.accepted.Load(); n != 0 {
		t.Fatalf("app accepted %d connections", n)
	}
}

func TestInboundRefusals(t *testing.T) {
	deny := []model.RBACFilter{
		{Action: model.RBACDeny, Policies: []model.RBACPolicy{{Name: "demo/deny-batch", Principals: []model.Principal{{Exact: workloadID("batch", "job").String()}}}}},
		{Action: model.RBACAllow, Policies: []model.RBACPolicy{{Name: "demo/allow-shop", Principals: []model.Principal{{Prefix: "spiffe://cluster.local/ns/shop/sa/"}}}}},
		{Action: model.RBACAllow, Shadow: true, Policies: []model.RBACPolicy{{Name: "demo/audit-frontend-only", Principals: []model.Principal{{Exact: workloadID("shop", "frontend").String()}}}}},
	}
	other := testutil.NewCA(t, td, nil) // same trust domain name, another root
	past := testutil.NewCA(t, td, fixedClock(time.Now().Add(-48*time.Hour)))
	tests := []struct {
		name   string
		svid   func(mp *meshPair) *x509svid.SVID
		max    uint16
		reason string
		denied string // authz_denials_total policy label
	}{
		{name: "no client certificate", svid: func(*meshPair) *x509svid.SVID { return nil }, reason: reasonNoClientCert},
		{name: "certificate from another CA", svid: func(*meshPair) *x509svid.SVID {
			return testutil.SVID(t, other, workloadID("shop", "frontend"), time.Hour)
		}, reason: reasonUnknownCA},
		{name: "expired certificate", svid: func(*meshPair) *x509svid.SVID {
			return testutil.SVID(t, past, workloadID("shop", "frontend"), time.Hour)
		}, reason: reasonExpired},
		{name: "identity not allowed by policy", svid: func(mp *meshPair) *x509svid.SVID {
			return testutil.SVID(t, mp.ca, workloadID("payments", "api"), time.Hour)
		}, reason: reasonAuthzDenied, denied: ""},
		{name: "identity denied by policy", svid: func(mp *meshPair) *x509svid.SVID {
			return testutil.SVID(t, mp.ca, workloadID("batch", "job"), time.Hour)
		}, reason: reasonAuthzDenied, denied: "demo/deny-batch"},
		{name: "TLS 1.2", svid: func(mp *meshPair) *x509svid.SVID {
			return testutil.SVID(t, mp.ca, workloadID("shop", "frontend"), time.Hour)
		}, max: tls.VersionTLS12, reason: reasonTLSVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// B trusts the "past" CA's root too, so that "expired" is about
			// expiry alone.
			mp := newMeshPair(t, nil, deny, func(c *Config) {
				bundle := c.Bundle.(*x509bundle.Bundle).Clone()
				for _, r := range past.Roots() {
					bundle.AddX509Authority(r)
				}
				c.Bundle = bundle
			})
			svid := tt.svid(mp)
			refusedByB(t, mp, svid, tt.max)
			mp.b.waitCounter(1, "handshake_failures", inbound, tt.reason)
			if tt.reason == reasonAuthzDenied {
				mp.b.waitCounter(1, "authz_denials", inbound, tt.denied)
			}
			// The peer graph names a refused client by its address,
			// never by the ID its certificate claims (peers.go).
			mp.b.waitCounter(1, "inbound_peer_connections", peerRefused, "127.0.0.1")
			if svid != nil {
				if got := mp.b.counter("inbound_peer_connections", peerRefused, svid.ID.String()); got != 0 {
					t.Fatalf("refused connection named by its claimed ID %s", svid.ID)
				}
			}
			if svid != nil {
				if got := mp.b.counter("inbound_peer_connections", peerMTLS, svid.ID.String()); got != 0 {
					t.Fatalf("refused connection counted as mTLS from %s", svid.ID)
				}
			}
		})
	}

	t.Run("allowed identity passes, shadow rule counts", func(t *testing.T) {
		mp := newMeshPair(t, nil, deny)
		mp.a.svid.p.Store(testutil.SVID(t, mp.ca, workloadID("shop", "cart"), time.Hour))
		roundTrip(t, mp.dial(), []byte("allowed"))
		mp.b.waitCounter(1, "shadow_denials", inbound, "")
		mp.b.waitCounter(1, "inbound_peer_connections", peerMTLS, workloadID("shop", "cart").String())
		if got := mp.b.counter("authz_denials", inbound, ""); got != 0 {
			t.Fatalf("authz denials %v", got)
		}
	})

	t.Run("plaintext to STRICT", func(t *testing.T) {
		mp := newMeshPair(t, nil, nil)
		plaintextGetsNothing(t, mp)
		mp.b.waitCounter(1, "handshake_failures", inbound, reasonNotTLS)
		mp.b.waitCounter(1, "inbound_peer_connections", peerRefused, "127.0.0.1")
		if got := mp.b.counter("inbound_peer_connections", peerPlaintext, "127.0.0.1"); got != 0 {
			t.Fatalf("plaintext refused by STRICT counted as accepted plaintext: %v", got)
		}
		if n := mp.app.accepted.Load(); n != 0 {
			t.Fatalf("app accepted %d connections", n)
		}
	})
}

func TestOutboundRefusesUnexpectedPeer(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	// A expects the service to run as demo/echo-v2; B is demo/echo.
	want := workloadID("demo", "echo-v2")
	cfg := meshConfig([]spiffeid.ID{want}, mp.a.cfg.Load().Endpoints[svcCluster], nil, false)
	mp.a.cfg.Store(cfg)
	c := mp.dial()
	c.Write([]byte("secret"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("read %d bytes through an unverified peer", n)
	}
	mp.a.waitCounter(1, "handshake_failures", outbound, reasonBadSPIFFEID)
	if n := mp.app.received.Load(); n != 0 {
		t.Fatalf("app received %d bytes", n)
	}
}

func TestPermissiveAcceptsPlaintext(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), true, nil), false))
	c, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, []byte("plaintext hello"))
	// mTLS still works on the same port.
	roundTrip(t, mp.dial(), []byte("mtls hello"))
	conns := mp.b.connections()
	if len(conns) != 2 || conns[0].MTLS || !conns[1].MTLS {
		t.Fatalf("connections %+v", conns)
	}
	mp.b.waitCounter(1, "inbound_peer_connections", peerPlaintext, "127.0.0.1")
	mp.b.waitCounter(1, "inbound_peer_connections", peerMTLS, workloadID("shop", "frontend").String())
	if got := mp.b.counter("inbound_peer_connections", peerRefused, "127.0.0.1"); got != 0 {
		t.Fatalf("refused %v", got)
	}
}

// A client chooses its source address: the address series stop growing
// at maxPeerSeries, the connections past it still count, as "other", and
// verified IDs keep a budget of their own.
func TestPeerSeriesBounded(t *testing.T) {
	reg := wm.NewRegistry()
	c, err := newPeerCounter(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxPeerSeries + 100 {
		c.byAddress(peerRefused, fmt.Sprintf("[2001:2::%x]:443", i))
	}
	c.byAddress(peerRefused, "[2001:2::1]:9") // seen: its own series
	c.verified("spiffe://cluster.local/ns/a/sa/b")
	for i := range maxPeerSeries {
		c.verified(fmt.Sprintf("spiffe://cluster.local/ns/n/sa/s%d", i))
	}
	var scrape strings.Builder
	if _, err := reg.WriteTo(&scrape); err != nil {
		t.Fatal(err)
	}
	// 512 addresses and their "other"; 512 IDs and theirs.
	if series := strings.Count(scrape.String(), "\nweft_sidecar_inbound_peer_connections_total{"); series != 2*maxPeerSeries+2 {
		t.Fatalf("%d series, want %d", series, 2*maxPeerSeries+2)
	}
	for _, tc := range []struct {
		outcome, peer string
		want          float64
	}{
		{peerRefused, "2001:2::1", 2},
		{peerRefused, peerOther, 100},
		{peerMTLS, "spiffe://cluster.local/ns/a/sa/b", 1}, // the addresses did not crowd it out
		{peerMTLS, peerOther, 1},
	} {
		if got, _ := reg.Value("weft_sidecar_inbound_peer_connections_total", tc.outcome, tc.peer); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.outcome, tc.peer, got, tc.want)
		}
	}
}

// writePEM writes the SVID's chain and key, and the bundle, for openssl.
func writePEM(t *testing.T, dir string, svid *x509svid.SVID, ca *certs.CA) (cert, chain, key, bundle string) {
	t.Helper()
	_, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var chainPEM []byte
	for _, c := range svid.Certificates[1:] {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: svid.Certificates[0].Raw})
	cert, chain, key, bundle = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "chain.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")
	for f, b := range map[string][]byte{cert: certPEM, chain: chainPEM, key: keyPEM, bundle: ca.BundlePEM()} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, chain, key, bundle
}

func TestOpenSSLClient(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	mp := newMeshPair(t, nil, nil)
	dir := t.TempDir()
	cert, chain, key, bundle := writePEM(t, dir, testutil.SVID(t, mp.ca, workloadID("shop", "frontend"), time.Hour), mp.ca)
	run := func(withCert bool) (string, error) {
		args := []string{"s_client", "-connect", mp.b.inboundAddr().String(), "-tls1_3", "-CAfile", bundle,
			"-quiet", "-no_ign_eof", "-verify_return_error"}
		if withCert {
			args = append(args, "-cert", cert, "-cert_chain", chain, "-key", key)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, args...)
		out := &watchBuffer{want: "openssl-marker", seen: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = out, out
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(stdin, "openssl-marker\n")
		// Keep stdin open until the echo is back or openssl gave up.
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-out.seen:
			stdin.Close()
			err = <-exited
		case err = <-exited:
		}
		return out.String(), err
	}
	// Without a client certificate: refused.
	out, err := run(false)
	t.Logf("openssl without certificate: %v\n%s", err, out)
	if strings.Contains(out, "openssl-marker") {
		t.Fatal("openssl without a client certificate got its bytes echoed")
	}
	mp.b.waitCounter(1, "handshake_failures", inbound, reasonNoClientCert)
	if n := mp.app.accepted.Load(); n != 0 {
		t.Fatalf("app accepted %d connections", n)
	}
	// With a valid SVID: OpenSSL and the sidecar agree on TLS 1.3 mTLS and
	// the marker comes back.
	out, err = run(true)
	if !strings.Contains(out, "openssl-marker") {
		t.Fatalf("openssl with a valid SVID: %v\n%s", err, out)
	}
}

// watchBuffer collects output and closes seen once it contains want.
type watchBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// closeAfterWrite closes its connection once the first write (the TLS
// ClientHello) is out: a client that leaves mid-handshake.
type closeAfterWrite struct{ net.Conn }

func (c closeAfterWrite) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.Conn.Close()
	return n, err
}

// A client that leaves by itself, before or during the handshake, was not
// refused: the peer graph does not draw it as a refusal.
func TestPeerWhoLeavesIsNotRefused(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	c, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.MTLSClientConfig(mp.a.svid.p.Load(), mp.ca.Bundle(), tlsconfig.AuthorizeAny())
	_ = tls.Client(closeAfterWrite{c}, cfg).Handshake()
	mp.b.waitCounter(1, "handshake_failures", inbound, reasonPeerClosed)
	c2, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2.Close() // before a byte: the sniff's peer_closed
	mp.b.waitCounter(1, "connection_failures", inbound, reasonPeerClosed)
	if got := mp.b.counter("inbound_peer_connections", peerRefused, "127.0.0.1"); got != 0 {
		t.Fatalf("a client that left counted as refused %v times", got)
	}
}

// Plaintext on a PERMISSIVE port that policy denies (an ALLOW rule by
// identity: a plaintext client has none) is a refusal, by address.
func TestPeerPlaintextDeniedIsRefused(t *testing.T) {
	mp := newMeshPair(t, nil, nil)
	allowShop := []model.RBACFilter{{Action: model.RBACAllow, Policies: []model.RBACPolicy{{Name: "demo/allow-shop",
		Principals: []model.Principal{{Prefix: "spiffe://cluster.local/ns/shop/sa/"}}}}}}
	mp.b.cfg.Store(meshConfig(nil, nil, inboundChains(mp.app.port(), true, allowShop), false))
	plaintextGetsNothing(t, mp)
	mp.b.waitCounter(1, "inbound_peer_connections", peerRefused, "127.0.0.1")
	if got := mp.b.counter("inbound_peer_connections", peerPlaintext, "127.0.0.1"); got != 0 {
		t.Fatalf("denied plaintext counted as accepted: %v", got)
	}
}

// plaintextGetsNothing sends a plaintext HTTP request straight to B's
// inbound listener and expects the connection closed without an answer.
func plaintextGetsNothing(t *testing.T, mp *meshPair) {
	t.Helper()
	c, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: echo\r\n\r\n"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("plaintext got %d bytes back", n)
	}
}

// A TLS client without a certificate, on a chain that asks for none (weft
// never configures one; an Envoy-shaped configuration may): counted as tls
// by its address, not as a verified peer, and shown in /connections with
// its TLS session and no peer identity or expiry.
func TestTLSWithoutClientCertificateHasNoPeerID(t *testing.T) {
	mp := newMeshPair(t, echo, nil)
	chains := inboundChains(mp.app.port(), false, nil)
	chains[0].TLS.RequireClientCert = false
	mp.b.cfg.Store(meshConfig(nil, nil, chains, false))
	raw, err := net.Dial("tcp", mp.b.inboundAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: testutil.Roots(mp.ca), ServerName: "echo.demo.svc.cluster.local",
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(c, b); return err }() != nil || string(b) != "ping" {
		t.Fatalf("echo through the chain: got %q", b)
	}
	var seen *ConnInfo
	for _, ci := range mp.b.connections() {
		if ci.Direction == inbound && ci.TLSInfo != nil {
			seen = &ci
		}
	}
	if seen == nil || seen.PeerID != "" || !seen.PeerNotAfter.IsZero() || seen.Version != "TLS 1.3" {
		t.Fatalf("/connections: %+v, want the inbound TLS 1.3 session without a peer", seen)
	}
	mp.b.waitCounter(1, "inbound_peer_connections", peerTLS, "127.0.0.1")
	if got := mp.b.counter("inbound_peer_connections", peerMTLS, ""); got != 0 {
		t.Fatalf("counted as a verified peer with no ID %v times", got)
	}
}
