package mesh

import (
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// MeshConfig is the mesh-wide configuration in force.
type MeshConfig struct {
	TrustDomain  spiffeid.TrustDomain
	MTLSMode     v1alpha1.MTLSMode     // STRICT or PERMISSIVE
	OutboundMode v1alpha1.OutboundMode // ALLOW_ANY or REGISTRY_ONLY
	// FromObject is true when the MeshConfig "default" was found and
	// accepted; false means the defaults (the control plane's trust
	// domain, STRICT, ALLOW_ANY).
	FromObject bool
}

// Namespace is a Kubernetes namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
	// Injection is true when the namespace has weft.dev/inject=enabled.
	Injection bool
}

// ServiceAccount is a Kubernetes service account and the SPIFFE ID its pods
// run as.
type ServiceAccount struct {
	Namespace, Name string
	ID              spiffeid.ID
}

// AppProtocol is what a service port carries, from its appProtocol or its
// name's prefix ("http-web", "grpc", "tcp-db"). Empty means unknown: the
// sidecar sniffs.
type AppProtocol string

const (
	AppProtocolUnknown AppProtocol = ""
	AppProtocolHTTP    AppProtocol = "http"
	AppProtocolHTTP2   AppProtocol = "http2"
	AppProtocolGRPC    AppProtocol = "grpc"
	AppProtocolTCP     AppProtocol = "tcp"
	AppProtocolTLS     AppProtocol = "tls"
)

// Service is a Kubernetes Service and its endpoints.
type Service struct {
	Namespace, Name string
	Type            string       // ClusterIP, NodePort, LoadBalancer, ExternalName
	ClusterIPs      []netip.Addr // none for headless and ExternalName services
	ExternalName    string
	// Created is the Service's creationTimestamp: which ExternalName
	// Services keep their names in a sidecar past its budget (the oldest;
	// controlplane/xds/translate).
	Created time.Time
	// Selector picks the service's pods; nil when the service has none
	// (its EndpointSlices are managed by hand).
	Selector  map[string]string
	Ports     []ServicePort
	Endpoints []Endpoint // by address
	// Identities are the SPIFFE IDs of the pods behind the service, sorted
	// and unique: what a client must accept from the server's certificate.
	Identities []spiffeid.ID
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name string
	Port uint16
	// TargetPort is the pod port when given as a number; TargetPortName
	// when given as a container port's name (then each endpoint's Ports
	// say the number).
	TargetPort     uint16
	TargetPortName string
	Protocol       string // TCP, UDP or SCTP
	AppProtocol    AppProtocol
}

// Endpoint is one address behind a Service, from its EndpointSlices.
type Endpoint struct {
	Address netip.Addr
	// Ports are the endpoint's ports by service port name. Endpoints of one
	// EndpointSlice share this slice.
	Ports                       []EndpointPort
	Ready, Serving, Terminating bool
	NodeName                    string
	// Pod is the pod behind the endpoint; nil when it is not a pod or the
	// pod is not (yet) known.
	Pod *Key
	// Identity is the SPIFFE ID the pod runs as; zero when Pod is nil.
	Identity spiffeid.ID
	// Injected is true when the pod runs weft's sidecar.
	Injected bool
}

// EndpointPort is the port an endpoint serves a named service port on.
type EndpointPort struct {
	Name     string // the service port's name ("" for a single unnamed port)
	Port     uint16
	Protocol string
}

// Port returns the endpoint's port for the service port named name.
func (e *Endpoint) Port(name string) (uint16, bool) {
	for _, p := range e.Ports {
		if p.Name == name {
			return p.Port, true
		}
	}
	return 0, false
}

// Workload is a pod that is not finished.
type Workload struct {
	Namespace, Name string
	UID             string
	IPs             []netip.Addr
	Labels          map[string]string
	ServiceAccount  string
	Identity        spiffeid.ID
	// Injected is true when the pod has a container or init container named
	// weft-proxy.
	Injected    bool
	HostNetwork bool
	NodeName    string
	// InboundLoopbackPorts are the ports the pod's apps listen on at
	// 127.0.0.1 only (its weft.dev/inbound-loopback-ports): its sidecar
	// delivers inbound connections for them to 127.0.0.1, the rest to the
	// pod's own address. Sorted, unique.
	InboundLoopbackPorts []uint16
}

// Key is the workload's namespace and name.
func (w *Workload) Key() Key { return Key{w.Namespace, w.Name} }

// NodeID is the xDS node ID the workload's sidecar uses: "<pod>.<namespace>".
func (w *Workload) NodeID() string { return w.Name + "." + w.Namespace }
