// Package names holds the names and addresses by which weft's parts find
// one another: the namespace weft is installed in, its components'
// Deployment, ServiceAccount and Service names, their ports, the control
// plane's address, the largest xDS message the control plane sends a
// sidecar, the labels and annotations the injector, the control plane and
// weftctl read and write, what the injector mounts in weft-proxy for the
// sidecar to read (the token, the trust bundle, the Workload API socket,
// the app's probes) and the trust bundle's ConfigMap. Every part imports
// them from here, so none can rename one alone. The install manifests
// (deploy/*.yaml) spell the same names in YAML.
//
// This package is a pure core: it imports the standard library only.
package names

import (
	"net/netip"
	"strconv"
)

// Namespace is the namespace weft is installed in by default; weft's own
// pods run there and it is never injected.
const Namespace = "weft-system"

// weft's components: each one's Deployment, ServiceAccount and Service, and
// the value of its pods' AppLabel.
const (
	ControlPlane = "weft-controlplane"
	Injector     = "weft-injector"
)

// AppLabel is the label that names a component's pods
// ("app.kubernetes.io/name=weft-controlplane").
const AppLabel = "app.kubernetes.io/name"

// Selector is the label selector of a component's pods.
func Selector(component string) string { return AppLabel + "=" + component }

// Ports. The sidecar's are the same in every pod; the control plane's and
// the injector's are their containers' (and Services').
const (
	SidecarAdminPort    = 15000 // 127.0.0.1 only: /connections, /config_dump
	SidecarOutboundPort = 15001 // captured outbound TCP (127.0.0.1, [::1])
	SidecarInboundPort  = 15006 // captured inbound TCP
	ControlPlaneGRPC    = 15012 // TLS gRPC: certificate service, ADS, access logs
	ControlPlaneAdmin   = 15014 // /metrics, /healthz; over TLS /debug/status, /audit/*
	InjectorPort        = 15017 // the webhook (the Service maps 443 to it)
	SidecarHealthPort   = 15020 // the pod IP: /healthz/ready, /metrics, /app-health/
	SidecarDNSPort      = 15053 // the DNS proxy (127.0.0.1, [::1])
)

// ControlPlaneAddr is the control plane's gRPC address for weft installed
// in namespace: "weft-controlplane.<namespace>.svc:15012".
func ControlPlaneAddr(namespace string) string {
	return ControlPlane + "." + namespace + ".svc:" + strconv.Itoa(ControlPlaneGRPC)
}

// DefaultControlPlaneAddr is ControlPlaneAddr(Namespace).
const DefaultControlPlaneAddr = ControlPlane + "." + Namespace + ".svc:15012"

// The injector's admission webhook: the MutatingWebhookConfiguration and
// its one webhook.
const (
	WebhookConfiguration = Injector
	WebhookName          = "inject.weft.dev"
)

// InjectLabel is both the namespace label that turns injection on
// (InjectEnabled; the webhook's namespaceSelector), the pod label that
// keeps a pod out (InjectDisabled; its objectSelector) and the pod
// annotation that opts a pod out (InjectDisabled; the injector reads it).
const InjectLabel = "weft.dev/inject"

// Values of InjectLabel.
const (
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"
)

// Annotations the injector writes on the pods it injects, and the one the
// control plane reads.
const (
	// AnnotationInjected (JSON, injector.Injection) says what the injector
	// put into the pod; weftctl reads it.
	AnnotationInjected = "weft.dev/injected"
	// AnnotationInboundLoopbackPorts ("8080,9090") names the ports the
	// pod's apps listen on at 127.0.0.1 only; the injector validates it,
	// the control plane reads it.
	AnnotationInboundLoopbackPorts = "weft.dev/inbound-loopback-ports"
)

// ProxyContainer is the name of the sidecar's container in an injected pod.
const ProxyContainer = "weft-proxy"

// What the injector mounts and sets in weft-proxy and the sidecar reads
// there (docs/architecture.md, "Inside an injected pod").
const (
	// TokenAudience is the audience of the pod's projected token, which
	// only weft-proxy mounts; the control plane accepts no other.
	TokenAudience = "weft-ca"
	TokenDir      = "/var/run/secrets/weft/tokens"
	TokenPath     = TokenDir + "/token"
	// BundleDir holds TrustBundleConfigMap's TrustBundleKey.
	BundleDir      = "/var/run/secrets/weft/bundle"
	BundlePath     = BundleDir + "/" + TrustBundleKey
	WorkloadDir    = "/var/run/secrets/weft/workload"
	WorkloadSocket = WorkloadDir + "/socket"
	// AppProbesEnv hands weft-proxy the app's original probes (the JSON of
	// the weft.dev/probes annotation), which it serves under
	// AppHealthPrefix on SidecarHealthPort (/app-health/<container>/<kind>).
	AppProbesEnv    = "WEFT_APP_PROBES"
	AppHealthPrefix = "/app-health/"
	// PodNameEnv and PodNamespaceEnv: the pod's name and namespace (the
	// downward API), for weft-proxy's node ID and logs.
	PodNameEnv      = "POD_NAME"
	PodNamespaceEnv = "POD_NAMESPACE"
	// SidecarReadyPath, on SidecarHealthPort, is weft-proxy's startup and
	// readiness probe.
	SidecarReadyPath = "/healthz/ready"
)

