package xds

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	routev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	previoushostsv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/weftmesh/weft/sidecar/internal/envoy/type/matcher/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// routeKind is what kind of chain references a route configuration, which
// decides what the configuration may hold.
type routeKind int

const (
	// egressRoutes: referenced by an egress chain (one with weft.egress
	// metadata) of the outbound listener: per virtual host exactly one
	// route matching prefix "/" to a cluster or a direct_response.
	egressRoutes routeKind = iota
	// meshRoutes: referenced by an in-mesh chain (an outbound chain without
	// weft.egress metadata, or any chain of the inbound listener): routes
	// in order, matched on path and headers, to clusters by weight, with a
	// timeout and retries.
	meshRoutes
)

func (k routeKind) String() string {
	if k == meshRoutes {
		return "in-mesh"
	}
	return "egress"
}

// routeRef is a filter chain whose http_connection_manager names a route
// configuration.
type routeRef struct {
	listener string
	chain    chainRef
	kind     routeKind
}

// chainRef names a filter chain in an error: written only then (a
// configuration holds thousands of chains with destinations looked up).
type chainRef struct {
	index int
	name  string // the chain's; "": none
	def   bool   // the listener's default chain
}

func (c chainRef) String() string {
	if c.def {
		return "default filter chain"
	}
	return fmt.Sprintf("filter chain %d%s", c.index, quoted(c.name))
}

// routeRefs returns, by route configuration name, the chains that reference
// it. Build reads the listeners of a set before its route configurations,
// so a route configuration is built knowing its kind.
func routeRefs(cfg *model.Config) map[string][]routeRef {
	refs := map[string][]routeRef{}
	for l := range cfg.All() { // inbound first, then outbound
		for i, fc := range append(slices.Clip(l.Chains), l.Default) {
			if fc == nil || fc.Target.RouteConfig == "" {
				continue
			}
			ref := routeRef{listener: l.Name, chain: chainRef{index: i, name: fc.Name, def: fc == l.Default}, kind: meshRoutes}
			if l.Name == model.OutboundListener && fc.Egress != nil {
				ref.kind = egressRoutes
			}
			refs[fc.Target.RouteConfig] = append(refs[fc.Target.RouteConfig], ref)
		}
	}
	return refs
}

// routeKindOf decides how route configuration name is read: by the chains
// that reference it, which must agree.
func routeKindOf(cfg *model.Config, name string) (routeKind, error) {
	refs := routeRefs(cfg)[name]
	if len(refs) == 0 {
		return 0, errors.New("no http_connection_manager references it")
	}
	for _, r := range refs[1:] {
		if r.kind != refs[0].kind {
			return 0, fmt.Errorf("referenced by the %s listener %q %s and the %s listener %q %s",
				refs[0].kind, refs[0].listener, refs[0].chain, r.kind, r.listener, r.chain)
		}
	}
	return refs[0].kind, nil
}

