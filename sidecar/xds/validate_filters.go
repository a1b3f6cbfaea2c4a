package xds

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	accesslogv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/accesslog/v3"
	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	rbacv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/rbac/v3"
	routev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	grpclogv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/access_loggers/grpc/v3"
	httprbacv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/weftmesh/weft/sidecar/internal/envoy/type/matcher/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Network filter names of the contract.
const (
	RBACFilterName     = "envoy.filters.network.rbac"
	TCPProxyFilterName = "envoy.filters.network.tcp_proxy"
	HCMFilterName      = "envoy.filters.network.http_connection_manager"
	RouterFilterName   = "envoy.filters.http.router"
	HTTPRBACFilterName = "envoy.filters.http.rbac"
)

// networkFilters reads [rbac...] then exactly one terminal tcp_proxy or
// http_connection_manager. Filters are identified by typed_config type.
func (b builder) networkFilters(fs []*listenerv3.Filter, out *model.FilterChain, inbound bool) error {
	if len(fs) == 0 {
		return errors.New("filters: a tcp_proxy or http_connection_manager filter is required")
	}
	for i, f := range fs {
		err := b.networkFilter(f, out, i == len(fs)-1, inbound)
		if errors.Is(err, errUnsupportedFilter) {
			return fmt.Errorf("filter %q %w", f.GetName(), err)
		}
		if err != nil {
			return fmt.Errorf("filter %q: %w", f.GetName(), err)
		}
	}
	return nil
}

var errUnsupportedFilter = errors.New("is not supported")

func (b builder) networkFilter(f *listenerv3.Filter, out *model.FilterChain, last, inbound bool) error {
	if err := only(f, "name", "typed_config"); err != nil {
		return err
	}
	a := f.GetTypedConfig()
	if a == nil {
		if slices.Contains([]string{RBACFilterName, TCPProxyFilterName, HCMFilterName}, f.GetName()) {
			return errors.New("typed_config is required")
		}
		return errUnsupportedFilter
	}
	switch typeName(a) {
	case "envoy.extensions.filters.network.rbac.v3.RBAC":
		if last {
			return errors.New("rbac cannot be the last filter: tcp_proxy or http_connection_manager must follow")
		}
		var r netrbacv3.RBAC
		if err := unpack(a, &r); err != nil {
			return err
		}
		return b.rbacFilter(&r, out)
	case "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
		if !last {
			return errors.New("tcp_proxy must be the last filter")
		}
		var t tcpproxyv3.TcpProxy
		if err := unpack(a, &t); err != nil {
			return err
		}
		// stat_prefix is cosmetic: accepted, ignored.
		if err := only(&t, "stat_prefix", "cluster", "access_log"); err != nil {
			return err
		}
		if t.GetCluster() == "" {
			return errors.New("cluster is required")
		}
		out.Target.Cluster = t.GetCluster()
		return accessLogs(t.GetAccessLog(), out, &grpclogv3.TcpGrpcAccessLogConfig{})
	case "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
		if !last {
			return errors.New("http_connection_manager must be the last filter")
		}
		var h hcmv3.HttpConnectionManager
		if err := unpack(a, &h); err != nil {
			return err
		}
		return b.httpConnectionManager(&h, out, inbound)
	default:
		return fmt.Errorf("%w (typed_config %s)", errUnsupportedFilter, typeName(a))
	}
}

func (b builder) httpConnectionManager(h *hcmv3.HttpConnectionManager, out *model.FilterChain, inbound bool) error {
	if err := only(h, "stat_prefix", "codec_type", "rds", "http_filters", "access_log", "strip_any_host_port"); err != nil {
		return err
	}
	out.Target.StripAnyHostPort = h.GetStripAnyHostPort()
	if h.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
		return fmt.Errorf("codec_type %s is not supported (only AUTO)", h.GetCodecType())
	}
	rds := h.GetRds()
	if rds == nil {
		return errors.New("rds is required (inline route_config is not supported)")
	}
	if err := only(rds, "route_config_name", "config_source"); err != nil {
		return fmt.Errorf("rds: %w", err)
	}
	if err := adsSource(rds.GetConfigSource()); err != nil {
		return fmt.Errorf("rds.config_source: %w", err)
	}
	if rds.GetRouteConfigName() == "" {
		return errors.New("rds.route_config_name is required")
	}
	out.Target.RouteConfig = rds.GetRouteConfigName()
	if err := b.httpFilters(h.GetHttpFilters(), out, inbound); err != nil {
		return err
	}
	return accessLogs(h.GetAccessLog(), out, &grpclogv3.HttpGrpcAccessLogConfig{})
}

