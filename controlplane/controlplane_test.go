package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/testutil"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

type running struct {
	grpcAddr, httpAddr string
	kube               *fake.Clientset
	stop               func()
}

func start(t *testing.T) running {
	t.Helper()
	kube := testutil.FakeKube(map[string]testutil.Token{
		"app-token": {User: "system:serviceaccount:demo:app", Audiences: []string{identity.Audience}, Pod: "app-1", UID: "u1"},
		// Callers of the admin port (adminport_test.go).
		auditReaderToken:  {User: "alice", Audiences: []string{testutil.APIServerAudience}},
		statusReaderToken: {User: "bob", Audiences: []string{testutil.APIServerAudience}},
		noRBACToken:       {User: "system:serviceaccount:other:default", Audiences: []string{testutil.APIServerAudience}},
	}, testutil.Pod("demo", "app-1", "u1", "app"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"weft.dev/inject": "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}})
	testutil.FakeRBAC(kube, adminGrants...)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Kube: kube, Weft: testutil.FakeWeft(), AuditDB: filepath.Join(t.TempDir(), "audit.db"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			Ready: func(g, h net.Addr) { ready <- [2]string{g.String(), h.String()} }})
	}()
	select {
	case a := <-ready:
		return running{grpcAddr: a[0], httpAddr: a[1], kube: kube, stop: func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}}
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("control plane not ready after 20s")
	}
	return running{}
}

// bundleFromConfigMap waits for the published trust bundle in ns.
func bundleFromConfigMap(t *testing.T, kube *fake.Clientset, ns string) *x509bundle.Bundle {
	t.Helper()
	var cm *corev1.ConfigMap
	testutil.Eventually(t, "the "+identity.BundleConfigMap+" ConfigMap in "+ns, func() bool {
		var err error
		cm, err = kube.CoreV1().ConfigMaps(ns).Get(context.Background(), identity.BundleConfigMap, metav1.GetOptions{})
		return err == nil
	})
	b, err := x509bundle.Parse(td, []byte(cm.Data[identity.BundleKey]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCertificateServiceOverTLS(t *testing.T) {
	cp := start(t)
	defer cp.stop()
	bundle := bundleFromConfigMap(t, cp.kube, "demo")
	bundleFromConfigMap(t, cp.kube, "weft-system")
	if _, err := cp.kube.CoreV1().ConfigMaps("other").Get(context.Background(), identity.BundleConfigMap, metav1.GetOptions{}); err == nil {
		t.Fatal("trust bundle published into a namespace without injection")
	}

	// The client trusts only the published bundle and only the control
	// plane's SPIFFE ID, as a sidecar does.
	cpID := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-controlplane")
	tlsCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(cpID))
	conn, err := grpc.NewClient(cp.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer app-token")
	resp, err := certificatev1.NewCertificateServiceClient(conn).Sign(ctx, &certificatev1.SignRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.ParseRaw(joinDER(resp.CertChain), mustPKCS8(t, key))
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://cluster.local/ns/demo/sa/app" {
		t.Fatalf("SVID for %s", svid.ID)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("SVID does not verify against the published bundle: %v", err)
	}

	// With that SVID as client certificate the handshake succeeds; a
	// certificate from another CA is refused by the handshake itself.
	if err := handshake(cp.grpcAddr, bundle, cpID, svid); err != nil {
		t.Fatalf("handshake with a valid SVID: %v", err)
	}
	foreign, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	fkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fcsr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, fkey)
	fchain, err := foreign.Sign(certs.SignRequest{CSR: fcsr, ID: svid.ID})
	if err != nil {
		t.Fatal(err)
	}
	fsvid := &x509svid.SVID{ID: svid.ID, Certificates: fchain, PrivateKey: fkey}
	if err := handshake(cp.grpcAddr, bundle, cpID, fsvid); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("handshake with a foreign CA's certificate: err = %v, want bad certificate", err)
	}

	// The admin port reports the CA and the issued counter.
	st := adminJSON[Status](t, cp, "/debug/status", statusReaderToken)
	if st.TrustDomain != "cluster.local" || len(st.Roots) != 1 {
		t.Fatalf("/debug/status = %+v", st)
	}
	_, metrics := testutil.Get(t, "http://"+cp.httpAddr+"/metrics")
	if !strings.Contains(metrics, "weft_ca_svids_issued_total 1") {
		t.Fatalf("/metrics lacks weft_ca_svids_issued_total 1:\n%s", metrics)
	}
}

func TestRestartKeepsTheCA(t *testing.T) {
	cp := start(t)
	first := bundleFromConfigMap(t, cp.kube, "weft-system")
	cp.stop()
	// A second control plane against the same API loads the same CA.
	kube := cp.kube
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Kube: kube, Weft: testutil.FakeWeft(), AuditDB: filepath.Join(t.TempDir(), "audit.db"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Ready: func(net.Addr, net.Addr) { close(ready) }})
	}()
	<-ready
	second := bundleFromConfigMap(t, kube, "weft-system")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !first.Equal(second) {
		t.Fatal("restart changed the trust bundle")
	}
}

func handshake(addr string, bundle *x509bundle.Bundle, server spiffeid.ID, svid *x509svid.SVID) error {
	cfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(server))
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// TLS 1.3: the server's verdict on the client certificate arrives
	// after the client's handshake completes; read to observe it.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err != nil && !isTimeout(err) {
		return err
	}
	return nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func joinDER(ders [][]byte) []byte {
	var out []byte
	for _, d := range ders {
		out = append(out, d...)
	}
	return out
}

func mustPKCS8(t *testing.T, key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