func (b builder) routeConfig(m proto.Message, kind routeKind) (*model.RouteConfig, error) {
	rc, ok := m.(*routev3.RouteConfiguration)
	if !ok {
		return nil, fmt.Errorf("resource is a %T", m)
	}
	if err := only(rc, "name", "virtual_hosts"); err != nil {
		return nil, err
	}
	out := &model.RouteConfig{Name: rc.GetName()}
	domains := map[string]string{}
	for i, vh := range rc.GetVirtualHosts() {
		v, err := virtualHost(vh, kind)
		if err != nil {
			return nil, fmt.Errorf("virtual host %d%s: %w", i, quoted(vh.GetName()), err)
		}
		for _, d := range v.Domains {
			if prev, dup := domains[d]; dup {
				return nil, fmt.Errorf("virtual host %d%s: domain %q is also in virtual host %q", i, quoted(vh.GetName()), d, prev)
			}
			domains[d] = v.Name
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

// virtualHost: domains, and the routes of its kind.
func virtualHost(vh *routev3.VirtualHost, kind routeKind) (*model.VirtualHost, error) {
	if err := only(vh, "name", "domains", "routes"); err != nil {
		return nil, err
	}
	out := &model.VirtualHost{Name: vh.GetName()}
	for _, d := range vh.GetDomains() {
		d = strings.ToLower(d)
		if i := strings.IndexByte(d, '*'); d != "*" && (i > 0 && i < len(d)-1 || strings.Count(d, "*") > 1) {
			return nil, fmt.Errorf("domain %q: a wildcard must be the first or last character", d)
		}
		out.Domains = append(out.Domains, d)
	}
	if kind == meshRoutes {
		for i, r := range vh.GetRoutes() {
			mr, err := meshRoute(r)
			if err != nil {
				return nil, fmt.Errorf("route %d%s: %w", i, quoted(r.GetName()), err)
			}
			out.Routes = append(out.Routes, mr)
		}
		return out, nil
	}
	return out, egressRoute(vh, out)
}

// egressRoute: exactly one route matching prefix "/" that either goes to a
// cluster or answers directly, with the egress rule that decided.
func egressRoute(vh *routev3.VirtualHost, out *model.VirtualHost) error {
	if len(vh.GetRoutes()) != 1 {
		return errors.New(`routes: exactly one route with match {prefix: "/"} is supported`)
	}
	r := vh.GetRoutes()[0]
	// A route's name is cosmetic: accepted, ignored.
	if err := only(r, "name", "match", "route", "direct_response", "metadata"); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	if md := r.GetMetadata(); md != nil {
		if err := only(md, "filter_metadata"); err != nil {
			return fmt.Errorf("route.metadata: %w", err)
		}
		for k, s := range md.GetFilterMetadata() {
			if k != EgressMetadataKey {
				return fmt.Errorf("route.metadata: filter_metadata %q is not supported", k)
			}
			var err error
			if out.Egress, err = egressMeta(s); err != nil {
				return fmt.Errorf("route.metadata: filter_metadata %q: %w", k, err)
			}
		}
	}
	if err := only(r.GetMatch(), "prefix"); err != nil || r.GetMatch().GetPrefix() != "/" {
		return errors.New(`route: only match {prefix: "/"} is supported`)
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if err := only(a.Route, "cluster"); err != nil || a.Route.GetCluster() == "" {
			return errors.New("route: only route {cluster} is supported")
		}
		out.Cluster = a.Route.GetCluster()
	case *routev3.Route_DirectResponse:
		dr := a.DirectResponse
		if err := only(dr, "status", "body"); err != nil {
			return fmt.Errorf("route.direct_response: %w", err)
		}
		var body []byte
		if dr.GetBody() != nil {
			var err error
			if body, err = inlineData(dr.GetBody()); err != nil {
				return fmt.Errorf("route.direct_response.body: %w", err)
			}
		}
		out.Deny = &model.DirectResponse{Status: int(dr.GetStatus()), Body: string(body)}
	default:
		return errors.New("route: route or direct_response is required")
	}
	return nil
}

// Defaults of Envoy's route action and retry policy.
const (
	defaultRouteTimeout = 15 * time.Second // route.timeout unset
	defaultNumRetries   = 1                // retry_policy.num_retries unset
)

// PreviousHostsPredicate is the one retry host predicate the sidecar
// honours: retries avoid the endpoints already tried.
const PreviousHostsPredicate = "envoy.retry_host_predicates.previous_hosts"

// retryOnTokens are the retry_on conditions the sidecar honours, by
// Envoy's names.
var retryOnTokens = map[string]model.RetryOn{
	"connect-failure":        model.RetryConnectFailure,
	"refused-stream":         model.RetryRefusedStream,
	"reset":                  model.RetryReset,
	"5xx":                    model.Retry5xx,
	"gateway-error":          model.RetryGatewayError,
	"retriable-status-codes": model.RetryRetriableStatusCodes,
	"unavailable":            model.RetryUnavailable,
}

// meshRoute reads a route of an in-mesh virtual host: match {prefix | path
// | path_separated_prefix, headers, query_parameters}, route {cluster |
// weighted_clusters, timeout, retry_policy, prefix_rewrite |
// regex_rewrite, host_rewrite_literal} or redirect, and the header
// mutations of the request and the response.
func meshRoute(r *routev3.Route) (*model.Route, error) {
	// The name labels the route's metrics.
	if err := only(r, "name", "match", "route", "redirect", "direct_response",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	out := &model.Route{Name: r.GetName()}
	var err error
	if out.Match, err = routeMatch(r.GetMatch()); err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	if out.RequestHeaders, err = headerMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), "request_headers"); err != nil {
		return nil, err
	}
	if out.ResponseHeaders, err = headerMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), "response_headers"); err != nil {
		return nil, err
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if err := routeAction(a.Route, matched(r.GetMatch()), out); err != nil {
			return nil, err
		}
	case *routev3.Route_Redirect:
		// Request header mutations have no effect on a redirect, as in
		// Envoy: nothing is forwarded (a Gateway API rule may hold both).
		if out.Redirect, err = redirectAction(a.Redirect, matched(r.GetMatch())); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("only a route action {cluster | weighted_clusters} or a redirect is supported (no direct_response in an in-mesh route)")
	}
	return out, nil
}