// httpFilters: [envoy.filters.http.rbac ...] (inbound listener only) then
// exactly one envoy.filters.http.router, the last. The RBAC filters are
// identified by typed_config type (required), the router by it or, without
// one, by name.
func (b builder) httpFilters(hf []*hcmv3.HttpFilter, out *model.FilterChain, inbound bool) error {
	supported := fmt.Sprintf("[%s ..., %s]", HTTPRBACFilterName, RouterFilterName)
	if !inbound {
		supported = fmt.Sprintf("[%s]", RouterFilterName)
	}
	if len(hf) == 0 {
		return fmt.Errorf("http_filters: only %s is supported", supported)
	}
	for i, f := range hf {
		last := i == len(hf)-1
		if err := only(f, "name", "typed_config"); err != nil {
			return fmt.Errorf("http_filters %d %q: %w", i, f.GetName(), err)
		}
		a := f.GetTypedConfig()
		isRBAC := a != nil && typeName(a) == "envoy.extensions.filters.http.rbac.v3.RBAC"
		isRouter := a != nil && typeName(a) == "envoy.extensions.filters.http.router.v3.Router" || a == nil && f.GetName() == RouterFilterName
		switch {
		case isRouter && last:
			if a == nil {
				continue
			}
			var r routerv3.Router
			if err := unpack(a, &r); err != nil {
				return fmt.Errorf("http_filters %d %q: %w", i, f.GetName(), err)
			}
			if err := only(&r); err != nil {
				return fmt.Errorf("http_filters %d %q: %w", i, f.GetName(), err)
			}
		case isRBAC && inbound && !last:
			var r httprbacv3.RBAC
			if err := unpack(a, &r); err != nil {
				return fmt.Errorf("http_filters %d %q: %w", i, f.GetName(), err)
			}
			if err := b.httpRBACFilter(&r, out); err != nil {
				return fmt.Errorf("http_filters %d %q: %w", i, f.GetName(), err)
			}
		case a == nil && f.GetName() == HTTPRBACFilterName:
			return fmt.Errorf("http_filters %d %q: typed_config is required", i, f.GetName())
		default:
			return fmt.Errorf("http_filters: filter %d %q is not supported here: only %s is supported on the %s listener", i, f.GetName(), supported,
				map[bool]string{true: model.InboundListener, false: model.OutboundListener}[inbound])
		}
	}
	return nil
}

// httpRBACFilter reads an envoy.filters.http.rbac filter: rules only, whose
// policies' permissions are those of the contract (httpPermission).
func (b builder) httpRBACFilter(r *httprbacv3.RBAC, out *model.FilterChain) error {
	if err := only(r, "rules"); err != nil {
		return err
	}
	if r.GetRules() == nil {
		// Envoy: no rules, no enforcement. Nothing to evaluate.
		return nil
	}
	f, err := b.rbacRulesWith(r.GetRules(), b.httpRBACPolicy)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	out.HTTPRBAC = append(out.HTTPRBAC, f)
	return nil
}

