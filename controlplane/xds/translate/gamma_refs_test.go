package translate

import (
	"testing"

	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/controlplane/xds"
)

// A Service with two HTTP ports to one target port (the conformance suite's
// echo: http 80 and http-alt 8080, both to 8080) and routes on every port:
// the pods' addresses on 8080 belong to the first port's chains, so the
// second port's direct route configuration has no chain and must not be
// sent. The control plane refused such a snapshot on the conformance
// cluster ("mismatched RouteConfiguration reference and resource lengths"),
// and the sidecars kept a configuration without the routes.
// generateWith checks the snapshot's consistency as the ADS server does.
func TestGAMMATwoPortsOneTargetPort(t *testing.T) {
	c := gammaContents(gammaRoute("demo", "r", 0, []mesh.RouteParent{{Service: canaryKey}}, mesh.RouteRule{Backends: to(backend(serverKey, 80, 1))}))
	for _, s := range c.Services {
		if s.Name == "canary" {
			s.Ports = append(s.Ports, mesh.ServicePort{Name: "http-alt", Port: 8080, TargetPort: 8080, Protocol: "TCP", AppProtocol: mesh.AppProtocolHTTP})
		}
	}
	withAndWithoutRoutes(t, c, "client-7d9f.demo", func(withRoutes bool, res xds.Resources) {
		if withRoutes && routeConfig(res, "outbound|80|canary.demo") == nil {
			t.Error("no route configuration outbound|80|canary.demo")
		}
	})
}

// Header values are literal: a '%' goes to Envoy (and to the sidecar,
// which reads Envoy's format) as "%%", or "50%" would be refused (a lone
// '%') and "%HOSTNAME%" would be a substitution.
func TestGAMMAHeaderValuesLiteral(t *testing.T) {
	got := headersToAdd(&mesh.HeaderModifier{
		Set: []mesh.NameValue{{Name: "x-quota", Value: "50%"}},
		Add: []mesh.NameValue{{Name: "x-tmpl", Value: "%HOSTNAME%"}},
	})
	if len(got) != 2 || got[0].GetHeader().GetValue() != "50%%" || got[1].GetHeader().GetValue() != "%%HOSTNAME%%" {
		t.Errorf("headers to add: %v", got)
	}
}
