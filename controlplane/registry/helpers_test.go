package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
	"github.com/weftmesh/weft/internal/testutil"
)

// fixture is a registry running against fake clientsets.
type fixture struct {
	t    *testing.T
	kube *kubefake.Clientset
	weft *dynamicfake.FakeDynamicClient
	reg  *Registry
	subs <-chan struct{}
}

// watchedResources is how many watches the registry opens: 5 core and
// discovery resources plus weft's 4.
const watchedResources = 9

// start runs a registry over fake clients holding objs (core objects and
// *unstructured.Unstructured weft objects) and waits until its first
// snapshot is published and every watch is open, so later changes are seen.
func start(t *testing.T, cfg Config, objs ...runtime.Object) *fixture {
	t.Helper()
	var kubeObjs, weftObjs []runtime.Object
	for _, o := range objs {
		if _, ok := o.(*unstructured.Unstructured); ok {
			weftObjs = append(weftObjs, o)
		} else {
			kubeObjs = append(kubeObjs, o)
		}
	}
	f := &fixture{t: t, kube: kubefake.NewClientset(kubeObjs...)}
	f.weft = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		v1alpha1.MeshConfigResource:          "MeshConfigList",
		v1alpha1.MTLSPolicyResource:          "MTLSPolicyList",
		v1alpha1.AuthorizationPolicyResource: "AuthorizationPolicyList",
		v1alpha1.EgressPolicyResource:        "EgressPolicyList",
		httpRouteResource:                    "HTTPRouteList",
		grpcRouteResource:                    "GRPCRouteList",
		referenceGrantResources[0]:           "ReferenceGrantList",
	}, weftObjs...)
	var mu sync.Mutex
	watches := map[string]bool{}
	countWatch := func(a k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		watches[a.GetResource().String()] = true
		mu.Unlock()
		return false, nil, nil
	}
	f.kube.PrependWatchReactor("*", countWatch)
	f.weft.PrependWatchReactor("*", countWatch)

	cfg.Client, cfg.Weft = f.kube, f.weft
	reg, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.reg = reg
	f.subs = reg.Subscribe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-reg.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("registry not ready after 10s")
	}
	f.eventually("every watch open", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(watches) >= watchedResources
	})
	return f
}

// eventually polls cond until it holds (testutil.Eventually).
func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	testutil.Eventually(f.t, what, cond)
}

// snapshotWhere waits for a snapshot satisfying cond.
func (f *fixture) snapshotWhere(what string, cond func(*mesh.Snapshot) bool) *mesh.Snapshot {
	f.t.Helper()
	var s *mesh.Snapshot
	f.eventually(what, func() bool { s = f.reg.Current(); return cond(s) })
	return s
}

// drain empties the subscription channel.
func (f *fixture) drain() {
	select {
	case <-f.subs:
	default:
	}
}

func (f *fixture) create(obj runtime.Object) {
	f.t.Helper()
	ctx := context.Background()
	var err error
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		gvr := resourceOf(o)
		_, err = f.weft.Resource(gvr).Namespace(o.GetNamespace()).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Service:
		_, err = f.kube.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Pod:
		_, err = f.kube.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *discoveryv1.EndpointSlice:
		_, err = f.kube.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		f.t.Fatalf("create: unsupported %T", obj)
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

func resourceOf(u *unstructured.Unstructured) schema.GroupVersionResource {
	switch u.GetKind() {
	case v1alpha1.MeshConfigKind:
		return v1alpha1.MeshConfigResource
	case v1alpha1.MTLSPolicyKind:
		return v1alpha1.MTLSPolicyResource
	case v1alpha1.AuthorizationPolicyKind:
		return v1alpha1.AuthorizationPolicyResource
	case mesh.KindHTTPRoute, mesh.KindGRPCRoute:
		return routeResource(u.GetKind())
	case "ReferenceGrant":
		return referenceGrantResources[0]
	default:
		return v1alpha1.EgressPolicyResource
	}
}

// weftObject parses a weft object written in YAML; generation 1 as the API
// server would set it.
func weftObject(t testing.TB, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	if u.GetAPIVersion() == "" {
		u.SetAPIVersion(v1alpha1.GroupVersion.String())
	}
	if u.GetGeneration() == 0 {
		u.SetGeneration(1)
	}
	return u
}

// Core objects, compactly.

func namespace(name string, injection bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if injection {
		ns.Labels = map[string]string{"weft.dev/inject": "enabled"}
	}
	return ns
}

func serviceAccount(ns, name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// pod makes a running pod; injected adds the weft-proxy native sidecar.
func pod(ns, name, sa, ip string, injected bool, labels map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: "node-1",
			Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
	if injected {
		always := corev1.ContainerRestartPolicyAlways
		p.Spec.InitContainers = []corev1.Container{{Name: "weft-init"}, {Name: "weft-proxy", RestartPolicy: &always}}
	}
	return p
}

func svc(ns, name, clusterIP string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Selector: selector, Ports: ports},
	}
}