func (b builder) httpRBACPolicy(name string, p *rbacv3.Policy) (model.RBACPolicy, error) {
	out := model.RBACPolicy{Name: name}
	if err := only(p, "permissions", "principals"); err != nil {
		return out, err
	}
	for i, perm := range p.GetPermissions() {
		alts, err := httpPermission(perm, 0)
		if err != nil {
			return out, fmt.Errorf("permissions %d: %w", i, err)
		}
		out.Permissions = append(out.Permissions, alts...)
	}
	if len(out.Permissions) == 0 {
		// conform refused an empty list (Envoy's min_items: 1); checked
		// again because no Permissions means "Ports decides", any port.
		return out, errors.New("permissions: must not be empty")
	}
	if err := b.policyPrincipals(p, &out); err != nil {
		return out, err
	}
	return out, nil
}

// maxPermissionSetDepth bounds the nesting of or_rules sets in an HTTP RBAC
// policy's permissions (the control plane nests one: or_rules of entries).
const maxPermissionSetDepth = 8

// httpPermission reads an HTTP RBAC permission as alternatives, one of
// which must match (the contract's shape: or_rules of to entries, each an
// and_rules of fields): any; destination_port, header (":method" exact) or
// url_path (exact or prefix) alone; or_rules of permissions (flattened);
// and_rules of fields, each field a leaf or an or_rules of leaves of its
// kind, each kind at most once. Anything deeper or else is refused.
func httpPermission(p *rbacv3.Permission, depth int) ([]model.Permission, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, errors.New("any: false is not supported")
		}
		return []model.Permission{{}}, nil
	case *rbacv3.Permission_OrRules:
		if depth >= maxPermissionSetDepth {
			return nil, fmt.Errorf("or_rules: permission sets nested more than %d deep are not supported", maxPermissionSetDepth)
		}
		if len(r.OrRules.GetRules()) == 0 {
			return nil, errors.New("or_rules.rules: must not be empty")
		}
		var out []model.Permission
		for i, sub := range r.OrRules.GetRules() {
			alts, err := httpPermission(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("or_rules %d: %w", i, err)
			}
			out = append(out, alts...)
		}
		return out, nil
	case *rbacv3.Permission_AndRules:
		if len(r.AndRules.GetRules()) == 0 {
			return nil, errors.New("and_rules.rules: must not be empty")
		}
		var out model.Permission
		seen := map[string]bool{}
		for i, sub := range r.AndRules.GetRules() {
			if a, ok := sub.GetRule().(*rbacv3.Permission_Any); ok && a.Any {
				continue // matches every request
			}
			kind, err := permissionField(sub, &out, true)
			if err != nil {
				return nil, fmt.Errorf("and_rules %d: %w", i, err)
			}
			if seen[kind] {
				return nil, fmt.Errorf("and_rules %d: a second %s condition is not supported (one per kind, its values in or_rules)", i, kind)
			}
			seen[kind] = true
		}
		return []model.Permission{out}, nil
	}
	var out model.Permission
	if _, err := permissionField(p, &out, false); err != nil {
		return nil, err
	}
	return []model.Permission{out}, nil
}

// permissionField adds a field condition to out: destination_port, header
// (":method" exact), url_path (exact or prefix), or, when orAllowed, an
// or_rules of leaves of one of those kinds. It returns the kind.
func permissionField(p *rbacv3.Permission, out *model.Permission, orAllowed bool) (string, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort == 0 || r.DestinationPort > 65535 {
			return "", fmt.Errorf("destination_port %d is not a port", r.DestinationPort)
		}
		out.Ports = append(out.Ports, uint16(r.DestinationPort))
		return "destination_port", nil
	case *rbacv3.Permission_Header:
		m, err := methodMatcher(r.Header)
		if err != nil {
			return "", fmt.Errorf("header: %w", err)
		}
		out.Methods = append(out.Methods, m)
		return "header", nil
	case *rbacv3.Permission_UrlPath:
		m, err := urlPathMatcher(r.UrlPath)
		if err != nil {
			return "", fmt.Errorf("url_path: %w", err)
		}
		out.Paths = append(out.Paths, m)
		return "url_path", nil
	case *rbacv3.Permission_OrRules:
		if !orAllowed {
			break
		}
		if len(r.OrRules.GetRules()) == 0 {
			return "", errors.New("or_rules.rules: must not be empty")
		}
		kind := ""
		for i, sub := range r.OrRules.GetRules() {
			k, err := permissionField(sub, out, false)
			if err != nil {
				return "", fmt.Errorf("or_rules %d: %w", i, err)
			}
			if kind != "" && k != kind {
				return "", fmt.Errorf("or_rules %d: %s after %s: inside and_rules an or_rules holds conditions of one kind", i, k, kind)
			}
			kind = k
		}
		return kind, nil
	}
	if orAllowed {
		return "", fmt.Errorf("rule %s is not supported inside and_rules (only destination_port, header, url_path, any, or_rules of one of those)", oneofName(p))
	}
	return "", fmt.Errorf("rule %s is not supported here (only destination_port, header, url_path)", oneofName(p))
}