// routeAction reads route {cluster | weighted_clusters,
// cluster_not_found_response_code, timeout, retry_policy, prefix_rewrite |
// regex_rewrite, host_rewrite_literal} into out; matched is the route's
// path match, which prefix_rewrite replaces. Errors name the field from
// the route ("route.timeout: ...").
func routeAction(ra *routev3.RouteAction, matched string, out *model.Route) error {
	if err := only(ra, "cluster", "weighted_clusters", "cluster_not_found_response_code", "timeout", "retry_policy", "prefix_rewrite", "regex_rewrite", "host_rewrite_literal"); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	switch code := ra.GetClusterNotFoundResponseCode(); code {
	case routev3.RouteAction_SERVICE_UNAVAILABLE: // the default, 503: ClusterNotFound stays 0
	case routev3.RouteAction_NOT_FOUND:
		out.ClusterNotFound = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.ClusterNotFound = 500
	default: // conform refuses a value Envoy does not define before this
		return fmt.Errorf("route.cluster_not_found_response_code: %v is not a value Envoy defines", code)
	}
	var err error
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.Clusters = []model.WeightedCluster{{Name: cs.Cluster, Weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		if out.Clusters, err = weightedClusters(cs.WeightedClusters); err != nil {
			return fmt.Errorf("route.weighted_clusters: %w", err)
		}
	default:
		return errors.New("route: cluster or weighted_clusters is required")
	}
	out.Timeout = defaultRouteTimeout
	if d := ra.GetTimeout(); d != nil {
		if out.Timeout, err = nonNegative(d); err != nil {
			return fmt.Errorf("route.timeout: %w", err)
		}
	}
	if rp := ra.GetRetryPolicy(); rp != nil {
		if out.Retry, err = retryPolicy(rp); err != nil {
			return fmt.Errorf("route.retry_policy: %w", err)
		}
	}
	if out.PathRewrite, err = pathRewrite(ra.GetPrefixRewrite(), ra.GetRegexRewrite(), matched); err != nil {
		return fmt.Errorf("route.%w", err)
	}
	if h := ra.GetHostRewriteLiteral(); h != "" {
		if err := validHost(h); err != nil {
			return fmt.Errorf("route.host_rewrite_literal: %w", err)
		}
		out.HostRewrite = h
	}
	return nil
}

// matched is a route's path match as configured: what prefix_rewrite
// replaces.
func matched(m *routev3.RouteMatch) string {
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return p.Prefix
	case *routev3.RouteMatch_Path:
		return p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return p.PathSeparatedPrefix
	}
	return ""
}

