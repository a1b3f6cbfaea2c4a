package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// meshKey is a (destination port, prefix) leaf taken by an in-mesh chain;
// no egress chain may use it too.
type meshKey struct {
	port   uint16
	prefix netip.Prefix
}

// outboundListenerOf is listener "outbound" on 15001: in-mesh chains, egress
// chains, and the default chain of the outbound policy.
//
// The in-mesh chains are shared between sidecars (shared.go):
// chains must be clipped, so appending the egress chains copies them.
func (b *builder) outboundListenerOf(chains, egress []*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:           listenerOutbound,
		Address:        socketAddress("127.0.0.1", outboundPort),
		UseOriginalDst: wrapperspb.Bool(true),
		ListenerFilters: []*listenerv3.ListenerFilter{
			listenerFilter(wellknown.OriginalDestination, &origdstv3.OriginalDst{}),
			listenerFilter(wellknown.TLSInspector, &tlsinspectorv3.TlsInspector{}),
			listenerFilter(wellknown.HTTPInspector, &httpinspectorv3.HttpInspector{}),
		},
		FilterChains:       slices.Concat(sidecarGuards(loopback4, loopback6), chains, egress),
		DefaultFilterChain: b.defaultEgressChain(),
	}
}

// meshChains are the chains of every Service's ports, matched by ClusterIP
// and service port, and by the sidecar endpoints' IPs and target ports.
// A (port, IP) leaf goes to the first Service (by namespace, name, port)
// that claims it. It also adds the Services' clusters and endpoints.
func (b *builder) meshChains() ([]*listenerv3.FilterChain, map[meshKey]bool) {
	taken := map[meshKey]bool{}
	var chains []*listenerv3.FilterChain
	for _, svc := range b.snap.Services {
		if svc.Type == "ExternalName" {
			continue
		}
		var injected []*mesh.Endpoint
		for i := range svc.Endpoints {
			if ep := &svc.Endpoints[i]; ep.Injected && !ep.Identity.IsZero() {
				injected = append(injected, ep)
			}
		}
		ns, _ := b.snap.Namespace(svc.Namespace)
		meshed := len(injected) > 0 || (ns != nil && ns.Injection)
		// The clusters and endpoints of a Service that did not change
		// since the previous snapshot are the ones built then (shared,
		// never modified: shared.go).
		old, prev, out := b.svcs.reuse(svc, ns != nil && ns.Injection)
		for _, sp := range svc.Ports {
			if sp.Protocol != "" && sp.Protocol != "TCP" {
				continue
			}
			name := fmt.Sprintf("outbound|%d|%s.%s", sp.Port, svc.Name, svc.Namespace)
			cluster := name
			byPort := map[uint16][]netip.Addr{}
			for _, ip := range svc.ClusterIPs {
				byPort[sp.Port] = append(byPort[sp.Port], ip)
			}
			if meshed {
				oldCLA, oldCluster := old.get(name)
				reuse := oldCLA != nil && oldCluster != nil
				cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
				var lbs []*endpointv3.LbEndpoint
				for _, ep := range injected {
					port, ok := endpointPort(ep, sp)
					if !ok {
						continue
					}
					byPort[port] = append(byPort[port], ep.Address)
					if reuse {
						continue
					}
					lbs = append(lbs, &endpointv3.LbEndpoint{
						HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
							Address: socketAddress(ep.Address.String(), uint32(port)),
						}},
						HealthStatus: health(ep),
					})
				}
				if len(lbs) > 0 {
					cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
				}
				eds := oldCluster
				if reuse {
					cla = oldCLA
				} else {
					eds = b.edsCluster(name, svc, injected, b.httpRouting && isHTTP(sp.AppProtocol))
				}
				b.endpoints[name] = cla
				b.addCluster(eds)
				out.put(name, cla, eds)
			} else {
				name = fmt.Sprintf("passthrough|%d|%s.%s", sp.Port, svc.Name, svc.Namespace)
				cluster = clusterPassthrough
			}
			// An HTTP port's requests are routed (http.go): an
			// http_connection_manager with the route configuration of
			// the cluster's name instead of tcp_proxy. When Gateway API
			// routes attach to the port they decide requests to the
			// Service's addresses only; its pods' addresses keep the
			// default route (gamma.go).
			routes, direct := "", ""
			refs := map[string]bool{} // route configurations a chain of this port refers to
			if meshed && b.httpRouting && isHTTP(sp.AppProtocol) {
				routes = name
				b.routes[name] = b.serviceRoutes(name, svc, sp.Port, "")
				if b.snap.HasRoutes(mesh.Key{Namespace: svc.Namespace, Name: svc.Name}, sp.Port) {
					direct = name + directSuffix
					b.routes[direct] = outboundHTTPRoutes(direct, name, svc, sp.Port)
				}
			}
			ports := make([]uint16, 0, len(byPort))
			for p := range byPort {
				ports = append(ports, p)
			}
			slices.Sort(ports)
			for _, port := range ports {
				var frontend, pods []netip.Prefix
				ips := byPort[port]
				slices.SortFunc(ips, netip.Addr.Compare)
				for _, ip := range slices.Compact(ips) {
					k := meshKey{port, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())}
					if taken[k] {
						continue
					}
					taken[k] = true
					if direct != "" && port == sp.Port && !slices.Contains(svc.ClusterIPs, ip) {
						pods = append(pods, k.prefix)
					} else {
						frontend = append(frontend, k.prefix)
					}
				}
				chainName := name
				if port != sp.Port {
					chainName = fmt.Sprintf("%s|%d", name, port)
				}
				if direct != "" && port != sp.Port {
					chains = append(chains, used(b.meshChain(prev, out, chainName, port, name, cluster, direct, frontend), direct, refs))
					continue
				}
				chains = append(chains, used(b.meshChain(prev, out, chainName, port, name, cluster, routes, frontend), routes, refs))
				chains = append(chains, used(b.meshChain(prev, out, fmt.Sprintf("%s|%d", name, port), port, name, cluster, direct, pods), direct, refs))
			}
			// A route configuration no chain refers to is not sent: every
			// (port, address) of its chains may have been taken by an
			// earlier port of the Service with the same target port (echo's
			// http 80 and http-alt 8080, both to 8080), and a snapshot with
			// an unreferenced route configuration is inconsistent.
			for _, rc := range []string{routes, direct} {
				if rc != "" && !refs[rc] {
					delete(b.routes, rc)
				}
			}
		}
	}
	return slices.DeleteFunc(chains, func(c *listenerv3.FilterChain) bool { return c == nil }), taken
}