// methodMatcher: header {name: ":method", string_match: {exact}}.
func methodMatcher(h *routev3.HeaderMatcher) (string, error) {
	if err := only(h, "name", "string_match"); err != nil {
		return "", fmt.Errorf("%w (only name \":method\" with string_match.exact)", err)
	}
	if h.GetName() != ":method" {
		return "", fmt.Errorf("name %q is not supported (only \":method\")", h.GetName())
	}
	sm := h.GetStringMatch()
	if sm == nil || only(sm, "exact") != nil || sm.GetExact() == "" {
		return "", errors.New("string_match: only a non-empty exact method is supported")
	}
	return sm.GetExact(), nil
}

// urlPathMatcher: url_path {path: {exact | prefix}}, starting with "/".
func urlPathMatcher(pm *matcherv3.PathMatcher) (model.PathMatch, error) {
	if err := only(pm, "path"); err != nil {
		return model.PathMatch{}, err
	}
	sm := pm.GetPath()
	if sm == nil || only(sm, "exact", "prefix") != nil {
		return model.PathMatch{}, errors.New("path: only exact or prefix is supported")
	}
	var out model.PathMatch
	v := ""
	switch m := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Exact, v = m.Exact, m.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Prefix, v = m.Prefix, m.Prefix
	}
	if !strings.HasPrefix(v, "/") {
		return model.PathMatch{}, fmt.Errorf("path %q: must start with \"/\"", v)
	}
	return out, nil
}

// accessLogs accepts gRPC access logs (of want's type) to the control plane.
func accessLogs(logs []*accesslogv3.AccessLog, out *model.FilterChain, want proto.Message) error {
	for i, al := range logs {
		if err := accessLog(al, want); err != nil {
			return fmt.Errorf("access_log %d: %w", i, err)
		}
		out.AccessLog = true
	}
	return nil
}

func accessLog(al *accesslogv3.AccessLog, want proto.Message) error {
	if err := only(al, "name", "typed_config"); err != nil {
		return err
	}
	if al.GetTypedConfig() == nil {
		return errors.New("typed_config is required")
	}
	if err := unpack(al.GetTypedConfig(), want); err != nil {
		return err
	}
	var cc *grpclogv3.CommonGrpcAccessLogConfig
	switch c := want.(type) {
	case *grpclogv3.TcpGrpcAccessLogConfig:
		if err := only(c, "common_config"); err != nil {
			return err
		}
		cc = c.GetCommonConfig()
	case *grpclogv3.HttpGrpcAccessLogConfig:
		if err := only(c, "common_config"); err != nil {
			return err
		}
		cc = c.GetCommonConfig()
	}
	// log_name names the log stream; accepted and ignored.
	if err := only(cc, "log_name", "grpc_service", "transport_api_version"); err != nil {
		return fmt.Errorf("common_config: %w", err)
	}
	if cc.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		return errors.New("common_config.transport_api_version must be V3")
	}
	gs := cc.GetGrpcService()
	if err := only(gs, "envoy_grpc"); err != nil {
		return fmt.Errorf("common_config.grpc_service: %w", err)
	}
	if err := only(gs.GetEnvoyGrpc(), "cluster_name"); err != nil {
		return fmt.Errorf("common_config.grpc_service.envoy_grpc: %w", err)
	}
	if n := gs.GetEnvoyGrpc().GetClusterName(); n != model.ControlPlaneCluster {
		return fmt.Errorf("common_config.grpc_service.envoy_grpc.cluster_name %q is not supported (only %q)", n, model.ControlPlaneCluster)
	}
	return nil
}

