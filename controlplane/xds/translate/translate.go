package translate

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// DefaultControlPlaneAddr is where sidecars send their gRPC access logs
// (cluster weft-controlplane) when Generator.ControlPlaneAddr is empty.
const DefaultControlPlaneAddr = names.DefaultControlPlaneAddr

// clusterDomain is the cluster's DNS domain, as Services' names end.
const clusterDomain = names.ClusterDomain

// Names of the resources every sidecar gets (sidecar/xds/README.md).
const (
	listenerInbound           = names.InboundListener
	listenerOutbound          = names.OutboundListener
	clusterPassthrough        = names.PassthroughCluster
	clusterBlackHole          = names.BlackHoleCluster
	clusterInboundPassthrough = names.InboundPassthroughCluster
	clusterControlPlane       = names.ControlPlane
	secretTrustBundle         = names.TrustBundleSecret
	secretSVID                = names.SVIDSecret

	inboundPort        = names.SidecarInboundPort
	outboundPort       = names.SidecarOutboundPort
	egressLogName      = apiaudit.LogName
	egressMetadataKey  = names.EgressMetadataKey
	inboundMetadataKey = names.InboundMetadataKey
)

// Generator turns the mesh model into the Envoy v3 resources of one
// sidecar, following the contract in sidecar/xds/README.md. It is pure: it
// reads the mesh snapshot it is given and starts nothing; it is safe
// for concurrent use, and equal input gives byte-identical output
// (everything is sorted; Any fields are marshalled deterministically), so
// the server's content-hash versions only move when a sidecar's
// configuration really changes. Its only state is a memo of what every
// sidecar of the current and previous mesh snapshot gets: those
// resources are shared between Generate calls, so NOTHING MAY MODIFY A
// GENERATED RESOURCE (shared.go). A Generator must not be copied.
//
// What the translation does beyond the contract's shapes:
//
//   - Inbound ports are the target ports of the Services selecting the
//     workload plus the ports its MTLSPolicy names; every other port takes
//     the catch-all chains (workload mode) to InboundPassthroughCluster.
//     Ports with appProtocol http, http2 or grpc are tcp_proxy'd (L4) like
//     the others unless HTTPRouting is on; then client sidecars that offer
//     ALPN h2 get an HTTP chain of their own (http.go), whose authorization
//     is per request.
//   - Authorization: DENY AuthorizationPolicies become an rbac filter with
//     action DENY placed before the rbac filter with action ALLOW built from
//     the ALLOW policies (one RBAC policy per rule, named "<ns>/<name>#<i>").
//     On the L4 chains these are network rbac filters deciding connections
//     by identity and port, exactly as mesh.WorkloadPolicies.Authorize:
//     a to entry's HTTP fields (methods, paths) cannot be decided there, so
//     an ALLOW entry with them is dropped and a DENY entry is applied
//     without them (mesh.AuthorizationRule.ConnectionPorts; docs/l7.md,
//     "Authorization at L7"). On chain inbound|<port>|h2 they are
//     envoy.filters.http.rbac filters in the HCM, before the router, with
//     the same names and principals and every field of the to entries
//     (destination_port, :method, url_path), deciding each request exactly
//     as WorkloadPolicies.AuthorizeRequest.
//   - Outbound: a Service is in the mesh (EDS cluster with mTLS) when its
//     namespace has injection on or it has an endpoint that runs the
//     sidecar; other Services' ClusterIPs are forwarded as they are to
//     PassthroughCluster, so they are neither egress nor broken by mTLS.
//     Endpoints are only pods that run the sidecar; the SAN matchers are the
//     identities of those endpoints.
//   - Egress rules are resolved into the leaves of Envoy's filter-chain
//     match tree (port, then destination IP, then SNI, then transport), and
//     each leaf carries the decision of every rule that matches there, so
//     Envoy's "most specific chain wins" gives the policy semantics: a Deny
//     wins over an Allow, Enforce over Audit, a rule without ports applies
//     on every port, "*.example.com" matches subdomains only. What no rule
//     of an Enforce policy allows gets the workload's default verdict: deny
//     by the first Enforce policy with defaultAction Deny (rule "default"),
//     else the outbound policy, flagged ("audit") by the first Audit policy
//     with defaultAction Deny where that lets it out (decide, defaultVerdict).
//   - The sidecar never connects to itself (loop.go): its own
//     ports (15001, 15006, 15000, 15020, 15053) are never inbound ports,
//     whatever Services, MTLSPolicies or weft.dev/inbound-loopback-ports
//     say; both listeners carry a "sidecar|<port>" chain per port to
//     BlackHoleCluster (outbound: for loopback destinations), more
//     specific than the catch-alls; egress rule CIDRs inside loopback get
//     no chain at those ports. Generate fails (checkNoSelfTraffic) rather
//     than emit a chain or cluster that would send a connection there.
//
// Fail closed. A policy the registry rejected is not silently dropped:
//
//   - a rejected AuthorizationPolicy or MTLSPolicy in the workload's
//     namespace puts a DENY-all network rbac filter first on every inbound
//     chain, h2 included (then without http rbac filters)
//     (stat_prefix "weft_rejected_policy", RBAC policy and the chain's
//     "weft.inbound" metadata name the rejected object), so the workload
//     accepts nothing until the policy is fixed or deleted;
//   - a rejected EgressPolicy in the workload's namespace makes its egress
//     default deny (accepted policies' rules still apply);
//   - a rejected MeshConfig "default" makes the outbound policy
//     REGISTRY_ONLY for every workload (MeshConfigs with another name are
//     ignored, as the API says).
type Generator struct {
	memo translatorMemo // shared resources (shared.go)

	// Snapshot returns the current mesh model; nil while there is none.
	Snapshot func() *mesh.Snapshot
	// ControlPlaneAddr is host:port of cluster weft-controlplane; empty:
	// DefaultControlPlaneAddr.
	ControlPlaneAddr string
	// Bundle returns the PEM of every root of the trust domain.
	Bundle func() []byte
	// HTTPRouting: the requests of in-mesh Service ports that declare
	// http, http2 or grpc are routed one by one by the sidecars and
	// carried over HTTP/2 between them (docs/l7.md, http.go). Off: every
	// port is L4, as before. Off by default while the HTTP-aware data
	// plane is being built.
	HTTPRouting bool
}