func routeMatch(m *routev3.RouteMatch) (model.RouteMatch, error) {
	var out model.RouteMatch
	if err := only(m, "prefix", "path", "path_separated_prefix", "headers", "query_parameters"); err != nil {
		return out, err
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		// "" matches every path, as "/" does.
		out.Prefix = p.Prefix
		if out.Prefix == "" {
			out.Prefix = "/"
		}
	case *routev3.RouteMatch_Path:
		if !strings.HasPrefix(p.Path, "/") {
			return out, fmt.Errorf("path %q does not start with \"/\"", p.Path)
		}
		out.Path = p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		// Envoy's rule (conform) refused "", "?", "#" and a trailing "/".
		if !strings.HasPrefix(p.PathSeparatedPrefix, "/") {
			return out, fmt.Errorf("path_separated_prefix %q does not start with \"/\"", p.PathSeparatedPrefix)
		}
		out.PathSeparatedPrefix = p.PathSeparatedPrefix
	default:
		return out, errors.New("prefix, path or path_separated_prefix is required")
	}
	for i, h := range m.GetHeaders() {
		hm, err := headerMatch(h)
		if err != nil {
			return out, fmt.Errorf("headers %d: %w", i, err)
		}
		out.Headers = append(out.Headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := queryMatch(q)
		if err != nil {
			return out, fmt.Errorf("query_parameters %d: %w", i, err)
		}
		out.Query = append(out.Query, qm)
	}
	return out, nil
}

// headerMatch: name, then string_match {exact | prefix} or present_match,
// and invert_match. No specifier is a presence match, as in Envoy;
// present_match false asks for absence, which is the inverted presence.
// The name is a header field's or ":method" (the request's method, as
// Envoy matches it).
func headerMatch(h *routev3.HeaderMatcher) (model.HeaderMatch, error) {
	out := model.HeaderMatch{Name: strings.ToLower(h.GetName()), Invert: h.GetInvertMatch()}
	if err := only(h, "name", "string_match", "present_match", "invert_match"); err != nil {
		return out, err
	}
	// Request headers as the model matches them (http.Header) hold neither
	// pseudo-headers nor Host, which is the :authority in Envoy.
	if out.Name != model.MethodHeader && (strings.HasPrefix(out.Name, ":") || out.Name == "host") {
		return out, fmt.Errorf("name %q: pseudo-headers other than :method, and host, are not supported (virtual host domains match the authority)", h.GetName())
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		var err error
		if out.Exact, out.Prefix, err = exactOrPrefix(s.StringMatch); err != nil {
			return out, err
		}
	case *routev3.HeaderMatcher_PresentMatch:
		out.Present = true
		if !s.PresentMatch {
			out.Invert = !out.Invert
		}
	default:
		out.Present = true
	}
	return out, nil
}

// exactOrPrefix reads the string_match of a header or query parameter
// matcher: exact or prefix, and nothing else (no ignore_case, no suffix,
// contains or regex). One of them is set: conform requires match_pattern.
func exactOrPrefix(m *matcherv3.StringMatcher) (exact, prefix string, err error) {
	if err := only(m, "exact", "prefix"); err != nil {
		return "", "", fmt.Errorf("string_match: only exact or prefix is supported: %w", err)
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return p.Exact, "", nil
	case *matcherv3.StringMatcher_Prefix:
		return "", p.Prefix, nil
	}
	return "", "", errors.New("string_match: exact or prefix is required")
}

// weightedClusters: every cluster named; a cluster of weight 0 (Envoy's
// value when unset) never gets a request and is left out of the model; the
// weights' sum must be positive and fit 32 bits, as Envoy requires.
func weightedClusters(wc *routev3.WeightedCluster) ([]model.WeightedCluster, error) {
	if err := only(wc, "clusters"); err != nil {
		return nil, err
	}
	var out []model.WeightedCluster
	var sum uint64
	for i, c := range wc.GetClusters() {
		if err := only(c, "name", "weight"); err != nil {
			return nil, fmt.Errorf("clusters %d: %w", i, err)
		}
		if c.GetName() == "" {
			return nil, fmt.Errorf("clusters %d: name is required", i)
		}
		w := c.GetWeight().GetValue()
		sum += uint64(w)
		if w > 0 {
			out = append(out, model.WeightedCluster{Name: c.GetName(), Weight: w})
		}
	}
	if sum == 0 {
		return nil, errors.New("the sum of the weights must be greater than 0")
	}
	if sum > math.MaxUint32 {
		return nil, fmt.Errorf("the sum of the weights %d exceeds %d", sum, uint32(math.MaxUint32))
	}
	return out, nil
}

// retryPolicy: retry_on of the honoured conditions only, num_retries,
// per_try_timeout, retry_host_predicate previous_hosts,
// retriable_status_codes.
func retryPolicy(rp *routev3.RetryPolicy) (*model.RetryPolicy, error) {
	if err := only(rp, "retry_on", "num_retries", "per_try_timeout", "retry_host_predicate", "retriable_status_codes"); err != nil {
		return nil, err
	}
	out := &model.RetryPolicy{NumRetries: defaultNumRetries}
	// Envoy's parsing: comma-separated, blanks trimmed, empty tokens skipped.
	for _, tok := range strings.Split(rp.GetRetryOn(), ",") {
		if tok = strings.TrimSpace(tok); tok == "" {
			continue
		}
		on, ok := retryOnTokens[tok]
		if !ok {
			return nil, fmt.Errorf("retry_on: %q is not supported (only %s)", tok, strings.Join(slices.Sorted(maps.Keys(retryOnTokens)), ", "))
		}
		out.On |= on
	}
	if n := rp.GetNumRetries(); n != nil {
		out.NumRetries = n.GetValue()
	}
	if d := rp.GetPerTryTimeout(); d != nil {
		var err error
		if out.PerTryTimeout, err = nonNegative(d); err != nil {
			return nil, fmt.Errorf("per_try_timeout: %w", err)
		}
	}
	for i, p := range rp.GetRetryHostPredicate() {
		if err := retryHostPredicate(p); err != nil {
			return nil, fmt.Errorf("retry_host_predicate %d: %w", i, err)
		}
		out.PreviousHosts = true
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("retriable_status_codes: %d is not an HTTP status", c)
		}
		out.StatusCodes = append(out.StatusCodes, int(c))
	}
	return out, nil
}

