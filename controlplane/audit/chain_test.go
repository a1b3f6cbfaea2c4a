package audit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

var controlPlaneID = spiffeid.RequireFromSegments(td, "ns", "weft-system", "sa", "weft-controlplane")

// serveRequestOnly runs svc behind TLS that requests a client certificate
// and checks nothing about it, so that the stream's own check is the only
// one: the package promises it ("verified here, like ADS"), and the
// control plane's port serves callers without an SVID too.
func (c *testCA) serveRequestOnly(t *testing.T, svc *Service) string {
	t.Helper()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.cert(controlPlaneID, serverName)},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2"},
		Time:         c.clk.Now,
	})))
	svc.Register(gs)
	return wefttest.ServeGRPC(t, gs, wefttest.Listen(t))
}

// sendAs streams msgs to addr presenting cert (the server verified
// against c's roots) and returns the stream's outcome.
func (c *testCA) sendAs(t *testing.T, addr string, cert tls.Certificate, msgs ...*alsv3.StreamAccessLogsMessage) error {
	t.Helper()
	// With web-1's token, as its sidecar: only the certificate differs.
	conn := c.dialCert(t, addr, spiffeid.ID{}, &cert, grpc.WithPerRPCCredentials(streamauthtest.Bearer(streamauthtest.Token("shop", "web-1"))))
	st, err := alsv3.NewAccessLogServiceClient(conn).StreamAccessLogs(testContext(t))
	if err != nil {
		return err
	}
	return sendAll(st, msgs...)
}

// selfSigned is a certificate shaped like id's X.509-SVID (the URI SAN, a
// client-auth leaf, valid at now) that no CA signed.
func selfSigned(t *testing.T, id spiffeid.ID, now time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), URIs: []*url.URL{id.URL()},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestServiceVerifiesClientChain: the stream takes its caller's identity
// only from a certificate that chains to the trust bundle. A certificate
// naming a workload of the trust domain but signed by itself, or by
// another CA of the same trust domain name (another weft install), is
// refused Unauthenticated, counted in
// weft_audit_streams_refused_total{code="Unauthenticated"}, and none of
// its events is stored — even when the TLS layer in front only requests
// the certificate.
func TestServiceVerifiesClientChain(t *testing.T) {
	tests := []struct {
		name string
		cert func(h *harness) tls.Certificate
		msg  string
	}{
		{"self-signed SVID", func(h *harness) tls.Certificate { return selfSigned(t, shopApp, h.clk.Now()) },
			"audit: client certificate: x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"},
		{"SVID from another CA of the trust domain", func(h *harness) tls.Certificate { return newTestCA(t, h.clk).cert(shopApp) },
			"audit: client certificate: x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			addr := h.ca.serveRequestOnly(t, h.svc)
			t0 := h.clk.Now()
			err := h.ca.sendAs(t, addr, tt.cert(h), message("web-1.shop", shopEvent(t0, "forged-1"), shopEvent(t0, "forged-2")))
			if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.HasPrefix(st.Message(), tt.msg) {
				t.Fatalf("stream = %v, want Unauthenticated %q", err, tt.msg)
			}
			if got := testutil.ToFloat64(h.svc.m.refused.WithLabelValues(codes.Unauthenticated.String())); got != 1 {
				t.Errorf("weft_audit_streams_refused_total{code=Unauthenticated} = %v, want 1", got)
			}
			if got, _ := h.store.Query(Query{}); len(got) != 0 {
				t.Errorf("events of an unverified caller were stored: %v", ids(got))
			}
			if got := testutil.ToFloat64(h.svc.m.events.WithLabelValues("stored")); got != 0 {
				t.Errorf("weft_audit_events_total{result=stored} = %v, want 0", got)
			}
		})
	}

	// The same server takes the same events from the real SVID: the
	// refusals above are the chain's, not the setup's.
	h := newHarness(t)
	addr := h.ca.serveRequestOnly(t, h.svc)
	t0 := h.clk.Now()
	if err := h.ca.sendAs(t, addr, h.ca.cert(shopApp), message("web-1.shop", shopEvent(t0, "real-1"))); err != nil {
		t.Fatalf("the trust domain's own SVID: %v", err)
	}
	if got, _ := h.store.Query(Query{}); len(got) != 1 || got[0].ID != "real-1" {
		t.Fatalf("stored %v, want real-1", ids(got))
	}
	if got := testutil.ToFloat64(h.svc.m.refused.WithLabelValues(codes.Unauthenticated.String())); got != 0 {
		t.Fatalf("refused %v", got)
	}
}
