package translate

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/controlplane/mesh"
)

// GAMMA (docs/gamma.md): the Gateway API routes attached to a Service
// decide the requests that clients send to it, in place of the default
// route. Route configuration outbound|<port>|<svc>.<ns> of an HTTP port
// holds one Envoy route per match of the routes attached to the port, in
// the Gateway API's precedence (mesh.Snapshot.RoutesFor); a request that
// none matches gets no route, which the sidecar answers 404 (gRPC
// UNIMPLEMENTED), as GAMMA asks. The producer routes are in the shared
// route configuration; a client whose namespace has consumer routes for
// the port gets a route configuration of the same name of its own
// (consumerRoutes).
//
// Routes apply to the Service's frontend only (GEP-1294): requests sent
// straight to a pod's address take chain outbound|<port>|<svc>.<ns>|<target
// port> with route configuration outbound|<port>|<svc>.<ns>|direct, the
// default route (meshChains).

// unresolvedPrefix begins the name of a cluster that stands for a
// backendRef that did not resolve: no cluster of the configuration has it.
const unresolvedPrefix = "unresolved|"

// directSuffix names the route configuration of the chain of an HTTP
// Service port's pod addresses when routes attach to the port.
const directSuffix = "|direct"

// serviceRoutes is route configuration name of svc's port for the clients
// of namespace clientNS ("": every namespace without consumer routes): the
// attached routes' matches, or the default route when none attaches.
func (b *builder) serviceRoutes(name string, svc *mesh.Service, port uint16, clientNS string) *routev3.RouteConfiguration {
	entries := b.snap.RoutesFor(mesh.Key{Namespace: svc.Namespace, Name: svc.Name}, port, clientNS)
	if entries == nil {
		return outboundHTTPRoutes(name, name, svc, port)
	}
	routes := []*routev3.Route{}
	for _, e := range entries {
		routes = append(routes, b.gammaRoutes(e)...)
	}
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    vhostName(svc, port),
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}
}

func vhostName(svc *mesh.Service, port uint16) string {
	return fmt.Sprintf("%s.%s:%d", svc.Name, svc.Namespace, port)
}

// consumerRoutes returns the route configurations the workload gets in
// place of shared ones: those of the HTTP Service ports that consumer
// routes of its namespace attach to (shared is the shared set's by name).
func (b *builder) consumerRoutes(shared map[string]types.Resource) map[string]*routev3.RouteConfiguration {
	out := map[string]*routev3.RouteConfiguration{}
	for _, p := range b.snap.ConsumerParents(b.w.Namespace) {
		svc, ok := b.snap.Service(p.Service.Namespace, p.Service.Name)
		if !ok {
			continue
		}
		for _, sp := range svc.Ports {
			if p.Port != 0 && sp.Port != p.Port {
				continue
			}
			name := fmt.Sprintf("outbound|%d|%s.%s", sp.Port, svc.Name, svc.Namespace)
			if _, ok := shared[name]; ok && out[name] == nil {
				out[name] = b.serviceRoutes(name, svc, sp.Port, b.w.Namespace)
			}
		}
	}
	return out
}

// routedCluster is the cluster of a backend when it is an in-mesh HTTP
// cluster (what meshChains builds for an HTTP port of a meshed Service);
// any other backend cannot take routed requests and is left out.
func (b *builder) routedCluster(be mesh.Backend) (string, bool) {
	svc, ok := b.snap.Service(be.Service.Namespace, be.Service.Name)
	if !ok || svc.Type == "ExternalName" || !meshed(b.snap, svc) {
		return "", false
	}
	for _, sp := range svc.Ports {
		if sp.Port == be.Port && (sp.Protocol == "" || sp.Protocol == "TCP") && isHTTP(sp.AppProtocol) {
			return fmt.Sprintf("outbound|%d|%s.%s", sp.Port, svc.Name, svc.Namespace), true
		}
	}
	return "", false
}

