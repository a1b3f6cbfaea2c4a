package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

// TestServerTLSUsesTheControlPlaneClock: the control plane's TLS server
// judges client SVIDs and its own on the clock its CA signs on, not the
// wall clock. With a clock decades away (testutil.FakeClock) a handshake
// succeeds only if both ends read the same clock; a client whose SVID is
// expired on that clock is refused.
func TestServerTLSUsesTheControlPlaneClock(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	clk := testutil.FakeClock(t)
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	self := spiffeid.RequireFromPath(td, "/ns/weft-system/sa/weft-controlplane")
	serving := &servingCert{ca: ca, id: self, dns: []string{"weft-controlplane"}, ttl: 24 * time.Hour, clock: clk, log: slog.New(slog.DiscardHandler)}
	if err := serving.issue(); err != nil {
		t.Fatal(err)
	}
	client := testutil.SVID(t, ca, spiffeid.RequireFromPath(td, "/ns/demo/sa/app"), time.Hour)

	handshake := func() error {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		errs := make(chan error, 1)
		go func() {
			c, err := lis.Accept()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			errs <- tls.Server(c, serverTLS(ca, serving)).Handshake()
		}()
		roots := x509.NewCertPool()
		for _, r := range ca.Roots() {
			roots.AddCert(r)
		}
		cert := tls.Certificate{PrivateKey: client.PrivateKey, Leaf: client.Certificates[0]}
		for _, c := range client.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{
			RootCAs: roots, ServerName: "weft-controlplane", Certificates: []tls.Certificate{cert}, Time: clk.Now,
			NextProtos: []string{"h2"}, MaxVersion: tls.VersionTLS12, // the server's verdict arrives within the handshake
		})
		if err == nil {
			conn.Close()
		}
		return <-errs
	}
	if err := handshake(); err != nil {
		t.Fatalf("client SVID valid on the control plane's clock refused: %v", err)
	}
	clk.Step(2 * time.Hour)
	if err := serving.issue(); err != nil { // the serving certificate is renewed; the client's is not
		t.Fatal(err)
	}
	if err := handshake(); err == nil {
		t.Fatal("client SVID expired on the control plane's clock accepted")
	}
}

// testServingCert makes a CA for td on the wall clock and, issued by it,
// the control plane's serving certificate as Run builds it: the SPIFFE ID
// of ServiceAccount weft-system/weft-controlplane with its DNS names from
// ServerNames, for 24 h. names is ServerNames' map (for the identity
// service's Config).
func testServingCert(tb testing.TB, td spiffeid.TrustDomain) (ca *certs.CA, serving *servingCert, names map[spiffeid.ID][]string) {
	tb.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		tb.Fatal(err)
	}
	names = ServerNames(td, "weft-system", "weft-controlplane")
	self := spiffeid.RequireFromSegments(td, "ns", "weft-system", "sa", "weft-controlplane")
	serving = &servingCert{ca: ca, id: self, dns: names[self], ttl: 24 * time.Hour, clock: clock.RealClock{},
		log: slog.New(slog.DiscardHandler)}
	if err := serving.issue(); err != nil {
		tb.Fatal(err)
	}
	return ca, serving, names
}
