package xds

import (
	"reflect"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/names"

	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestBuiltDefaultChainRouteStaysReferenced: a route configuration named only by an
// http_connection_manager in the outbound default chain stays referenced
// (subscribed, kept) once the listener is kept built, through cluster and
// listener-less updates.
func TestBuiltDefaultChainRouteStaysReferenced(t *testing.T) {
	set := mesh{services: []string{"server.demo"}, httpEgress: true}.set(t)
	out := proto.Clone(set[model.ListenerType][model.OutboundListener]).(*listenerv3.Listener)
	var egress *listenerv3.FilterChain
	for i, fc := range out.FilterChains {
		if fc.GetName() == "egress|80|http" {
			egress = fc
			out.FilterChains = append(out.FilterChains[:i:i], out.FilterChains[i+1:]...)
			break
		}
	}
	if egress == nil {
		t.Fatal("no egress chain")
	}
	egress.FilterChainMatch = nil
	out.DefaultFilterChain = egress
	set[model.ListenerType][model.OutboundListener] = out
	if _, err := Build(spiffeid.RequireTrustDomainFromString(names.DefaultTrustDomain), set); err != nil {
		t.Fatalf("an HCM in the outbound default chain: %v", err)
	}
	c, err := New(ClientConfig{NodeID: testNode, Dial: nopDial, Delta: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := applyEachType(t, c, func(typ string) update {
		u := update{typeURL: typ, version: "v1", upsert: map[string]entry{}}
		for n, m := range set[typ] {
			u.upsert[n] = entry{msg: m, version: "1"}
		}
		return u
	})
	if _, rds := c.res.references(); !rds["egress|80"] {
		t.Fatalf("route named by the default chain not referenced: %v", rds)
	}
	// A cluster update (prunes routes by references).
	u := update{typeURL: model.ClusterType, version: "v2", upsert: map[string]entry{}}
	for n, m := range set[model.ClusterType] {
		u.upsert[n] = entry{msg: m, version: "2"}
	}
	if cfg, err = c.apply(u); err != nil || cfg == nil {
		t.Fatalf("clusters v2: %v %v", cfg, err)
	}
	if _, ok := c.res[model.RouteType]["egress|80"]; !ok || cfg.Routes["egress|80"] == nil {
		t.Fatal("route named by the default chain dropped after a cluster update")
	}
	if len(cfg.Missing()) != 0 {
		t.Errorf("missing %v", cfg.Missing())
	}
	fresh, err := Build(c.cfg.TrustDomain, set)
	if err != nil {
		t.Fatal(err)
	}
	fresh.Version, fresh.OnDemand = cfg.Version, cfg.OnDemand
	if !reflect.DeepEqual(fresh, cfg) {
		t.Error("differs from a fresh Build")
	}
	// Delta removes the outbound listener: its route goes with it.
	if cfg, err = c.apply(update{typeURL: model.ListenerType, version: "v3", upsert: map[string]entry{}, removed: []string{model.OutboundListener}}); err != nil || cfg == nil {
		t.Fatalf("remove outbound: %v %v", cfg, err)
	}
	if cfg.Outbound != nil || len(c.res[model.RouteType]) != 0 || len(c.wanted(model.RouteType)) != 0 {
		t.Errorf("outbound removed: listener %v, routes kept %v, wanted %v", cfg.Outbound, c.res.versions(model.RouteType), c.wanted(model.RouteType))
	}
	if _, ok := c.res.builtListeners()[model.OutboundListener]; ok {
		t.Error("removed listener still kept built")
	}
}
