package streamauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
	"github.com/weftmesh/weft/internal/testutil"
)

// goneAfterCheck is the registry publishing a snapshot without the pod
// right after Authorize has checked it: each lookup after the first finds
// nothing, and the Recheck that the publication triggers runs in between,
// before the new grant is registered.
type goneAfterCheck struct {
	*streamauthtest.Pods
	a       *streamauth.Authorizer
	lookups int
}

func (g *goneAfterCheck) Pod(ctx context.Context, ns, name string) (streamauth.Pod, bool, error) {
	g.lookups++
	if g.lookups == 1 {
		p, ok, err := g.Pods.Pod(ctx, ns, name)
		g.Pods.Remove(ns, name)
		g.a.Recheck(ctx) // the publication's Recheck: no grant to see yet
		return p, ok, err
	}
	return g.Pods.Pod(ctx, ns, name)
}

// A pod deleted between Authorize's check and the grant's registration
// must not leave a stream that no Recheck will ever end.
func TestPodGoneBeforeTheGrantIsKept(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca := testutil.NewCA(t, td, nil)
	id := spiffeid.RequireFromSegments(td, "ns", "demo", "sa", "web")
	pods := streamauthtest.New()
	tok := pods.Add("demo", "web-1", id)
	gone := &goneAfterCheck{Pods: pods}
	a, err := streamauth.New(streamauth.Config{Authenticator: pods, Pods: gone, Bundle: ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	gone.a = a
	var chain []*x509.Certificate
	for _, raw := range testutil.Certificate(t, ca, id).Certificate {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: chain}},
	})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok))
	g, err := a.Authorize(ctx, "xds", "ADS")
	if err == nil && g.Context().Err() == nil {
		t.Fatalf("a stream of a pod deleted before its grant was kept is open (grants %d)", a.Len())
	}
	if err != nil && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("refused with %v, want PermissionDenied", err)
	}
}
