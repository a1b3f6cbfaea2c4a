package ads

import (
	"fmt"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSubscribedNamesBounded: a client holding a pod's SVID subscribes by
// name to whatever it likes, one request after another, each under the
// message limit. The stream is refused (ResourceExhausted) once it
// subscribes to more than MaxSubscribedNames of one type; names it
// unsubscribes from free room, and another type has its own room.
func TestSubscribedNamesBounded(t *testing.T) {
	h := newHarness(t, harnessOpts{gen: newMeshGen(map[string]string{"outbound|80|web.demo": "198.18.0.7"})})
	c := openDelta(h, saID("demo", "app"))
	ask := func(typ string, sub, unsub []string) {
		t.Helper()
		c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub})
	}
	// answered reads responses (acking each) until one of typ removes
	// name: the control plane's "does not exist" for it.
	answered := func(typ, name string) {
		t.Helper()
		for {
			r := c.next()
			c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
			for _, n := range r.GetRemovedResources() {
				if r.GetTypeUrl() == typ && n == name {
					return
				}
			}
		}
	}
	c.send(&discovery.DeltaDiscoveryRequest{Node: node("app-1.demo"), TypeUrl: resource.ListenerType, ResourceNamesSubscribe: []string{"*"}})
	const chunk = 1 << 13
	names := func(prefix string, from, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s|%d", prefix, from+i)
		}
		return out
	}
	for i := 0; i < MaxSubscribedNames; i += chunk {
		batch := names("outbound|80|scan", i, chunk)
		ask(resource.ClusterType, batch, nil)
		answered(resource.ClusterType, batch[chunk-1])
	}
	// At the limit: one unsubscribed, one more subscribed.
	ask(resource.ClusterType, []string{"outbound|80|swap"}, []string{"outbound|80|scan|0"})
	answered(resource.ClusterType, "outbound|80|swap")
	// Another type's names are counted apart.
	ask(resource.EndpointType, []string{"outbound|80|elsewhere"}, nil)
	answered(resource.EndpointType, "outbound|80|elsewhere")
	if v := testutil.ToFloat64(h.srv.metrics.refused.WithLabelValues("ResourceExhausted")); v != 0 {
		t.Fatalf("refused{ResourceExhausted} = %v at the limit", v)
	}
	// Past it.
	ask(resource.ClusterType, []string{"outbound|80|one-too-many"}, nil)
	err := c.ended()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream subscribed past MaxSubscribedNames ended with %v, want ResourceExhausted", err)
	}
	if v := testutil.ToFloat64(h.srv.metrics.refused.WithLabelValues("ResourceExhausted")); v != 1 {
		t.Fatalf("refused{ResourceExhausted} = %v", v)
	}
}