// controlPlane is ControlPlaneAddr (or the default) as host and port.
func (t *Generator) controlPlane() (string, uint32, error) {
	addr := cmp.Or(t.ControlPlaneAddr, DefaultControlPlaneAddr)
	host, portStr, err := net.SplitHostPort(addr)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || host == "" || port == 0 {
		return "", 0, fmt.Errorf("xds: translate: control plane address %q is not host:port", addr)
	}
	return host, uint32(port), nil
}

// Prepare builds what Generate shares between sidecars for the newest
// mesh snapshot (the shared set and its destination listeners), as the
// first Generate after a change would, and returns; nothing if there is
// no snapshot yet. The ADS server calls it before a generation it charges
// to one node's lookup budget: the mesh-wide build is no node's own.
func (t *Generator) Prepare() {
	if t.Snapshot == nil {
		return
	}
	snap := t.Snapshot()
	host, port, err := t.controlPlane()
	if snap == nil || err != nil {
		return
	}
	t.shared(snap, host, port).destinations()
}

// Generate returns every resource the sidecar of node needs.
func (t *Generator) Generate(node xds.Node) (xds.Resources, error) {
	id := xds.NodeID(node.Name, node.Namespace)
	if t.Snapshot == nil || t.Bundle == nil {
		return nil, errors.New("xds: translate: Generator.Snapshot and Generator.Bundle are required")
	}
	snap := t.Snapshot()
	if snap == nil {
		return nil, fmt.Errorf("xds: translate %s: no mesh snapshot yet", id)
	}
	w, ok := snap.Workload(node.Namespace, node.Name)
	if !ok {
		return nil, fmt.Errorf("xds: translate %s: no such workload", id)
	}
	if !node.ID.IsZero() && node.ID != w.Identity {
		return nil, fmt.Errorf("xds: translate %s: node runs as %s, the workload as %s", id, node.ID, w.Identity)
	}
	pem := t.Bundle()
	if len(pem) == 0 {
		return nil, fmt.Errorf("xds: translate %s: empty trust bundle", id)
	}
	host, port, err := t.controlPlane()
	if err != nil {
		return nil, err
	}
	b := &builder{
		snap: snap, w: w, pol: snap.PoliciesFor(w), td: snap.Mesh.TrustDomain,
		clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		routes:      map[string]*routev3.RouteConfiguration{},
		httpRouting: t.HTTPRouting,
	}
	b.failClosed()
	// The static clusters, the in-mesh Services' clusters and endpoints and
	// the in-mesh outbound chains are the same for every sidecar: shared,
	// never modified (see shared.go).
	sh := t.shared(snap, host, port)
	inbound, err := b.inboundListener()
	if err != nil {
		return nil, err
	}
	// A sidecar that looks destinations up gets the in-mesh chains as
	// destination listeners (destinations.go), not in "outbound".
	meshChains := sh.chains
	if node.DestinationListeners {
		meshChains = nil
	}
	var outbound *listenerv3.Listener
	if len(b.pol.Egress) == 0 && b.rejectedEgress == nil {
		var routes map[string]*routev3.RouteConfiguration
		if outbound, routes, err = sh.plainOutboundOf(b, node.DestinationListeners); err != nil {
			return nil, err
		}
		maps.Copy(b.routes, routes)
	} else {
		egress, err := b.egressChains(sh.taken)
		if err != nil {
			return nil, err
		}
		outbound = b.outboundListenerOf(meshChains, egress)
	}
	listeners := []types.Resource{inbound, outbound}
	// keepRoute: the shared route configurations a node that looks
	// destinations up gets are those of its destination listeners (and
	// any no destination listener names).
	keepRoute := func(string) bool { return true }
	switch d := sh.destinations(); {
	case !node.DestinationListeners:
	case node.LookedUp:
		named := map[string]struct{}{}
		for _, n := range node.Destinations {
			if l := d.byName[n]; l != nil {
				listeners = append(listeners, l)
				for _, r := range d.routes[n] {
					named[r] = struct{}{}
				}
			}
		}
		keepRoute = func(r string) bool {
			_, mesh := d.meshRoutes[r]
			_, asked := named[r]
			return !mesh || asked
		}
	default:
		listeners = append(listeners, d.listeners...)
	}
	// Consumer routes of the workload's namespace (gamma.go) replace
	// shared route configurations by name.
	shRoutes := sh.routes
	if t.HTTPRouting {
		if own := sh.consumerRoutesOf(b); len(own) > 0 {
			maps.Copy(b.routes, own)
			shRoutes = slices.DeleteFunc(slices.Clone(sh.routes), func(r types.Resource) bool {
				return own[r.(*routev3.RouteConfiguration).GetName()] != nil
			})
		}
	}
	if node.DestinationListeners && node.LookedUp {
		shRoutes = slices.DeleteFunc(slices.Clone(shRoutes), func(r types.Resource) bool {
			return !keepRoute(r.(*routev3.RouteConfiguration).GetName())
		})
		maps.DeleteFunc(b.routes, func(name string, _ *routev3.RouteConfiguration) bool { return !keepRoute(name) })
	}
	res := xds.Resources{
		resource.ListenerType: listeners,
		resource.ClusterType: mergeByName(sh.clusters, sortedValues(b.clusters),
			func(r types.Resource) string { return r.(*clusterv3.Cluster).GetName() }),
		resource.EndpointType: slices.Clone(sh.endpoints),
		resource.RouteType: mergeByName(shRoutes, sortedValues(b.routes),
			func(r types.Resource) string { return r.(*routev3.RouteConfiguration).GetName() }),
		resource.SecretType: {t.trustBundle(pem)},
	}
	if err := checkNoSelfTraffic(res, w.IPs); err != nil {
		return nil, fmt.Errorf("xds: translate %s: %w", id, err)
	}
	return res, nil
}

