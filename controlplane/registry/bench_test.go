package registry

import (
	"fmt"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// benchRegistry is a Registry whose informer caches hold services × eps
// endpoints (one injected pod each, 20 namespaces), without informers
// running: rebuild reads the caches as it does in production.
func benchRegistry(b *testing.B, services, eps int) (*Registry, []*discoveryv1.EndpointSlice) {
	b.Helper()
	weft := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		v1alpha1.MeshConfigResource: "MeshConfigList", v1alpha1.MTLSPolicyResource: "MTLSPolicyList",
		v1alpha1.AuthorizationPolicyResource: "AuthorizationPolicyList", v1alpha1.EgressPolicyResource: "EgressPolicyList",
	})
	r, err := New(Config{Client: kubefake.NewClientset(), Weft: weft})
	if err != nil {
		b.Fatal(err)
	}
	r.status = newStatusWriter(weft, r.listers.weft, record.NewFakeRecorder(100), r.cfg.Clock, r.log)
	core, disc := r.kube.Core().V1(), r.kube.Discovery().V1()
	add := func(inf interface{ Add(any) error }, obj any) {
		if err := inf.Add(obj); err != nil {
			b.Fatal(err)
		}
	}
	var slices []*discoveryv1.EndpointSlice
	for ns := range 20 {
		nsName := fmt.Sprintf("ns-%d", ns)
		add(core.Namespaces().Informer().GetIndexer(), namespace(nsName, true))
		add(core.ServiceAccounts().Informer().GetIndexer(), serviceAccount(nsName, "default"))
	}
	for i := range services {
		ns := fmt.Sprintf("ns-%d", i%20)
		name := fmt.Sprintf("svc-%d", i)
		sel := map[string]string{"app": name}
		add(core.Services().Informer().GetIndexer(), svc(ns, name, fmt.Sprintf("198.19.%d.%d", i/250, i%250+1), sel,
			svcPort("http-web", 80, intstr.FromInt32(8080), ""), svcPort("grpc", 9000, intstr.FromInt32(9000), "")))
		var specs []epSpec
		for e := range eps {
			podName := fmt.Sprintf("%s-%d", name, e)
			ip := fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, e+1)
			add(core.Pods().Informer().GetIndexer(), pod(ns, podName, "default", ip, true, sel))
			specs = append(specs, epSpec{ip: ip, pod: podName})
		}
		es := endpointSlice(ns, name, name+"-abc", map[string]int32{"http-web": 8080, "grpc": 9000}, specs...)
		add(disc.EndpointSlices().Informer().GetIndexer(), es)
		slices = append(slices, es)
	}
	return r, slices
}

// BenchmarkRebuild measures one rebuild of 1,000 services × 10 endpoints:
// unchanged (a resync: build, compare, publish nothing) and changed (one
// endpoint flips readiness: build, compare, publish).
func BenchmarkRebuild(b *testing.B) {
	r, slices := benchRegistry(b, 1000, 10)
	r.rebuild()
	if s := r.Current(); len(s.Services) != 1000 || len(s.Workloads) != 10000 {
		b.Fatalf("snapshot has %d services, %d workloads", len(s.Services), len(s.Workloads))
	}
	b.Run("unchanged", func(b *testing.B) {
		v := r.Current().Version
		b.ReportAllocs()
		for b.Loop() {
			r.rebuild()
		}
		if r.Current().Version != v {
			b.Fatal("unchanged rebuild published")
		}
	})
	b.Run("changed", func(b *testing.B) {
		idx := r.kube.Discovery().V1().EndpointSlices().Informer().GetIndexer()
		v := r.Current().Version
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			es := slices[n%len(slices)].DeepCopy()
			ready := *es.Endpoints[0].Conditions.Ready
			es.Endpoints[0].Conditions.Ready = new(!ready)
			slices[n%len(slices)] = es
			if err := idx.Update(es); err != nil {
				b.Fatal(err)
			}
			r.rebuild()
			n++
		}
		if r.Current().Version != v+uint64(n) {
			b.Fatalf("version %d after %d changes from %d", r.Current().Version, n, v)
		}
	})
}

// BenchmarkLookups measures what the xDS translation does per sidecar.
func BenchmarkLookups(b *testing.B) {
	r, _ := benchRegistry(b, 1000, 10)
	r.rebuild()
	s := r.Current()
	w, ok := s.WorkloadByNode("svc-500-3.ns-0")
	if !ok {
		b.Fatal("no workload")
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.ServicesFor(w)) != 1 {
			b.Fatal("ServicesFor")
		}
		_ = s.PoliciesFor(w)
	}
}
