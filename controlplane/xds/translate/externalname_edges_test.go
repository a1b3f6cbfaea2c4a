package translate

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// Tests of edges the mutation run at 4f49dda found unpinned
// ([test-honesty] #24, docs/mutation.md).

// TestExternalNameAllNamesByRules: an ExternalName Service every one of
// whose names a host of the workload's rules names has no names of its
// own there: the sidecar gets no chain or virtual host for it, each name
// is decided by the rules as sent (the rule where it applies, the default
// elsewhere), and nothing is recorded as the Service.
func TestExternalNameAllNamesByRules(t *testing.T) {
	ext := netip.MustParseAddr("198.18.100.9")
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.Services = append(slices.Clone(c.Services),
		&mesh.Service{Namespace: "shop", Name: "docs", Type: "ExternalName", ExternalName: "docs.example.org"})
	c.EgressPolicies = []*mesh.EgressPolicy{{Namespace: "demo", Name: "names", ServiceAccounts: []string{"client"},
		Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressAllow, Rules: []mesh.EgressRule{
			{Hosts: []string{"docs.shop.svc.cluster.local", "docs.shop.svc", "docs.shop"},
				Ports: []mesh.EgressPort{{Number: 443, Protocol: v1alpha1.EgressTLS}}, Action: v1alpha1.EgressDeny},
		}}}
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	l := listener(res, "outbound")
	for _, fc := range l.FilterChains {
		if strings.Contains(fc.GetName(), "externalname") {
			t.Errorf("chain %s for a Service whose names the rules all name", fc.GetName())
		}
	}
	for _, r := range res[resource.RouteType] {
		for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
			if strings.HasPrefix(vh.GetName(), "externalname:") || slices.Contains(vh.GetDomains(), "") {
				t.Errorf("route configuration %s: virtual host %s %q", r.(*routev3.RouteConfiguration).GetName(), vh.GetName(), vh.GetDomains())
			}
		}
	}
	byRule := outcome{decisionDeny, "demo/names", "0"}
	for _, name := range []string{"docs.shop", "docs.shop.svc", "docs.shop.svc.cluster.local"} {
		for _, probe := range []conn{{ext, 443, "tls", name}, {ext, 8443, "tls", name}, {ext, 80, "http", name}} {
			want := outcome{decisionAllow, "demo/names", "default"}
			if probe.port == 443 {
				want = byRule
			}
			got := simulate(t, res, probe)
			if got.decision != want.decision || probe.port == 443 && got != want {
				t.Errorf("%v: %+v, want %+v (as sent)", probe, got, want)
			}
			if f := matchChain(t, l, probe).GetMetadata().GetFilterMetadata()["weft.egress"].GetFields(); f["service"] != nil {
				t.Errorf("%v: decided as the ExternalName Service: %v", probe, f)
			}
		}
	}
	// The chains are those of the same policy in a mesh without the
	// Service.
	c.Services = slices.DeleteFunc(slices.Clone(c.Services), func(s *mesh.Service) bool { return s.Type == "ExternalName" })
	without := listener(generate(t, mesh.NewSnapshot(1, c), "client-7d9f.demo"), "outbound")
	chainNames := func(l *listenerv3.Listener) (out []string) {
		for _, fc := range l.FilterChains {
			out = append(out, fc.GetName())
		}
		return out
	}
	if got, want := chainNames(l), chainNames(without); !slices.Equal(got, want) {
		t.Errorf("chains %q, want those without the Service: %q", got, want)
	}
}

// TestExternalNameBesideCIDRRules: where the only rules that apply are by
// address (no rule by name), plain HTTP is judged by its Host, an
// ExternalName Service's names included: a request to one is decided as
// the Service (the verdict, and so the audit record, names it and its
// target; a 403 says so), by the rules that match its address, at that
// address's verdict.
func TestExternalNameBesideCIDRRules(t *testing.T) {
	c := meshContents(v1alpha1.OutboundAllowAny)
	c.Services = append(slices.Clone(c.Services),
		&mesh.Service{Namespace: "demo", Name: "ext", Type: "ExternalName", ExternalName: "api.example.com"})
	c.EgressPolicies = []*mesh.EgressPolicy{{Namespace: "demo", Name: "cidr", ServiceAccounts: []string{"client"},
		Mode: v1alpha1.EgressEnforce, DefaultAction: v1alpha1.EgressDeny, Rules: []mesh.EgressRule{
			{CIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.200.0/24")}, Action: v1alpha1.EgressAllow},
		}}}
	res := generate(t, mesh.NewSnapshot(0, c), "client-7d9f.demo")
	l := listener(res, "outbound")
	for _, tc := range []struct {
		ip   string
		want outcome
	}{
		{"198.18.100.7", outcome{decisionDeny, "demo/cidr", "default"}},
		{"198.18.200.5", outcome{decisionAllow, "demo/cidr", "0"}},
	} {
		for _, port := range []uint16{80, 8080} {
			probe := conn{netip.MustParseAddr(tc.ip), port, "http", "ext.demo"}
			if got := simulate(t, res, probe); got != tc.want {
				t.Errorf("%v: %+v, want %+v", probe, got, tc.want)
			}
			ch := matchChain(t, l, probe)
			if ch == nil {
				t.Errorf("%v: the default chain, not the Service's virtual host", probe)
				continue
			}
			r := httpRoute(t, res, ch, probe)
			if r == nil {
				t.Errorf("%v: chain %s is not HTTP: the Host is not judged", probe, ch.GetName())
				continue
			}
			f := r.GetMetadata().GetFilterMetadata()["weft.egress"].GetFields()
			if f["service"].GetStringValue() != "demo/ext" || f["host"].GetStringValue() != "api.example.com" {
				t.Errorf("%v: metadata %v, want service demo/ext and host api.example.com", probe, f)
			}
			if tc.want.decision == decisionDeny {
				if body := r.GetDirectResponse().GetBody().GetInlineString(); !strings.Contains(body, "(ExternalName demo/ext → api.example.com) denied by demo/cidr default") {
					t.Errorf("%v: the 403 says %q", probe, body)
				}
			}
		}
	}
}
