package xds

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	accesslogv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/accesslog/v3"
	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	rbacv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/rbac/v3"
	grpclogv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/access_loggers/grpc/v3"
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
)

// networkFilters reads [rbac...] then exactly one terminal tcp_proxy or
// http_connection_manager. Filters are identified by typed_config type.
func (b builder) networkFilters(fs []*listenerv3.Filter, out *model.FilterChain) error {
	if len(fs) == 0 {
		return errors.New("filters: a tcp_proxy or http_connection_manager filter is required")
	}
	for i, f := range fs {
		err := b.networkFilter(f, out, i == len(fs)-1)
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

func (b builder) networkFilter(f *listenerv3.Filter, out *model.FilterChain, last bool) error {
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
		return httpConnectionManager(&h, out)
	default:
		return fmt.Errorf("%w (typed_config %s)", errUnsupportedFilter, typeName(a))
	}
}

func httpConnectionManager(h *hcmv3.HttpConnectionManager, out *model.FilterChain) error {
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
	hf := h.GetHttpFilters()
	if len(hf) != 1 || hf[0].GetName() != RouterFilterName {
		return fmt.Errorf("http_filters: only [%s] is supported", RouterFilterName)
	}
	if err := only(hf[0], "name", "typed_config"); err != nil {
		return fmt.Errorf("http_filters %q: %w", RouterFilterName, err)
	}
	if a := hf[0].GetTypedConfig(); a != nil {
		var r routerv3.Router
		if err := unpack(a, &r); err != nil {
			return fmt.Errorf("http_filters %q: %w", RouterFilterName, err)
		}
		if err := only(&r); err != nil {
			return fmt.Errorf("http_filters %q: %w", RouterFilterName, err)
		}
	}
	return accessLogs(h.GetAccessLog(), out, &grpclogv3.HttpGrpcAccessLogConfig{})
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
		p, err := b.rbacPolicy(name, r.GetPolicies()[name])
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
	for i, pr := range p.GetPrincipals() {
		prs, err := b.principal(pr, 0)
		if err != nil {
			return out, fmt.Errorf("principals %d: %w", i, err)
		}
		out.Principals = append(out.Principals, prs...)
	}
	return out, nil
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
		if depth >= maxPrincipalSetDepth {
			return nil, fmt.Errorf("and_ids: principal sets nested more than %d deep are not supported", maxPrincipalSetDepth)
		}
		// conform refused an empty set (Envoy's min_items: 1); checked
		// again because an empty and_ids would match everything.
		if len(id.AndIds.GetIds()) == 0 {
			return nil, errors.New("and_ids.ids: must not be empty")
		}
		var all []model.Principal
		for i, sub := range id.AndIds.GetIds() {
			alts, err := b.principal(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("and_ids %d: %w", i, err)
			}
			if len(alts) == 1 {
				all = append(all, alts[0])
			} else {
				all = append(all, model.Principal{Or: alts})
			}
		}
		return []model.Principal{{And: all}}, nil
	case *rbacv3.Principal_OrIds:
		if depth >= maxPrincipalSetDepth {
			return nil, fmt.Errorf("or_ids: principal sets nested more than %d deep are not supported", maxPrincipalSetDepth)
		}
		if len(id.OrIds.GetIds()) == 0 {
			return nil, errors.New("or_ids.ids: must not be empty")
		}
		var out []model.Principal
		for i, sub := range id.OrIds.GetIds() {
			prs, err := b.principal(sub, depth+1)
			if err != nil {
				return nil, fmt.Errorf("or_ids %d: %w", i, err)
			}
			out = append(out, prs...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("identifier %s is not supported (only any, authenticated, and_ids, or_ids)", oneofName(p))
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
