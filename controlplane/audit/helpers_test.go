package audit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	clocktesting "k8s.io/utils/clock/testing"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("cluster.local")
	shopApp = spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "app")
	labApp  = spiffeid.RequireFromSegments(td, "ns", "lab", "sa", "app")
)

func openTestStore(t *testing.T, clk *clocktesting.FakeClock) *Store {
	t.Helper()
	s, err := OpenStore(StoreConfig{Path: filepath.Join(t.TempDir(), "audit.db"), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mustInsert inserts events into s; an error fails the test.
func mustInsert(t *testing.T, s *Store, events []apiaudit.Event) {
	t.Helper()
	if _, _, err := s.Insert(events); err != nil {
		t.Fatal(err)
	}
}

// testCA issues SVIDs for tests, on clk: every certificate it makes is
// valid at clk's time, and the TLS ends it sets up verify on clk too.
type testCA struct {
	t   *testing.T
	ca  *certs.CA
	clk certs.Clock
}

func newTestCA(t *testing.T, clk certs.Clock) *testCA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, ca: ca, clk: clk}
}

func (c *testCA) cert(id spiffeid.ID, dns ...string) tls.Certificate {
	c.t.Helper()
	return testutil.Certificate(c.t, c.ca, id, dns...)
}

const serverName = "weft-controlplane.weft-system.svc"

// grpcServer is a TLS gRPC server shaped like the control plane's (client
// certificate requested, not required).
func (c *testCA) grpcServer() *grpc.Server {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.cert(spiffeid.RequireFromSegments(td, "ns", "weft-system", "sa", "weft-controlplane"), serverName)},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2"},
		Time:         c.clk.Now,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, c.ca.Bundle(), x509svid.WithTime(c.clk.Now()))
			return err
		},
	}
	return grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
}

// serve runs svc on a grpcServer and returns its address.
func (c *testCA) serve(t *testing.T, svc *Service) string {
	t.Helper()
	gs := c.grpcServer()
	svc.Register(gs)
	return testutil.ServeGRPC(t, gs, testutil.Listen(t))
}

// dial connects as id (zero: no client certificate).
func (c *testCA) dial(t *testing.T, addr string, id spiffeid.ID, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return c.dialCert(t, addr, id, nil, opts...)
}

// dialCert connects with cert, or as id when cert is nil (zero id: no
// client certificate).
func (c *testCA) dialCert(t *testing.T, addr string, id spiffeid.ID, cert *tls.Certificate, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: testutil.Roots(c.ca), ServerName: serverName, Time: c.clk.Now}
	switch {
	case cert != nil:
		cfg.Certificates = []tls.Certificate{*cert}
	case !id.IsZero():
		cfg.Certificates = []tls.Certificate{c.cert(id)}
	}
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sendAll sends msgs on st and returns the stream's outcome.
func sendAll(st grpc.ClientStreamingClient[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse], msgs ...*alsv3.StreamAccessLogsMessage) error {
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			break // the server ended the stream: CloseAndRecv has its status
		}
	}
	_, err := st.CloseAndRecv()
	return err
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
