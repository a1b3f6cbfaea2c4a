package registry

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/internal/testutil/golden"
)

// demoCluster: namespace shop (injected) with a web service of two injected
// pods (one terminating) and a legacy db pod without a sidecar behind a
// named target port; namespace ops not injected; a selector-less service
// with a hand-made endpoint outside the cluster.
func demoCluster() []runtime.Object {
	return []runtime.Object{
		namespace("shop", true), namespace("ops", false),
		serviceAccount("shop", "web"), serviceAccount("shop", "default"), serviceAccount("ops", "backup"),
		pod("shop", "web-1", "web", "198.18.200.11", true, map[string]string{"app": "web"}),
		pod("shop", "web-2", "web", "198.18.200.12", true, map[string]string{"app": "web"}),
		pod("shop", "db-0", "", "198.18.200.21", false, map[string]string{"app": "db"}),
		pod("ops", "backup.v2-abc", "backup", "198.18.201.5", true, map[string]string{"app": "backup"}),
		svc("shop", "web", "198.19.0.10", map[string]string{"app": "web"},
			svcPort("http-web", 80, intstr.FromInt32(8080), ""),
			svcPort("metrics", 9090, intstr.FromInt32(9090), "http"),
			svcPort("rpc", 7000, intstr.FromInt32(7000), "grpc")),
		endpointSlice("shop", "web", "web-abc", map[string]int32{"http-web": 8080, "metrics": 9090, "rpc": 7000},
			epSpec{ip: "198.18.200.11", pod: "web-1"}, epSpec{ip: "198.18.200.12", pod: "web-2", terminating: true}),
		svc("shop", "db", "198.19.0.20", map[string]string{"app": "db"}, svcPort("tcp-pg", 5432, intstr.FromString("pg"), "")),
		endpointSlice("shop", "db", "db-xyz", map[string]int32{"tcp-pg": 5433}, epSpec{ip: "198.18.200.21", pod: "db-0"}),
		svc("ops", "external-db", "198.19.1.1", nil, svcPort("", 3306, intstr.FromInt32(3306), "")),
		endpointSlice("ops", "external-db", "external-db-1", map[string]int32{"": 3306}, epSpec{ip: "192.0.2.7"}),
	}
}

func TestSnapshotFromCluster(t *testing.T) {
	f := start(t, Config{TrustDomain: "prod.example"}, demoCluster()...)
	s := f.reg.Current()
	if s.Version != 1 {
		t.Errorf("Version %d, want 1", s.Version)
	}
	golden.Check(t, "testdata/demo.snapshot", dump(s))
}

func TestSnapshotLookups(t *testing.T) {
	f := start(t, Config{}, demoCluster()...)
	s := f.reg.Current()

	w, ok := s.WorkloadByNode("backup.v2-abc.ops")
	if !ok || w.Name != "backup.v2-abc" || w.Identity.String() != "spiffe://cluster.local/ns/ops/sa/backup" {
		t.Fatalf("WorkloadByNode(backup.v2-abc.ops) = %+v, %v", w, ok)
	}
	for _, bad := range []string{"", "web-1", "web-1.", ".shop", "web-1.nowhere"} {
		if _, ok := s.WorkloadByNode(bad); ok {
			t.Errorf("WorkloadByNode(%q) found a workload", bad)
		}
	}
	web1, _ := s.Workload("shop", "web-1")
	if got := s.ServicesFor(web1); len(got) != 1 || got[0].Name != "web" {
		t.Errorf("ServicesFor(web-1) = %v, want [web]", got)
	}
	db, _ := s.Workload("shop", "db-0")
	if db.Injected || db.ServiceAccount != "default" {
		t.Errorf("db-0: injected=%v sa=%q, want false and default", db.Injected, db.ServiceAccount)
	}
	for addr, want := range map[string]bool{
		"198.19.0.10:80":          true,  // ClusterIP and port
		"198.19.0.10:81":          false, // not a service port
		"198.18.200.11:8080":      true,  // injected pod, any port
		"198.18.200.11:22":        true,
		"198.18.200.21:5433":      false, // pod without a sidecar
		"192.0.2.7:3306":          false, // outside the cluster
		"198.19.1.1:3306":         true,  // selector-less service's ClusterIP
		"[::1]:80":                false,
		"[::ffff:198.19.0.10]:80": true, // IPv4-mapped
	} {
		if got := s.InMesh(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("InMesh(%s) = %v, want %v", addr, got, want)
		}
	}
	svc, sp, ok := s.ServiceByAddr(netip.MustParseAddrPort("198.19.0.10:9090"))
	if !ok || svc.Name != "web" || sp.Name != "metrics" || sp.AppProtocol != mesh.AppProtocolHTTP {
		t.Errorf("ServiceByAddr(198.19.0.10:9090) = %v %+v %v", svc, sp, ok)
	}
	dbSvc, _ := s.Service("shop", "db")
	if p, ok := dbSvc.Endpoints[0].Port("tcp-pg"); !ok || p != 5433 || dbSvc.Ports[0].TargetPortName != "pg" {
		t.Errorf("db endpoint port = %d %v, target %q", p, ok, dbSvc.Ports[0].TargetPortName)
	}
	if ns, ok := s.Namespace("shop"); !ok || !ns.Injection {
		t.Errorf("Namespace(shop) = %+v %v", ns, ok)
	}
}