// builder holds one Generate call's work.
type builder struct {
	snap *mesh.Snapshot
	w    *mesh.Workload
	pol  mesh.WorkloadPolicies
	td   spiffeid.TrustDomain

	// Fail-closed state from rejected policies (see Generator).
	rejectedInbound []mesh.Rejected
	rejectedEgress  *mesh.Rejected
	rejectedMesh    *mesh.Rejected

	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
	routes    map[string]*routev3.RouteConfiguration
	// httpRouting is Generator.HTTPRouting.
	httpRouting bool

	// svcs (nil: none) reuses and records the Services' clusters and
	// endpoints across mesh snapshots.
	svcs *svcMemo
}

func (b *builder) failClosed() {
	for i, r := range b.snap.Rejected {
		switch {
		case r.Kind == v1alpha1.MeshConfigKind && r.Name == v1alpha1.DefaultMeshConfigName:
			b.rejectedMesh = &b.snap.Rejected[i]
		case r.Namespace != b.w.Namespace:
		case r.Kind == v1alpha1.AuthorizationPolicyKind || r.Kind == v1alpha1.MTLSPolicyKind:
			b.rejectedInbound = append(b.rejectedInbound, r)
		case r.Kind == v1alpha1.EgressPolicyKind && b.rejectedEgress == nil:
			b.rejectedEgress = &b.snap.Rejected[i]
		}
	}
}

