package xds

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	routev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/route/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

func (b builder) routeConfig(m proto.Message) (*model.RouteConfig, error) {
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
		v, err := virtualHost(vh)
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

// virtualHost: domains and exactly one route matching prefix "/" that
// either goes to a cluster or answers directly.
func virtualHost(vh *routev3.VirtualHost) (*model.VirtualHost, error) {
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
	if len(vh.GetRoutes()) != 1 {
		return nil, errors.New(`routes: exactly one route with match {prefix: "/"} is supported`)
	}
	r := vh.GetRoutes()[0]
	// A route's name is cosmetic: accepted, ignored.
	if err := only(r, "name", "match", "route", "direct_response", "metadata"); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	if md := r.GetMetadata(); md != nil {
		if err := only(md, "filter_metadata"); err != nil {
			return nil, fmt.Errorf("route.metadata: %w", err)
		}
		for k, s := range md.GetFilterMetadata() {
			if k != EgressMetadataKey {
				return nil, fmt.Errorf("route.metadata: filter_metadata %q is not supported", k)
			}
			var err error
			if out.Egress, err = egressMeta(s); err != nil {
				return nil, fmt.Errorf("route.metadata: filter_metadata %q: %w", k, err)
			}
		}
	}
	if err := only(r.GetMatch(), "prefix"); err != nil || r.GetMatch().GetPrefix() != "/" {
		return nil, errors.New(`route: only match {prefix: "/"} is supported`)
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if err := only(a.Route, "cluster"); err != nil || a.Route.GetCluster() == "" {
			return nil, errors.New("route: only route {cluster} is supported")
		}
		out.Cluster = a.Route.GetCluster()
	case *routev3.Route_DirectResponse:
		dr := a.DirectResponse
		if err := only(dr, "status", "body"); err != nil {
			return nil, fmt.Errorf("route.direct_response: %w", err)
		}
		var body []byte
		if dr.GetBody() != nil {
			var err error
			if body, err = inlineData(dr.GetBody()); err != nil {
				return nil, fmt.Errorf("route.direct_response.body: %w", err)
			}
		}
		out.Deny = &model.DirectResponse{Status: int(dr.GetStatus()), Body: string(body)}
	default:
		return nil, errors.New("route: route or direct_response is required")
	}
	return out, nil
}

// crossCheck verifies the references between resources that must hold
// now. Names not delivered yet (see Config.Missing) are not errors: the
// control plane need not order a cluster's removal after the listener
// update that stops using it. A resource nothing references, or a reference
// to the wrong kind of cluster, is an error.
func crossCheck(cfg *model.Config) error {
	for _, l := range []*model.Listener{cfg.Inbound, cfg.Outbound} {
		if l == nil {
			continue
		}
		for i, fc := range append(append([]*model.FilterChain(nil), l.Chains...), l.Default) {
			if fc == nil {
				continue
			}
			where := fmt.Sprintf("listener %q filter chain %d%s", l.Name, i, quoted(fc.Name))
			if fc == l.Default {
				where = fmt.Sprintf("listener %q default filter chain", l.Name)
			}
			if c, ok := cfg.Clusters[fc.Target.Cluster]; ok && c.Kind == model.KindControlPlane {
				return fmt.Errorf("%s: tcp_proxy cluster %q is the control plane", where, c.Name)
			}
		}
	}
	for name := range cfg.Endpoints {
		if c, ok := cfg.Clusters[name]; !ok || c.Kind != model.KindEDS {
			return fmt.Errorf("endpoints %q: no EDS cluster %q", name, name)
		}
	}
	referenced := cfg.RouteNames()
	for name, rc := range cfg.Routes {
		if !slices.Contains(referenced, name) {
			return fmt.Errorf("route configuration %q: no http_connection_manager references it", name)
		}
		for _, vh := range rc.VirtualHosts {
			if vh.Cluster == "" {
				continue
			}
			if c, ok := cfg.Clusters[vh.Cluster]; ok && c.Kind == model.KindControlPlane {
				return fmt.Errorf("route configuration %q virtual host %q: cluster %q is the control plane", name, vh.Name, vh.Cluster)
			}
		}
	}
	return nil
}