func TestServiceDeleteAndRename(t *testing.T) {
	f := start(t, Config{}, demoCluster()...)
	ctx := context.Background()
	f.drain()
	v1 := f.reg.Current().Version

	// Delete: the service goes, its slice lingers until the garbage
	// collector removes it; neither leaves a trace.
	if err := f.kube.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s := f.snapshotWhere("web deleted", func(s *mesh.Snapshot) bool { _, ok := s.Service("shop", "web"); return !ok })
	if s.Version <= v1 || s.InMesh(netip.MustParseAddrPort("198.19.0.10:80")) {
		t.Errorf("after delete: version %d (was %d), 198.19.0.10:80 in mesh %v", s.Version, v1, s.InMesh(netip.MustParseAddrPort("198.19.0.10:80")))
	}
	select {
	case <-f.subs:
	default:
		t.Error("no notification after the delete")
	}

	// Rename: db is deleted and db-v2 created with the same ClusterIP.
	if err := f.kube.CoreV1().Services("shop").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.kube.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "db-xyz", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.create(svc("shop", "db-v2", "198.19.0.20", map[string]string{"app": "db"}, svcPort("tcp-pg", 5432, intstr.FromString("pg"), "")))
	f.create(endpointSlice("shop", "db-v2", "db-v2-1", map[string]int32{"tcp-pg": 5433}, epSpec{ip: "198.18.200.21", pod: "db-0"}))
	s = f.snapshotWhere("db renamed to db-v2", func(s *mesh.Snapshot) bool {
		_, oldOK := s.Service("shop", "db")
		n, newOK := s.Service("shop", "db-v2")
		return !oldOK && newOK && len(n.Endpoints) == 1
	})
	got, _, ok := s.ServiceByAddr(netip.MustParseAddrPort("198.19.0.20:5432"))
	if !ok || got.Name != "db-v2" {
		t.Errorf("ServiceByAddr(198.19.0.20:5432) = %v, want db-v2", got)
	}
}