// retryHostPredicate accepts previous_hosts, identified by its typed_config
// type or, without one, by name.
func retryHostPredicate(p *routev3.RetryPolicy_RetryHostPredicate) error {
	if err := only(p, "name", "typed_config"); err != nil {
		return err
	}
	if a := p.GetTypedConfig(); a != nil {
		var ph previoushostsv3.PreviousHostsPredicate
		if typeName(a) != envoyName(ph.ProtoReflect().Descriptor()) {
			return fmt.Errorf("%q is not supported (only %s)", p.GetName(), PreviousHostsPredicate)
		}
		if err := unpack(a, &ph); err != nil {
			return err
		}
		return only(&ph)
	}
	if p.GetName() != PreviousHostsPredicate {
		return fmt.Errorf("%q is not supported (only %s)", p.GetName(), PreviousHostsPredicate)
	}
	return nil
}

// nonNegative reads a duration that must be valid and not negative.
func nonNegative(d *durationpb.Duration) (time.Duration, error) {
	if d.CheckValid() != nil {
		return 0, fmt.Errorf("invalid duration {seconds: %d, nanos: %d}", d.GetSeconds(), d.GetNanos())
	}
	if d.AsDuration() < 0 {
		return 0, errors.New("must not be negative")
	}
	return d.AsDuration(), nil
}

