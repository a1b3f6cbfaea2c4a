package translate

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	sxds "github.com/weftmesh/weft/sidecar/xds"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestOnDemandHTTPToTCPThenRemoved, against weft's own ADS server: the
// sidecar keeps taking configurations through the change below.
// Regression (an attack review, session 17):
// an HTTP Service port's cluster is required (its route names it); the
// port turns TCP, so the cluster becomes one learnt on demand, and the
// sidecar unsubscribes it without dropping it. When the Service is then
// deleted, its endpoints (still subscribed) are removed but the cluster
// (unsubscribed) never is: every later configuration misses the endpoints
// and nothing new becomes current again.
func TestOnDemandHTTPToTCPThenRemoved(t *testing.T) {
	const cluster = "outbound|80|svc-0000.ns-00"
	od := newAgreeMeshWith(t, true, onDemand)
	with := func(f func(*mesh.Contents)) mesh.Contents {
		c := bigContents(v1alpha1.OutboundAllowAny, 3, 2)
		f(&c)
		return c
	}
	_, got, err := od.push(with(func(*mesh.Contents) {}))
	if err != nil {
		t.Fatal(err)
	}
	if got[agreeClientNode].Clusters[cluster] == nil {
		t.Fatalf("v1: HTTP port's cluster %s not held (required clusters %q)", cluster, got[agreeClientNode].RequiredClusters())
	}
	tcp := func(c *mesh.Contents) {
		for _, s := range c.Services {
			if s.Name == "svc-0000" {
				s.Ports[0].AppProtocol = ""
			}
		}
	}
	_, got, err = od.push(with(tcp))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := got[agreeClientNode]; cfg.Clusters[cluster] != nil {
		t.Errorf("v2: %s is on demand and not demanded (on demand: %t), yet still held, unsubscribed",
			cluster, strings.Contains(strings.Join(cfg.OnDemandClusters(), ","), cluster))
	}
	removed := with(func(c *mesh.Contents) {
		tcp(c)
		for i, s := range c.Services {
			if s.Name == "svc-0000" {
				c.Services = append(c.Services[:i:i], c.Services[i+1:]...)
				break
			}
		}
	})
	// Published twice: the second snapshot (a new marker chain, nothing
	// else) must reach the sidecar's current configuration.
	_, _ = od.store(removed)
	od.srv.Changed()
	time.Sleep(time.Second)
	_, marker := od.store(removed)
	od.srv.Changed()
	c := od.nodes[agreeClientNode]
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cfg := c.Current(); slices.ContainsFunc(cfg.Outbound.Chains, func(fc *model.FilterChain) bool { return fc.Name == marker }) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("after svc-0000's deletion no new configuration becomes current (chain %s never arrives): waiting for %q", marker, c.Status().Waiting)
	for _, st := range od.srv.Status() {
		if st.Node == agreeClientNode {
			for _, ts := range st.Types {
				t.Logf("control plane says %s: %s (version %q, acked %q)", ts.Type, ts.State, ts.Version, ts.Acked)
			}
		}
	}
}

// TestUnresolvedBackendDoesNotFreeze: a configuration with such a route
// becomes current. Regression (an attack review, session 17; older than
// on demand): a GAMMA route with a backendRef that
// does not resolve names cluster unresolved|..., which no configuration
// has (cluster_not_found_response_code 500, by design). The sidecar's
// Missing counts it as a required cluster, so the configuration with the
// route never becomes current (and, on demand, the client subscribes to it
// by name). Run for both modes: whole mesh and on demand.
func TestUnresolvedBackendDoesNotFreeze(t *testing.T) {
	for _, od := range []bool{false, true} {
		t.Run(map[bool]string{false: "whole", true: "ondemand"}[od], func(t *testing.T) {
			var mods []func(*sxds.ClientConfig)
			if od {
				mods = append(mods, onDemand)
			}
			m := newAgreeMeshWith(t, true, mods...)
			contents := meshContents(v1alpha1.OutboundAllowAny)
			contents.Routes = []*mesh.Route{gammaRoute("demo", "unresolved", 0, onServer80,
				mesh.RouteRule{Matches: prefixMatch("/split"), Backends: to(backend(serverKey, 80, 3),
					mesh.Backend{Service: mesh.Key{Namespace: "demo", Name: "missing"}, Port: 80, Weight: 1, Unresolved: true})})}
			if _, _, err := m.push(contents); err != nil {
				t.Errorf("a route with an unresolved backendRef: %v", err)
			}
		})
	}
}