// meshed reports whether svc's clients reach it over mTLS (an EDS cluster):
// it has an endpoint that runs the sidecar, or its namespace has injection.
func meshed(snap *mesh.Snapshot, svc *mesh.Service) bool {
	for i := range svc.Endpoints {
		if ep := &svc.Endpoints[i]; ep.Injected && !ep.Identity.IsZero() {
			return true
		}
	}
	ns, _ := snap.Namespace(svc.Namespace)
	return ns != nil && ns.Injection
}

// gammaRoutes is the Envoy route of one match of a rule: one, or two for a
// ReplacePrefixMatch that one Envoy prefix_rewrite cannot say (splitPrefix);
// none when no backend of the rule can take requests. A backendRef that
// did not resolve (and a rule without any) is a cluster no configuration
// has, unresolved|<port>|<svc>.<ns> (unresolved|none), with
// cluster_not_found_response_code INTERNAL_SERVER_ERROR: its share of the
// requests is answered 500, as the Gateway API asks.
func (b *builder) gammaRoutes(e mesh.RouteEntry) []*routev3.Route {
	rule := e.Rule
	name := fmt.Sprintf("%s/%s#%d", e.Route.Namespace, e.Route.Name, rule.Index)
	var action func(rewrite string) *routev3.Route
	var prefixMod *mesh.PathModifier
	switch {
	case rule.Redirect != nil:
		rd := rule.Redirect
		prefixMod = rd.Path
		action = func(rewrite string) *routev3.Route {
			ra := &routev3.RedirectAction{HostRedirect: rd.Hostname, PortRedirect: uint32(rd.Port), ResponseCode: redirectCode(rd.StatusCode)}
			if rd.Scheme != "" {
				ra.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
			}
			switch {
			case rd.Path != nil && rd.Path.Type == mesh.ReplaceFullPath:
				ra.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.Path.Value}
			case rd.Path != nil:
				ra.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rewrite}
			}
			return &routev3.Route{Action: &routev3.Route_Redirect{Redirect: ra}}
		}
	default:
		var clusters []*routev3.WeightedCluster_ClusterWeight
		invalid := len(rule.Backends) == 0
		if invalid {
			clusters = append(clusters, &routev3.WeightedCluster_ClusterWeight{Name: unresolvedPrefix + "none", Weight: wrapperspb.UInt32(1)})
		}
		for _, be := range rule.Backends {
			switch {
			case be.Weight == 0:
			case be.Unresolved:
				invalid = true
				clusters = append(clusters, &routev3.WeightedCluster_ClusterWeight{
					Name: fmt.Sprintf("%s%d|%s.%s", unresolvedPrefix, be.Port, be.Service.Name, be.Service.Namespace), Weight: wrapperspb.UInt32(be.Weight)})
			default:
				if c, ok := b.routedCluster(be); ok {
					clusters = append(clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(be.Weight)})
				}
			}
		}
		if len(clusters) == 0 {
			return nil
		}
		if rule.Rewrite != nil {
			prefixMod = rule.Rewrite.Path
		}
		action = func(rewrite string) *routev3.Route {
			ra := &routev3.RouteAction{Timeout: durationpb.New(rule.Timeout), RetryPolicy: retryPolicy(rule.BackendTimeout)}
			if invalid {
				ra.ClusterNotFoundResponseCode = routev3.RouteAction_INTERNAL_SERVER_ERROR
			}
			if len(clusters) == 1 {
				ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: clusters[0].Name}
			} else {
				ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: clusters}}
			}
			if rw := rule.Rewrite; rw != nil {
				if rw.Hostname != "" {
					ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Hostname}
				}
				switch {
				case rw.Path != nil && rw.Path.Type == mesh.ReplaceFullPath:
					ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
						Pattern:      &matcherv3.RegexMatcher{Regex: "^/.*$"},
						Substitution: rw.Path.Value,
					}
				case rw.Path != nil:
					ra.PrefixRewrite = rewrite
				}
			}
			return &routev3.Route{Action: &routev3.Route_Route{Route: ra}}
		}
	}

	forms := []pathForm{{nil, ""}}
	if prefixMod != nil && prefixMod.Type == mesh.ReplacePrefixMatch && e.Match.PathType == mesh.PathPrefix {
		forms = splitPrefix(e.Match.Path, prefixMod.Value)
	}
	var out []*routev3.Route
	for _, f := range forms {
		r := action(f.rewrite)
		r.Name, r.Match = name, routeMatch(e.Match, f.match)
		if m := rule.RequestHeaders; m != nil {
			r.RequestHeadersToAdd, r.RequestHeadersToRemove = headersToAdd(m), slices.Clone(m.Remove)
		}
		if m := rule.ResponseHeaders; m != nil {
			r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = headersToAdd(m), slices.Clone(m.Remove)
		}
		out = append(out, r)
	}
	return out
}