// crossCheck verifies the references between resources that must hold
// now. Names not delivered yet (see Config.Missing) are not errors: the
// control plane need not order a cluster's removal after the listener
// update that stops using it. A resource nothing references, or a reference
// to the wrong kind of cluster, is an error: a tcp_proxy to the control
// plane, an egress route to the control plane, an in-mesh route to a
// cluster of the other direction (an outbound route to an inbound|<port>
// cluster, or the reverse).
//
// Whether a cluster carries requests (its HTTP protocol) is NOT checked
// against what references it: when a Service port turns HTTP (or stops
// being HTTP), its cluster and the listener that uses it arrive in
// separate responses, in either order, and a check across them would
// refuse each in turn, forever (the sidecar keeps the configuration of
// before, which is valid on its own). The proxy copes with either mix as
// Envoy does: a tcp_proxy never offers ALPN h2 (the peer's L4 chain takes
// the bytes), and an in-mesh route's cluster without an HTTP protocol is
// sent requests in HTTP/1.1, Envoy's default.
func crossCheck(cfg *model.Config) error {
	for l := range cfg.All() { // inbound, outbound and the destination listeners
		for i, fc := range append(slices.Clip(l.Chains), l.Default) {
			if fc == nil {
				continue
			}
			if c, ok := cfg.Clusters[fc.Target.Cluster]; ok && c.Kind == model.KindControlPlane {
				where := chainRef{index: i, name: fc.Name, def: fc == l.Default}
				return fmt.Errorf("listener %q %s: tcp_proxy cluster %q is the control plane", l.Name, where, c.Name)
			}
		}
	}
	for name := range cfg.Endpoints {
		if c, ok := cfg.Clusters[name]; !ok || c.Kind != model.KindEDS {
			return fmt.Errorf("endpoints %q: no EDS cluster %q", name, name)
		}
	}
	referenced := cfg.RouteNames()
	refs := routeRefs(cfg)
	for _, name := range slices.Sorted(maps.Keys(cfg.Routes)) {
		rc := cfg.Routes[name]
		if !slices.Contains(referenced, name) {
			return fmt.Errorf("route configuration %q: no http_connection_manager references it", name)
		}
		// A configuration the inbound listener serves gets no redirect,
		// header mutation or rewrite, whoever else references it.
		inbound := slices.ContainsFunc(refs[name], func(r routeRef) bool { return r.listener == model.InboundListener })
		for _, vh := range rc.VirtualHosts {
			if vh.Cluster != "" {
				if c, ok := cfg.Clusters[vh.Cluster]; ok && c.Kind == model.KindControlPlane {
					return fmt.Errorf("route configuration %q virtual host %q: cluster %q is the control plane", name, vh.Name, vh.Cluster)
				}
			}
			for i, r := range vh.Routes {
				if f := outboundOnly(r); f != "" && inbound {
					return fmt.Errorf("route configuration %q virtual host %q route %d%s: %s is honoured on routes of the outbound listener only (the server sidecar delivers every request of its port to the app as it came)",
						name, vh.Name, i, quoted(r.Name), f)
				}
				for _, wc := range r.Clusters {
					if _, ok := cfg.Clusters[wc.Name]; !ok && r.ClusterNotFound != 0 {
						// On a route with cluster_not_found_response_code,
						// a cluster the configuration does not have takes
						// its share of the requests to answer them with it
						// (RDS does not validate clusters); the control
						// plane names such a cluster for a backendRef that
						// does not resolve.
						continue
					}
					if err := meshRouteCluster(refs[name][0].listener, wc.Name); err != nil {
						return fmt.Errorf("route configuration %q virtual host %q route %d%s: %w", name, vh.Name, i, quoted(r.Name), err)
					}
				}
			}
		}
	}
	return nil
}

// outboundOnly names the first field of r that only the client sidecar
// applies (its l7 Handler), or "".
func outboundOnly(r *model.Route) string {
	switch {
	case r.Redirect != nil:
		return "redirect"
	case r.ClusterNotFound != 0:
		return "cluster_not_found_response_code"
	case len(r.RequestHeaders.Add) > 0 || len(r.RequestHeaders.Remove) > 0:
		return "request_headers_to_add/remove"
	case len(r.ResponseHeaders.Add) > 0 || len(r.ResponseHeaders.Remove) > 0:
		return "response_headers_to_add/remove"
	case r.PathRewrite != nil:
		return "route.prefix_rewrite/regex_rewrite"
	case r.HostRewrite != "":
		return "route.host_rewrite_literal"
	}
	return ""
}

// meshRouteCluster checks the cluster of an in-mesh route referenced from
// listener: a peer's outbound|... cluster from the outbound listener, the
// app's inbound|<port> from the inbound one (whether it declares an HTTP
// protocol is not checked: see crossCheck).
func meshRouteCluster(listener, name string) error {
	want := "outbound|"
	if listener == model.InboundListener {
		want = "inbound|"
	}
	if !strings.HasPrefix(name, want) {
		return fmt.Errorf("cluster %q is not supported in a route of the %s listener (only %s... clusters)", name, listener, want)
	}
	return nil
}