// outboundMode is the outbound policy in force for the workload.
func (b *builder) outboundMode() v1alpha1.OutboundMode {
	if b.rejectedMesh != nil {
		return v1alpha1.OutboundRegistryOnly
	}
	return cmp.Or(b.snap.Mesh.OutboundMode, v1alpha1.OutboundAllowAny)
}

func (b *builder) addStaticClusters(cpHost string, cpPort uint32) {
	b.addCluster(&clusterv3.Cluster{
		Name:                 clusterPassthrough,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(5e9),
	})
	b.addCluster(&clusterv3.Cluster{
		Name:                 clusterInboundPassthrough,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(1e9),
		UpstreamBindConfig:   inboundBindConfig(),
	})
	b.addCluster(&clusterv3.Cluster{
		Name:                 clusterBlackHole,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(1e9),
	})
	b.addCluster(&clusterv3.Cluster{
		Name:                 clusterControlPlane,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:       durationpb.New(5e9),
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		LoadAssignment:       staticAssignment(clusterControlPlane, cpHost, cpPort),
	})
}

func (b *builder) addCluster(c *clusterv3.Cluster) { b.clusters[c.Name] = c }

// staticCluster is a STATIC cluster of one address.
func staticCluster(name, host string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(1e9),
		LoadAssignment:       staticAssignment(name, host, port),
	}
}

func staticAssignment(name, host string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
		}}}},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// trustBundleSecret is the SDS secret trust_bundle: every root of the
// trust domain.
func trustBundleSecret(pem []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: secretTrustBundle,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: slices.Clone(pem)}},
		}},
	}
}

// commonTLS is the CommonTlsContext of both directions: TLS 1.3, the
// sidecar's own SVID (SDS "default", resolved by the sidecar) and, unless
// validation is given, the trust bundle over ADS.
func commonTLS(validation *tlsv3.CommonTlsContext_CombinedValidationContext) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: secretSVID}},
	}
	if validation != nil {
		c.ValidationContextType = validation
	} else {
		c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: trustBundleRef()}
	}
	return c
}

func trustBundleRef() *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: secretTrustBundle, SdsConfig: adsSource()}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func transportSocket(m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(m)},
	}
}

// mustAny packs m deterministically (map fields in key order), so equal
// configuration always hashes equal. Marshalling a message built here
// cannot fail.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("xds: translate: marshal %T: %v", m, err))
	}
	return a
}

// sortedValues returns m's values in key order.
func sortedValues[M ~map[string]V, V types.Resource](m M) []types.Resource {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]types.Resource, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

// listenerFilter is a listener filter with its (empty) typed config.
func listenerFilter(name string, cfg proto.Message) *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

func networkFilter(name string, cfg proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// metadata is filter metadata {key: fields}.
func metadata(key string, fields map[string]*structpb.Value) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{key: {Fields: fields}}}
}