// pathForm is a path match of its own (nil: the rule's) and the
// prefix_rewrite that goes with it.
type pathForm struct {
	match   *routev3.RouteMatch
	rewrite string
}

// splitPrefix is ReplacePrefixMatch of prefix by with in Envoy's terms.
// Envoy swaps the matched prefix for prefix_rewrite character by character,
// so path_separated_prefix "/a" with prefix_rewrite "/" makes "/a/b"
// "//b". The Gateway API replaces path elements ("/a/b" → "/b", "/a" →
// "/"). One route says that when prefix is not "/" and with does not end
// in "/"; otherwise two, as Envoy's documentation of prefix_rewrite
// advises: path prefix exactly → with; prefix "<prefix>/" →
// "<with without its trailing />/".
func splitPrefix(prefix, with string) []pathForm {
	if prefix != "/" && !strings.HasSuffix(with, "/") {
		return []pathForm{{nil, with}}
	}
	below := strings.TrimSuffix(prefix, "/") + "/"
	return []pathForm{
		{&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: prefix}}, with},
		{&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: below}}, strings.TrimSuffix(with, "/") + "/"},
	}
}

// routeMatch is m in Envoy's terms; path, when not nil, replaces m's path
// (splitPrefix).
func routeMatch(m mesh.RouteMatch, path *routev3.RouteMatch) *routev3.RouteMatch {
	out := &routev3.RouteMatch{}
	switch {
	case path != nil:
		out.PathSpecifier = path.PathSpecifier
	case m.PathType == mesh.PathExact:
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case m.Path == "/" || m.Path == "":
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	default:
		out.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: m.Path}
	}
	if m.Method != "" {
		out.Headers = append(out.Headers, exactHeader(":method", m.Method))
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, exactHeader(h.Name, h.Value))
	}
	for _, q := range m.QueryParams {
		out.QueryParameters = append(out.QueryParameters, &routev3.QueryParameterMatcher{
			Name: q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value}},
			},
		})
	}
	return out
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
		},
	}
}

// headersToAdd is a HeaderModifier's set (overwrite) and add (append).
// Values are literal: Envoy reads %COMMAND% in a header value as a
// substitution, so every '%' is sent as "%%".
func headersToAdd(m *mesh.HeaderModifier) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range m.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: literalHeaderValue(h.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range m.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: literalHeaderValue(h.Value)},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

// literalHeaderValue is v as a header value Envoy adds as it is.
func literalHeaderValue(v string) string { return strings.ReplaceAll(v, "%", "%%") }

// redirectCode is a redirect's status in Envoy's enum; the Gateway API's
// default is 302.
func redirectCode(status int) routev3.RedirectAction_RedirectResponseCode {
	switch status {
	case 301:
		return routev3.RedirectAction_MOVED_PERMANENTLY
	case 303:
		return routev3.RedirectAction_SEE_OTHER
	case 307:
		return routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		return routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		return routev3.RedirectAction_FOUND
	}
}

// retryPolicy is the mesh's default retry policy (http.go), each try
// bounded by perTry (0: not).
func retryPolicy(perTry time.Duration) *routev3.RetryPolicy {
	p := defaultRetryPolicy()
	if perTry > 0 {
		p.PerTryTimeout = durationpb.New(perTry)
	}
	return p
}