func (b builder) rbacFilter(r *netrbacv3.RBAC, out *model.FilterChain) error {
	// stat_prefix and shadow_rules_stat_prefix are cosmetic: accepted, ignored.
	if err := only(r, "stat_prefix", "rules", "shadow_rules", "shadow_rules_stat_prefix"); err != nil {
		return err
	}
	for _, rs := range []struct {
		field  string
		rules  *rbacv3.RBAC
		shadow bool
	}{{"rules", r.GetRules(), false}, {"shadow_rules", r.GetShadowRules(), true}} {
		if rs.rules == nil {
			continue
		}
		f, err := b.rbacRules(rs.rules)
		if err != nil {
			return fmt.Errorf("%s: %w", rs.field, err)
		}
		f.Shadow = rs.shadow
		out.RBAC = append(out.RBAC, f)
	}
	return nil
}

func (b builder) rbacRules(r *rbacv3.RBAC) (model.RBACFilter, error) {
	return b.rbacRulesWith(r, b.rbacPolicy)
}

// rbacRulesWith reads a rule set, each policy by policy.
func (b builder) rbacRulesWith(r *rbacv3.RBAC, policy func(string, *rbacv3.Policy) (model.RBACPolicy, error)) (model.RBACFilter, error) {
	var out model.RBACFilter
	if err := only(r, "action", "policies"); err != nil {
		return out, err
	}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
	case rbacv3.RBAC_DENY:
		out.Action = model.RBACDeny
	default:
		return out, fmt.Errorf("action %s is not supported", r.GetAction())
	}
	for _, name := range slices.Sorted(maps.Keys(r.GetPolicies())) {
		p, err := policy(name, r.GetPolicies()[name])
		if err != nil {
			return out, fmt.Errorf("policy %q: %w", name, err)
		}
		out.Policies = append(out.Policies, p)
	}
	return out, nil
}

func (b builder) rbacPolicy(name string, p *rbacv3.Policy) (model.RBACPolicy, error) {
	out := model.RBACPolicy{Name: name}
	if err := only(p, "permissions", "principals"); err != nil {
		return out, err
	}
	anyPort := false
	for i, perm := range p.GetPermissions() {
		ports, isAny, err := permission(perm)
		if err != nil {
			return out, fmt.Errorf("permissions %d: %w", i, err)
		}
		anyPort = anyPort || isAny
		out.Ports = append(out.Ports, ports...)
	}
	if anyPort {
		out.Ports = nil
	}
	slices.Sort(out.Ports)
	out.Ports = slices.Compact(out.Ports)
	if err := b.policyPrincipals(p, &out); err != nil {
		return out, err
	}
	return out, nil
}

func (b builder) policyPrincipals(p *rbacv3.Policy, out *model.RBACPolicy) error {
	for i, pr := range p.GetPrincipals() {
		prs, err := b.principal(pr, 0)
		if err != nil {
			return fmt.Errorf("principals %d: %w", i, err)
		}
		out.Principals = append(out.Principals, prs...)
	}
	return nil
}

// permission: any, destination_port, or or_rules of those.
func permission(p *rbacv3.Permission) (ports []uint16, isAny bool, err error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return nil, r.Any, nil
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort == 0 || r.DestinationPort > 65535 {
			return nil, false, fmt.Errorf("destination_port %d is not a port", r.DestinationPort)
		}
		return []uint16{uint16(r.DestinationPort)}, false, nil
	case *rbacv3.Permission_OrRules:
		for i, sub := range r.OrRules.GetRules() {
			ps, a, err := permission(sub)
			if err != nil {
				return nil, false, fmt.Errorf("or_rules %d: %w", i, err)
			}
			ports, isAny = append(ports, ps...), isAny || a
		}
		return ports, isAny, nil
	}
	return nil, false, fmt.Errorf("rule %s is not supported (only any, destination_port, or_rules)", oneofName(p))
}

