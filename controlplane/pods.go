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
	"github.com/weftmesh/weft/controlplane/streamauth"
)

// registryPods looks pods up in the registry for streamauth: the pods
// whose sidecars may hold ADS and audit streams.
type registryPods struct{ reg *registry.Registry }

var _ streamauth.Pods = registryPods{}

func (p registryPods) Pod(ctx context.Context, namespace, name string) (streamauth.Pod, bool, error) {
	select {
	case <-p.reg.Ready():
	case <-ctx.Done():
		return streamauth.Pod{}, false, grpcstatus.Error(codes.Unavailable, "controlplane: registry not synced yet")
	}
	snap := p.reg.Current()
	if snap == nil {
		return streamauth.Pod{}, false, grpcstatus.Error(codes.Unavailable, "controlplane: registry not synced yet")
	}
	w, ok := snap.Workload(namespace, name)
	if !ok {
		return streamauth.Pod{}, false, nil
	}
	return streamauth.Pod{UID: w.UID, ID: w.Identity, IPs: w.IPs}, true, nil
}

// caBundle exposes the CA's current roots (rotation included) as a source.
type caBundle struct{ ca *certs.CA }

func (b caBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.ca.TrustDomain() {
		return nil, fmt.Errorf("controlplane: no bundle for trust domain %q", td)
	}
	return b.ca.Bundle(), nil
}
