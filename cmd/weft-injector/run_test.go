package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/injector"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/identity"
)

// The injector serves the SVID that sidecar/identity obtained from the
// certificate service, with its intermediate, and a client holding only
// weft's roots (the webhook's caBundle) verifies it.
func TestServesSVIDFromCertificateService(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/weft-system/sa/weft-injector")
	_, client, _ := testutil.StartCertService(t, ca, map[string]spiffeid.ID{"tok": id})
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svids, err := identity.New(identity.Config{Client: client, TokenPath: tokenPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	defer func() { cancel(); <-done; <-done }()
	go func() { _ = svids.Run(ctx); done <- struct{}{} }()
	select {
	case <-svids.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no SVID")
	}

	inj, err := injector.New(injector.Config{SidecarImage: "weft/weft-sidecar:test"})
	if err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		_ = injector.Serve(ctx, injector.ServerConfig{Addr: "127.0.0.1:0", Injector: inj, Certificates: injector.SVIDCertificates(svids),
			Ready: func(a net.Addr) { addrc <- a.String() }})
		done <- struct{}{}
	}()

	caBundle, err := rootsPEM(svids, td)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		t.Fatal("caBundle holds no certificate")
	}
	conn, err := tls.Dial("tcp", <-addrc, &tls.Config{
		InsecureSkipVerify: true, // verified below without a host name: the fake service issues no DNS SAN
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		},
	})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0].URIs[0].String(); got != id.String() {
		t.Errorf("served %s, want %s", got, id)
	}
}
