package xds

import (
	"fmt"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Resources is everything one sidecar needs, by type URL
// (resource.ListenerType, resource.ClusterType, ...). A type left out is
// served as empty.
type Resources map[resource.Type][]types.Resource

// Node is an authenticated sidecar: the pod and namespace of its node ID
// "<pod>.<namespace>" and the SPIFFE ID of its verified client certificate.
type Node struct {
	Name, Namespace string
	ID              spiffeid.ID
	// DestinationListeners: the sidecar looks destinations up on demand
	// (its node's client_features name names.FeatureDestinationListeners),
	// so its in-mesh chains are sent as one destination listener per
	// address and port, not in listener "outbound" (sidecar/xds/README.md).
	DestinationListeners bool
	// LookedUp (with DestinationListeners): the sidecar subscribes to
	// listeners by name, and Destinations are the destination listeners it
	// subscribes to (names.DestinationListener names, sorted): only those
	// are generated, not the mesh's every one, so what a node costs the
	// control plane follows what it uses. Without LookedUp (a wildcard
	// subscription), every destination listener.
	LookedUp     bool
	Destinations []string
}

// Generator builds every resource one sidecar needs. It must be pure and
// safe for concurrent use: the server calls it for many nodes at once.
// ClusterLoadAssignments are mesh-wide: for one state of the mesh, a name
// means the same endpoints whichever node it is generated for (the server
// serves them from one cache for every node; a node may get fewer names).
type Generator interface {
	Generate(node Node) (Resources, error)
}

// ParseNodeID splits an xDS node ID "<pod>.<namespace>" at its LAST dot.
// Pod names are DNS subdomains and may contain dots; namespaces are DNS
// labels and never do, so the last dot is the only unambiguous separator.
func ParseNodeID(id string) (pod, namespace string, err error) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return "", "", fmt.Errorf("xds: node ID %q is not <pod>.<namespace>", id)
	}
	pod, namespace = id[:i], id[i+1:]
	if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
		return "", "", fmt.Errorf("xds: node ID %q: pod name %q: %s", id, pod, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return "", "", fmt.Errorf("xds: node ID %q: namespace %q: %s", id, namespace, strings.Join(errs, "; "))
	}
	return pod, namespace, nil
}

// NodeID is the inverse of ParseNodeID.
func NodeID(pod, namespace string) string { return pod + "." + namespace }