func TestResyncAndNoOpUpdatesKeepVersion(t *testing.T) {
	f := start(t, Config{Resync: time.Second}, demoCluster()...)
	f.drain()
	v := f.reg.Current().Version
	// Let resyncs of every informer pass (the minimum period is 1 s): each
	// burst rebuilds.
	before := f.reg.rebuilds.Load()
	f.eventually("2 rebuilds from resyncs", func() bool { return f.reg.rebuilds.Load() >= before+2 })
	// A pod change the model does not carry (an annotation) rebuilds too.
	p, err := f.kube.CoreV1().Pods("shop").Get(context.Background(), "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Annotations = map[string]string{"touched": "yes"}
	before = f.reg.rebuilds.Load()
	if _, err := f.kube.CoreV1().Pods("shop").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("rebuild after the annotation", func() bool { return f.reg.rebuilds.Load() > before })
	if got := f.reg.Current().Version; got != v {
		t.Errorf("Version %d after resyncs and a no-op update, want %d", got, v)
	}
	select {
	case <-f.subs:
		t.Error("notified although nothing changed")
	default:
	}
	// A change the model does carry bumps it once.
	p.Labels = map[string]string{"app": "web", "track": "canary"}
	if _, err := f.kube.CoreV1().Pods("shop").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.snapshotWhere("label change published", func(s *mesh.Snapshot) bool { return s.Version == v+1 })
}

func TestSidecarlessPodNotInjected(t *testing.T) {
	f := start(t, Config{}, demoCluster()...)
	f.create(pod("shop", "plain", "web", "198.18.200.99", false, map[string]string{"app": "web"}))
	s := f.snapshotWhere("plain pod", func(s *mesh.Snapshot) bool { _, ok := s.Workload("shop", "plain"); return ok })
	w, _ := s.Workload("shop", "plain")
	if w.Injected {
		t.Error("a pod without weft-proxy is marked injected")
	}
	// weft-proxy as a regular container (older injection) counts as well.
	p := pod("shop", "sidecar-classic", "web", "198.18.200.98", false, nil)
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "weft-proxy"})
	f.create(p)
	s = f.snapshotWhere("classic pod", func(s *mesh.Snapshot) bool { _, ok := s.Workload("shop", "sidecar-classic"); return ok })
	if w, _ := s.Workload("shop", "sidecar-classic"); !w.Injected {
		t.Error("a pod with a weft-proxy container is not marked injected")
	}
	// A finished pod is no workload: its IP may belong to another pod soon.
	done := pod("shop", "job-1", "web", "198.18.200.97", true, nil)
	done.Status.Phase = corev1.PodSucceeded
	f.create(done)
	f.create(pod("shop", "marker", "web", "198.18.200.96", true, nil))
	s = f.snapshotWhere("marker pod", func(s *mesh.Snapshot) bool { _, ok := s.Workload("shop", "marker"); return ok })
	if _, ok := s.Workload("shop", "job-1"); ok {
		t.Error("a succeeded pod is a workload")
	}
}

// acceptedCondition reads an object's Accepted condition from the fake
// API server.
func (f *fixture) acceptedCondition(u *unstructured.Unstructured) *metav1.Condition {
	got, err := f.weft.Resource(resourceOf(u)).Namespace(u.GetNamespace()).Get(context.Background(), u.GetName(), metav1.GetOptions{})
	if err != nil {
		return nil
	}
	st := readStatus(got)
	for i := range st.Conditions {
		if st.Conditions[i].Type == v1alpha1.ConditionAccepted && st.ObservedGeneration == got.GetGeneration() {
			return &st.Conditions[i]
		}
	}
	return nil
}