func svcPort(name string, p int32, target intstr.IntOrString, appProtocol string) corev1.ServicePort {
	sp := corev1.ServicePort{Name: name, Port: p, TargetPort: target, Protocol: corev1.ProtocolTCP}
	if appProtocol != "" {
		sp.AppProtocol = &appProtocol
	}
	return sp
}

// epSpec is one endpoint of a slice: "ip" or "ip pod" or with a state
// suffix ":notready" / ":terminating".
type epSpec struct {
	ip, pod     string
	notReady    bool
	terminating bool
}

func endpointSlice(ns, service, name string, ports map[string]int32, eps ...epSpec) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for n, p := range ports {
		tcp := corev1.ProtocolTCP
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: new(n), Port: new(p), Protocol: &tcp})
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: new("node-1"),
			Conditions: discoveryv1.EndpointConditions{Ready: new(!e.notReady && !e.terminating), Serving: new(!e.notReady), Terminating: new(e.terminating)}}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

// dump renders a snapshot as stable text for golden files.
func dump(s *mesh.Snapshot) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("mesh: trustDomain=%s mtls=%s outbound=%s fromObject=%v", s.Mesh.TrustDomain, s.Mesh.MTLSMode, s.Mesh.OutboundMode, s.Mesh.FromObject)
	for _, ns := range s.Namespaces {
		p("namespace %s injection=%v", ns.Name, ns.Injection)
	}
	for _, sa := range s.ServiceAccounts {
		p("serviceaccount %s/%s %s", sa.Namespace, sa.Name, sa.ID)
	}
	for _, svc := range s.Services {
		p("service %s/%s type=%s clusterIPs=%v selector=%v", svc.Namespace, svc.Name, svc.Type, svc.ClusterIPs, svc.Selector)
		for _, sp := range svc.Ports {
			target := fmt.Sprint(sp.TargetPort)
			if sp.TargetPortName != "" {
				target = sp.TargetPortName
			}
			p("  port %q %d->%s %s app=%q", sp.Name, sp.Port, target, sp.Protocol, sp.AppProtocol)
		}
		for _, e := range svc.Endpoints {
			pod := "-"
			if e.Pod != nil {
				pod = e.Pod.String()
			}
			p("  endpoint %s ports=%v ready=%v serving=%v terminating=%v pod=%s id=%q injected=%v",
				e.Address, e.Ports, e.Ready, e.Serving, e.Terminating, pod, e.Identity, e.Injected)
		}
		p("  identities %v", svc.Identities)
	}
	for _, w := range s.Workloads {
		p("workload %s node=%s ips=%v sa=%s id=%s injected=%v labels=%v", w.Key(), w.NodeID(), w.IPs, w.ServiceAccount, w.Identity, w.Injected, w.Labels)
	}
	for _, m := range s.MTLSPolicies {
		p("mtlspolicy %s/%s selector=%v mode=%s ports=%v", m.Namespace, m.Name, m.Selector, m.Mode, m.PortModes)
	}
	for _, a := range s.AuthorizationPolicies {
		p("authorizationpolicy %s/%s selector=%v action=%s rules=%+v", a.Namespace, a.Name, a.Selector, a.Action, a.Rules)
	}
	for _, e := range s.EgressPolicies {
		p("egresspolicy %s/%s selector=%v sas=%v mode=%s rules=%+v", e.Namespace, e.Name, e.Selector, e.ServiceAccounts, e.Mode, e.Rules)
	}
	for _, r := range s.Rejected {
		p("rejected %s %s/%s gen=%d %s: %s", r.Kind, r.Namespace, r.Name, r.Generation, r.Reason, r.Message)
	}
	return b.String()
}