// used notes in refs that chain, when there is one, refers to route
// configuration routes, and returns chain.
func used(chain *listenerv3.FilterChain, routes string, refs map[string]bool) *listenerv3.FilterChain {
	if chain != nil && routes != "" {
		refs[routes] = true
	}
	return chain
}

// meshChain is in-mesh chain chainName for the destination port and
// prefixes (nil when there are none): tcp_proxy to cluster, or, with
// routes, an http_connection_manager routed by route configuration routes.
// A chain is a function of exactly these inputs: the previous snapshot's
// chain of the Service is reused when they are equal.
func (b *builder) meshChain(prev, out *svcResources, chainName string, port uint16, statPrefix, cluster, routes string, prefixes []netip.Prefix) *listenerv3.FilterChain {
	if len(prefixes) == 0 {
		return nil
	}
	c := &chainInputs{name: chainName, port: port, statPrefix: statPrefix, cluster: cluster, routes: routes, prefixes: prefixes}
	if p := prev.chain(chainName); p != nil && p.same(c) {
		c.chain = p.chain
	} else {
		var ranges []*corev3.CidrRange
		for _, p := range prefixes {
			ranges = append(ranges, cidrRange(p))
		}
		c.chain = &listenerv3.FilterChain{
			Name:             chainName,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(port)), PrefixRanges: ranges},
			Filters: []*listenerv3.Filter{networkFilter(wellknown.TCPProxy, &tcpproxyv3.TcpProxy{
				StatPrefix:       statPrefix,
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
			})},
		}
		if routes != "" {
			c.chain.Filters = []*listenerv3.Filter{hcmFilter(statPrefix, routes)}
		}
	}
	out.putChain(c)
	return c.chain
}

// endpointPort is the port an endpoint serves sp on: from its
// EndpointSlice, else the numeric target port, else (no target port at
// all) the service port.
func endpointPort(ep *mesh.Endpoint, sp mesh.ServicePort) (uint16, bool) {
	if p, ok := ep.Port(sp.Name); ok && p != 0 {
		return p, true
	}
	if sp.TargetPort != 0 {
		return sp.TargetPort, true
	}
	if sp.TargetPortName == "" {
		return sp.Port, true
	}
	return 0, false
}

func health(ep *mesh.Endpoint) corev3.HealthStatus {
	switch {
	case ep.Terminating:
		return corev3.HealthStatus_DRAINING
	case ep.Ready:
		return corev3.HealthStatus_HEALTHY
	default:
		return corev3.HealthStatus_UNHEALTHY
	}
}

// noSidecarPeer is the path of the one SPIFFE ID the cluster of a Service
// without sidecar endpoints accepts: spiffe://<td>/weft/no-sidecar-endpoints.
var noSidecarPeer = []string{"weft", "no-sidecar-endpoints"}

// edsCluster is an in-mesh Service port's cluster: EDS over ADS, mTLS that
// accepts only the SPIFFE IDs the Service's sidecar endpoints run as.
func (b *builder) edsCluster(name string, svc *mesh.Service, injected []*mesh.Endpoint, http bool) *clusterv3.Cluster {
	var ids []string
	for _, ep := range injected {
		ids = append(ids, ep.Identity.String())
	}
	if len(ids) == 0 {
		// A Service of an injected namespace with no sidecar endpoint yet
		// (created before its pods, its pods still starting) has no
		// identity to accept, and an empty list would accept any (Envoy
		// checks no SAN then; the sidecar NACKs it). noSidecarPeer is an
		// ID weft's CA never signs (it signs /ns/<ns>/sa/<sa> only): an
		// endpoint that EDS delivers before the cluster names its
		// identity is refused, not trusted.
		if id, err := spiffeid.FromSegments(b.td, noSidecarPeer...); err == nil {
			ids = []string{id.String()}
		}
	}
	slices.Sort(ids)
	var sans []*tlsv3.SubjectAltNameMatcher
	for _, id := range slices.Compact(ids) {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}},
		})
	}
	upstream := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: commonTLS(&tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: trustBundleRef(),
			},
		}),
		Sni: svc.Name + "." + svc.Namespace + ".svc." + clusterDomain,
	}
	if http {
		upstream.CommonTlsContext.AlpnProtocols = []string{alpnH2}
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		ConnectTimeout:       durationpb.New(1e9),
		TransportSocket:      transportSocket(upstream),
	}
	if http {
		withHTTP(c)
	}
	return c
}

func cidrRange(p netip.Prefix) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
}

func portString(p uint16) string {
	if p == 0 {
		return "*"
	}
	return fmt.Sprint(p)
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