// TrustBundleConfigMap holds weft's roots under TrustBundleKey: the
// control plane writes it into weft's namespace and every injected one,
// injected pods mount it and weftctl reads it.
const (
	TrustBundleConfigMap = "weft-trust-bundle"
	TrustBundleKey       = "bundle.pem"
)

// EventReasonSkipped is the reason of the Event the injector records for a
// pod it leaves alone; weftctl explain-injection lists them.
const EventReasonSkipped = "InjectionSkipped"

// DefaultTrustDomain is the SPIFFE trust domain of a mesh installed without
// one (weftctl install --trust-domain), and each program's default.
const DefaultTrustDomain = "cluster.local"

// ClusterDomain is the cluster's DNS domain, as Services' names end:
// Kubernetes' default. The control plane names Services by it (the SNI of
// in-mesh clusters, an ExternalName Service's names) and the sidecar binds
// an ExternalName Service's connections to <svc>.<ns>.svc.<ClusterDomain>.
const ClusterDomain = "cluster.local"

// Names the xDS contract fixes (sidecar/xds/README.md), which the
// translator gives and the sidecar knows: its two listeners, the clusters
// it treats by name, and the secrets. The cluster of the access-log
// stream is ControlPlane, which the sidecar maps to its connection to the
// control plane.
const (
	InboundListener           = "inbound"
	OutboundListener          = "outbound"
	PassthroughCluster        = "PassthroughCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
	// TrustBundleSecret is the SDS secret holding every root of the mesh.
	TrustBundleSecret = "trust_bundle"
	// SVIDSecret names the sidecar's own certificate in TLS contexts; it is
	// never sent, the sidecar resolves it itself.
	SVIDSecret = "default"
)

// DestinationListener is the name of the listener of one in-mesh
// destination (a Service's ClusterIP and port, an injected endpoint's
// address and target port): the address and port as netip.AddrPort writes
// them ("198.19.0.10:80", "[2001:db8::a]:80"). Such a listener does not
// bind (bind_to_port false): a connection the outbound listener receives
// whose original destination it names is matched in its chains (Envoy's
// original-destination hand-off).
func DestinationListener(ap netip.AddrPort) string { return ap.String() }

// FeatureDestinationListeners is the client feature (xDS node
// client_features) of a sidecar that looks destinations up on demand: the
// control plane sends it its in-mesh chains as destination listeners.
const FeatureDestinationListeners = "weft.destination_listeners"

// ParseDestinationListener is the address and port a destination
// listener's name stands for; ok is false for any other name, or one not
// in DestinationListener's canonical form.
func ParseDestinationListener(name string) (ap netip.AddrPort, ok bool) {
	ap, err := netip.ParseAddrPort(name)
	if err != nil || ap.String() != name || ap.Addr().Zone() != "" || ap.Addr().Is4In6() || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// filter_metadata namespaces of the xDS the control plane sends and the
// sidecar reads: an egress rule's chain or route, and an inbound chain's
// mTLS mode.
const (
	EgressMetadataKey  = "weft.egress"
	InboundMetadataKey = "weft.inbound"
)

// MaxXDSMessageSize is the largest xDS message (a DiscoveryResponse or
// DeltaDiscoveryResponse, as encoded on the wire) the control plane sends
// and a sidecar receives: 16 MiB, four times gRPC's default receive limit.
// The sidecar's ADS client receives up to it (grpc.MaxCallRecvMsgSize),
// the control plane's gRPC server sends up to it (grpc.MaxSendMsgSize), and
// the ADS server never sends a response larger: a snapshot that would need
// one is not published (the sidecar keeps its configuration; the control
// plane logs it, counts it in weft_xds_oversized_responses_total and shows
// it in /debug/status). Both sides read this one constant, so neither can
// raise it alone; sidecar/xds/README.md states it as part of the contract.
// The sidecar's requests are small: the control plane receives at most
// 4 MiB.
const MaxXDSMessageSize = 16 << 20

// MeshControllerName is the controllerName weft writes in the status of the
// Gateway API routes (HTTPRoute, GRPCRoute) whose parent is a Service: the
// GAMMA routes it serves (docs/gamma.md).
const MeshControllerName = "weft.dev/mesh"
