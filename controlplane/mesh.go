package controlplane

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/registry"
	"github.com/weftmesh/weft/controlplane/xds"
)

// nodeVerifier checks an ADS stream's node against the registry: the pod
// must exist and run as the SPIFFE ID of the stream's client certificate.
type nodeVerifier struct{ reg *registry.Registry }

var _ xds.NodeVerifier = nodeVerifier{}

func (v nodeVerifier) VerifyNode(ctx context.Context, n xds.Node) error {
	select {
	case <-v.reg.Ready():
	case <-ctx.Done():
		return grpcstatus.Error(codes.Unavailable, "controlplane: registry not synced yet")
	}
	snap := v.reg.Current()
	if snap == nil {
		return grpcstatus.Error(codes.Unavailable, "controlplane: registry not synced yet")
	}
	w, ok := snap.Workload(n.Namespace, n.Name)
	if !ok {
		// A pod the informer has not seen yet looks the same as a pod that
		// does not exist; the sidecar retries with backoff either way.
		return fmt.Errorf("controlplane: pod %s/%s is not known", n.Namespace, n.Name)
	}
	if w.Identity != n.ID {
		return fmt.Errorf("controlplane: pod %s/%s runs as %s, the stream's certificate is %s", n.Namespace, n.Name, w.Identity, n.ID)
	}
	return nil
}

// caBundle exposes the CA's current roots (rotation included) as a source.
type caBundle struct{ ca *certs.CA }

func (b caBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.ca.TrustDomain() {
		return nil, fmt.Errorf("controlplane: no bundle for trust domain %q", td)
	}
	return b.ca.Bundle(), nil
}