// eventFor waits for a Warning Event about obj with reason.
func (f *fixture) eventFor(name, reason string) corev1.Event {
	f.t.Helper()
	var found corev1.Event
	f.eventually("event "+reason+" for "+name, func() bool {
		evs, err := f.kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name && e.Reason == reason && e.Type == corev1.EventTypeWarning {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

const goodAuthz = `
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{principals: ["spiffe://cluster.local/ns/ops/*"]}]
    to: [{ports: [8080]}]`

const badAuthz = `
kind: AuthorizationPolicy
metadata: {name: web-typo, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - from: [{principals: ["spiffe://cluster.local/ns/ops/sa/*/x"]}]`

func TestBadAuthorizationPolicyReportedGoodServed(t *testing.T) {
	good, bad := weftObject(t, goodAuthz), weftObject(t, badAuthz)
	f := start(t, Config{}, append(demoCluster(), good, bad)...)
	s := f.reg.Current()
	if len(s.AuthorizationPolicies) != 1 || s.AuthorizationPolicies[0].Name != "web-allow" {
		t.Fatalf("served %v, want only web-allow", s.AuthorizationPolicies)
	}
	if len(s.Rejected) != 1 || s.Rejected[0].Name != "web-typo" || s.Rejected[0].Reason != v1alpha1.ReasonInvalid {
		t.Fatalf("rejected %+v, want web-typo", s.Rejected)
	}
	const wantMsg = `spec.rules[0].from[0].principals[0] "spiffe://cluster.local/ns/ops/sa/*/x": '*' is allowed only at the end`
	if s.Rejected[0].Message != wantMsg {
		t.Errorf("message %q, want %q", s.Rejected[0].Message, wantMsg)
	}
	f.eventually("bad policy Accepted=False", func() bool {
		c := f.acceptedCondition(bad)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonInvalid && c.Message == wantMsg
	})
	f.eventually("good policy Accepted=True", func() bool {
		c := f.acceptedCondition(good)
		return c != nil && c.Status == metav1.ConditionTrue
	})
	ev := f.eventFor("web-typo", v1alpha1.ReasonInvalid)
	if ev.InvolvedObject.Kind != v1alpha1.AuthorizationPolicyKind || ev.Message != wantMsg {
		t.Errorf("event %+v", ev)
	}
	// The good policy decides for web-1: ops may call 8080, shop may not.
	web1, _ := s.Workload("shop", "web-1")
	pol := s.PoliciesFor(web1)
	backup, _ := s.Workload("ops", "backup.v2-abc")
	if ok, _ := pol.Authorize(s.Mesh.TrustDomain, backup.Identity, 8080); !ok {
		t.Error("ops/backup denied on 8080")
	}
	if ok, _ := pol.Authorize(s.Mesh.TrustDomain, web1.Identity, 8080); ok {
		t.Error("shop/web allowed on 8080")
	}
	// Fixing the bad policy (a new generation) accepts it.
	fixed := weftObject(t, badAuthz)
	fixed.SetGeneration(2)
	unstructured.SetNestedSlice(fixed.Object, []any{map[string]any{"from": []any{map[string]any{"principals": []any{"spiffe://cluster.local/ns/ops/sa/x"}}}}}, "spec", "rules")
	if _, err := f.weft.Resource(v1alpha1.AuthorizationPolicyResource).Namespace("shop").Update(context.Background(), fixed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.snapshotWhere("fixed policy served", func(s *mesh.Snapshot) bool { return len(s.AuthorizationPolicies) == 2 && len(s.Rejected) == 0 })
	f.eventually("fixed policy Accepted=True", func() bool {
		c := f.acceptedCondition(fixed)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == 2
	})
}

func TestMeshConfig(t *testing.T) {
	f := start(t, Config{TrustDomain: "prod.example"}, demoCluster()...)
	s := f.reg.Current()
	want := mesh.MeshConfig{TrustDomain: s.Mesh.TrustDomain, MTLSMode: v1alpha1.MTLSStrict, OutboundMode: v1alpha1.OutboundAllowAny}
	if s.Mesh != want || s.Mesh.TrustDomain.Name() != "prod.example" {
		t.Fatalf("defaults: %+v, want %+v in prod.example", s.Mesh, want)
	}

	other := weftObject(t, "kind: MeshConfig\nmetadata: {name: mesh}\nspec: {mtls: {mode: PERMISSIVE}}")
	f.create(other)
	s = f.snapshotWhere("mesh rejected", func(s *mesh.Snapshot) bool { return len(s.Rejected) == 1 })
	if r := s.Rejected[0]; r.Name != "mesh" || r.Reason != v1alpha1.ReasonNotDefault || s.Mesh.MTLSMode != v1alpha1.MTLSStrict {
		t.Errorf("rejected %+v, mesh %+v", r, s.Mesh)
	}
	f.eventually("mesh Accepted=False", func() bool {
		c := f.acceptedCondition(other)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonNotDefault
	})
	f.eventFor("mesh", v1alpha1.ReasonNotDefault)

	def := weftObject(t, "kind: MeshConfig\nmetadata: {name: default}\nspec: {trustDomain: prod.example, mtls: {mode: PERMISSIVE}, outboundTrafficPolicy: {mode: REGISTRY_ONLY}}")
	f.create(def)
	s = f.snapshotWhere("default applied", func(s *mesh.Snapshot) bool { return s.Mesh.FromObject })
	if s.Mesh.MTLSMode != v1alpha1.MTLSPermissive || s.Mesh.OutboundMode != v1alpha1.OutboundRegistryOnly {
		t.Errorf("mesh %+v", s.Mesh)
	}
	// Let the status of generation 1 land first: the fake client's
	// UpdateStatus replaces the whole object without a resourceVersion
	// check, so a status write of generation 1 racing the update below
	// would put the old spec back (a real API server answers 409, and the
	// writer retries on generation 2).
	f.eventually("default Accepted=True", func() bool {
		c := f.acceptedCondition(def)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == 1
	})
	// Another trust domain than the control plane's is refused.
	def.Object["spec"].(map[string]any)["trustDomain"] = "other.example"
	def.SetGeneration(2)
	if _, err := f.weft.Resource(v1alpha1.MeshConfigResource).Update(context.Background(), def, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s = f.snapshotWhere("trust domain mismatch", func(s *mesh.Snapshot) bool { return !s.Mesh.FromObject })
	if len(s.Rejected) != 2 || s.Rejected[0].Reason != v1alpha1.ReasonTrustDomainMismatch {
		t.Errorf("rejected %+v", s.Rejected)
	}
}