// maxPrincipalSetDepth bounds the nesting of and_ids and or_ids sets in a
// policy's principals (the control plane nests two: and_ids of or_ids).
// Envoy sets no bound of its own; deeper configuration is refused rather
// than evaluated by unbounded recursion.
const maxPrincipalSetDepth = 8

// principal: any, authenticated.principal_name {exact | prefix}, and_ids or
// or_ids of those, sets nested at most maxPrincipalSetDepth deep (depth is
// the number of sets p is in). It returns p as alternatives, one of which
// must match: or_ids are flattened into them (a policy's principals are
// alternatives too), and_ids are one Principal with And set.
func (b builder) principal(p *rbacv3.Principal, depth int) ([]model.Principal, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, errors.New("any: false is not supported")
		}
		return []model.Principal{{Any: true}}, nil
	case *rbacv3.Principal_Authenticated_:
		if err := only(id.Authenticated, "principal_name"); err != nil {
			return nil, fmt.Errorf("authenticated: %w", err)
		}
		sm := id.Authenticated.GetPrincipalName()
		if err := only(sm, "exact", "prefix"); err != nil || sm == nil {
			return nil, errors.New("authenticated.principal_name: only exact or prefix is supported")
		}
		switch m := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			if _, err := b.memberID(m.Exact); err != nil {
				return nil, fmt.Errorf("authenticated.principal_name.exact: %w", err)
			}
			return []model.Principal{{Exact: m.Exact}}, nil
		case *matcherv3.StringMatcher_Prefix:
			if err := b.memberPrefix(m.Prefix); err != nil {
				return nil, fmt.Errorf("authenticated.principal_name.prefix: %w", err)
			}
			return []model.Principal{{Prefix: m.Prefix}}, nil
		}
	case *rbacv3.Principal_AndIds:
		sets, err := b.principalSet("and_ids", id.AndIds.GetIds(), depth)
		if err != nil {
			return nil, err
		}
		var all []model.Principal
		for _, alts := range sets {
			if len(alts) == 1 {
				all = append(all, alts[0])
			} else {
				all = append(all, model.Principal{Or: alts})
			}
		}
		return []model.Principal{{And: all}}, nil
	case *rbacv3.Principal_OrIds:
		sets, err := b.principalSet("or_ids", id.OrIds.GetIds(), depth)
		if err != nil {
			return nil, err
		}
		return slices.Concat(sets...), nil
	}
	return nil, fmt.Errorf("identifier %s is not supported (only any, authenticated, and_ids, or_ids)", oneofName(p))
}

// principalSet reads the ids of an and_ids or or_ids (field) that is in
// depth sets: nested at most maxPrincipalSetDepth deep and not empty
// (conform refused an empty set, Envoy's min_items: 1; checked again
// because an empty and_ids would match everything); each id as its
// alternatives (principal).
func (b builder) principalSet(field string, ids []*rbacv3.Principal, depth int) ([][]model.Principal, error) {
	if depth >= maxPrincipalSetDepth {
		return nil, fmt.Errorf("%s: principal sets nested more than %d deep are not supported", field, maxPrincipalSetDepth)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s.ids: must not be empty", field)
	}
	sets := make([][]model.Principal, len(ids))
	for i, sub := range ids {
		alts, err := b.principal(sub, depth+1)
		if err != nil {
			return nil, fmt.Errorf("%s %d: %w", field, i, err)
		}
		sets[i] = alts
	}
	return sets, nil
}

// oneofName names the populated field of a message's only oneof.
func oneofName(m proto.Message) string {
	r := m.ProtoReflect()
	if od := r.Descriptor().Oneofs(); od.Len() > 0 {
		if fd := r.WhichOneof(od.Get(0)); fd != nil {
			return string(fd.Name())
		}
	}
	return "(none)"
}
