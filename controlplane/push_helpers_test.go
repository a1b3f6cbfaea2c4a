package controlplane

// Helpers of BenchmarkEndpointChurnPush (push_bench_test.go): a fake
// cluster with a running registry, the control plane's xDS server wired as
// Run wires it, and raw delta ADS clients that ACK everything and time the
// arrival of each pending change.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/controlplane/registry"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/xds/ads"
	"github.com/weftmesh/weft/controlplane/xds/translate"
	"github.com/weftmesh/weft/internal/testutil"
)

var pushTD = spiffeid.RequireTrustDomainFromString("cluster.local")

const (
	pushNamespaces = 20
	pushCPAddr     = "weft-controlplane.weft-system.svc:15012"
)

// pushPod is a client pod: its sidecar's node and SVID.
type pushPod struct {
	ns, name string
	id       spiffeid.ID
	cert     tls.Certificate
}

// pushEnv is the cluster (fake API server), the registry running on it and
// the CA. Changes go through the fake clientset, as the EndpointSlice
// controller's would.
type pushEnv struct {
	kube    *fake.Clientset
	reg     *registry.Registry
	ca      *certs.CA
	serving *servingCert
	slices  []*discoveryv1.EndpointSlice // newest version of each service's slice
	clients []pushPod
	mode    string // "ready" or "address"
	// scope > 0: each client subscribes to the endpoints of scope
	// Services only (scopeNames), and the changes visit those.
	scope      int
	scopeNames []string
	// scopeClusters: the clusters each client subscribes to by name; nil,
	// every cluster (wildcard, as sidecars do today).
	scopeClusters []string
	// lookup: each client says it looks destinations up (client feature
	// weft.destination_listeners) and subscribes to listeners by name:
	// inbound, outbound and scopeListeners (the scoped Services' ClusterIP
	// and port), as weft's sidecar does by default.
	lookup         bool
	scopeListeners []string

	seq int // changes made so far (all phases): picks the service and the marker address
	// clientSet is where the connected clients are told of a change before
	// it is made (nil: none connected yet; changes then wait for nobody).
	clientSet pushClientSet
	last      map[string]*pushChange // EDS resource name -> the latest change to it
	// slipped counts the changes that waited for the previous change of
	// their Service to reach every client (open-loop churn that revisits
	// a Service before its last change was delivered everywhere): two
	// pending changes of one Service could not be told apart by a client
	// (a ready flip and its flip back look alike).
	slipped int
	pubAt   atomic.Int64 // unix ns of the first snapshot published since reset (0: none)
}

func pushLabels(app string) map[string]string { return map[string]string{"app": app} }

// pushInjectedPod is a running pod with the weft-proxy sidecar container.
func pushInjectedPod(ns, name, sa, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID("uid-" + ns + "-" + name)},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: "node-1",
			Containers: []corev1.Container{{Name: "app"}, {Name: "weft-proxy"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

// newPushEnv builds services × eps endpoints (one EndpointSlice per
// service, pods running as the service's own ServiceAccount, all injected)
// and nClients client pods, each with its own ServiceAccount and SVID,
// spread over 20 injected namespaces; it starts a registry on them and
// returns once its first snapshot is published and its watches are open.
func newPushEnv(tb testing.TB, services, eps, nClients int, mode string) *pushEnv {
	tb.Helper()
	var objs []kruntime.Object
	for n := range pushNamespaces {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", n),
			Labels: map[string]string{"weft.dev/inject": "enabled"}}})
	}
	env := &pushEnv{mode: mode, last: map[string]*pushChange{}}
	tcp := corev1.ProtocolTCP
	for i := range services {
		ns, name := fmt.Sprintf("ns-%d", i%pushNamespaces), fmt.Sprintf("svc-%d", i)
		objs = append(objs,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, Selector: pushLabels(name),
				ClusterIP: pushAddr(pushServiceBase, i), ClusterIPs: []string{pushAddr(pushServiceBase, i)},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: tcp}},
			}})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: &tcp}},
		}
		for e := range eps {
			pod, ip := fmt.Sprintf("%s-%d", name, e), pushAddr(pushPodBase, i*eps+e)
			objs = append(objs, pushInjectedPod(ns, pod, name, ip, pushLabels(name)))
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: new("node-1"),
				Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}})
		}
		objs = append(objs, es)
		env.slices = append(env.slices, es)
	}
	for j := range nClients {
		ns, name := fmt.Sprintf("ns-%d", j%pushNamespaces), fmt.Sprintf("client-%d", j)
		objs = append(objs, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
			pushInjectedPod(ns, name, name, pushAddr(pushPodBase, services*eps+j), pushLabels(name)))
		env.clients = append(env.clients, pushPod{ns: ns, name: name, id: spiffeid.RequireFromSegments(pushTD, "ns", ns, "sa", name)})
	}
	env.kube = testutil.FakeKube(nil, objs...)
	var sliceWatch atomic.Bool
	env.kube.PrependWatchReactor("endpointslices", func(k8stesting.Action) (bool, watch.Interface, error) {
		sliceWatch.Store(true)
		return false, nil, nil
	})

	env.ca, env.serving, _ = testServingCert(tb, pushTD)
	for j := range env.clients {
		env.clients[j].cert = testutil.Certificate(tb, env.ca, env.clients[j].id)
	}

	var err error
	env.reg, err = registry.New(registry.Config{Client: env.kube, Weft: testutil.FakeWeft(), TrustDomain: pushTD.String()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = env.reg.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(2 * time.Minute)
	for !sliceWatch.Load() || env.reg.Current() == nil {
		if time.Now().After(deadline) {
			tb.Fatal("registry not synced after 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := env.reg.Current(); len(s.Services) != services || len(s.Workloads) != services*eps+nClients {
		tb.Fatalf("snapshot has %d services and %d workloads", len(s.Services), len(s.Workloads))
	}
	return env
}

// pushChange is one EndpointSlice update in flight.
type pushChange struct {
	id      int            // env.seq when it was made
	cluster string         // the EDS resource it changes
	want    changeWant     // what a CLA carrying it holds
	start   time.Time      // just before the Update call
	got     []atomic.Int64 // per client: ns from start to receipt; 0 = not yet
	left    atomic.Int64
	done    chan struct{} // closed when every client has it
}

func (c *pushChange) seen(client int, at time.Time) {
	d := max(at.Sub(c.start), 1)
	if c.got[client].CompareAndSwap(0, int64(d)) && c.left.Add(-1) == 0 {
		close(c.done)
	}
}

// The benchmark's addresses, data in the fake API server that nothing
// dials: Services in 198.19.0.0/16, pods from 198.18.1.0, and the
// addresses endpoints move to from 198.18.128.0 (198.18.0.0/15 is the
// tests' range; 198.18.0.0/24 is left to the tests' own pods).
var (
	pushServiceBase = netip.MustParseAddr("198.19.0.1")
	pushPodBase     = netip.MustParseAddr("198.18.1.0")
	pushMovedBase   = netip.MustParseAddr("198.18.128.0")
)

// pushAddr is the n-th IPv4 address from base; it panics past 198.19.255.255.
func pushAddr(base netip.Addr, n int) string {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	if n < 0 || !netip.MustParsePrefix("198.18.0.0/15").Contains(a) {
		panic(fmt.Sprintf("push bench: address %d from %s is outside 198.18.0.0/15", n, base))
	}
	return a.String()
}

// service is the index of the Service the k-th change visits: every
// Service before one repeats (37 is coprime with the service count used
// here), or with a scope, the scope's Services.
func (env *pushEnv) service(k int) int {
	if env.scope > 0 {
		k %= env.scope
	}
	return (k * 37) % len(env.slices)
}

// edsName is the EDS resource name of the i-th Service.
func (env *pushEnv) edsName(i int) string {
	es := env.slices[i]
	return fmt.Sprintf("outbound|80|%s.%s", es.Labels[discoveryv1.LabelServiceName], es.Namespace)
}

// change updates the EndpointSlice of the next service (successive
// changes visit all services before one repeats) through the fake API
// server: "ready" flips endpoint 0's ready condition (EDS changes only);
// "address" moves endpoint 0 to a fresh address (EDS, and the outbound
// listener's match on endpoint IPs). The change is registered as pending
// for nClients clients before the Update call.
func (env *pushEnv) change(ctx context.Context, nClients int) (*pushChange, error) {
	k := env.seq
	env.seq++
	i := env.service(k)
	if prev := env.last[env.edsName(i)]; prev != nil {
		select {
		case <-prev.done:
		default:
			env.slipped++
			select {
			case <-prev.done:
			case <-time.After(3 * time.Minute):
				return nil, fmt.Errorf("%s: the previous change has not reached %d of %d clients after 3m", prev.cluster, prev.left.Load(), nClients)
			}
		}
	}
	es := env.slices[i].DeepCopy()
	ep := &es.Endpoints[0]
	c := &pushChange{id: k, cluster: env.edsName(i),
		got: make([]atomic.Int64, nClients), done: make(chan struct{})}
	c.left.Store(int64(nClients))
	if nClients == 0 {
		close(c.done)
	}
	switch env.mode {
	case "address":
		addr := pushAddr(pushMovedBase, k)
		ep.Addresses = []string{addr}
		c.want = changeWant{Addr: addr, AnyHealth: true}
	default:
		ready := !*ep.Conditions.Ready
		ep.Conditions.Ready = &ready
		c.want = changeWant{Addr: ep.Addresses[0], Health: endpointHealth(ready)}
	}
	env.pubAt.Store(0)
	if nClients > 0 {
		if err := env.clientSet.await(c); err != nil {
			return nil, err
		}
		env.last[c.cluster] = c
	}
	c.start = time.Now()
	out, err := env.kube.DiscoveryV1().EndpointSlices(es.Namespace).Update(ctx, es, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	env.slices[i] = out
	return c, nil
}

// changeWant is what a ClusterLoadAssignment carrying a change holds: the
// endpoint's address, and its health unless AnyHealth.
type changeWant struct {
	Addr      string
	Health    corev3.HealthStatus
	AnyHealth bool
}

func (w changeWant) carriedBy(cla *endpointv3.ClusterLoadAssignment) bool {
	return slices.ContainsFunc(claEndpoints(cla), func(e *endpointv3.LbEndpoint) bool {
		return e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == w.Addr &&
			(w.AnyHealth || e.GetHealthStatus() == w.Health)
	})
}

func endpointHealth(ready bool) corev3.HealthStatus {
	if ready {
		return corev3.HealthStatus_HEALTHY
	}
	return corev3.HealthStatus_UNHEALTHY
}

func claEndpoints(cla *endpointv3.ClusterLoadAssignment) []*endpointv3.LbEndpoint {
	var out []*endpointv3.LbEndpoint
	for _, l := range cla.GetEndpoints() {
		out = append(out, l.GetLbEndpoints()...)
	}
	return out
}

// ---- the xDS server, wired as Run wires it ----

type pushServer struct {
	xs    *ads.Server
	prom  *prometheus.Registry
	addr  string
	roots *x509.CertPool
}

// pushPods is Run's registryPods, except that every pod's IP is
// loopback's (where the clients dial from), and a TokenReview that takes
// the token "<ns>/<pod>" as that pod's bound token.
type pushPods struct{ registryPods }

func (p pushPods) Pod(ctx context.Context, ns, name string) (streamauth.Pod, bool, error) {
	pod, ok, err := p.registryPods.Pod(ctx, ns, name)
	pod.IPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	return pod, ok, err
}

func (p pushPods) Authenticate(_ context.Context, token string) (identity.Caller, error) {
	ns, name, _ := strings.Cut(token, "/")
	w, ok := p.reg.Current().Workload(ns, name)
	if !ok {
		return identity.Caller{}, fmt.Errorf("%w: no pod %s", identity.ErrUnauthenticated, token)
	}
	return identity.Caller{Namespace: ns, ServiceAccount: w.ServiceAccount, PodName: name, PodUID: w.UID}, nil
}

// pushToken is a client's per-stream token (see pushPods).
type pushToken string

func (t pushToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}
func (pushToken) RequireTransportSecurity() bool { return true }

// startXDS serves ads.Server (translate.Generator over the registry, streamauth
// over pushPods, caBundle, the control plane's server TLS and interceptor) on 127.0.0.1,
// and forwards every published snapshot to Changed as Run does.
func (env *pushEnv) startXDS(tb testing.TB, debounce time.Duration) *pushServer {
	tb.Helper()
	ps := &pushServer{prom: prometheus.NewRegistry(), roots: x509.NewCertPool()}
	for _, r := range env.ca.Roots() {
		ps.roots.AddCert(r)
	}
	tr := &translate.Generator{Snapshot: env.reg.Current, Bundle: env.ca.BundlePEM, ControlPlaneAddr: pushCPAddr}
	pods := pushPods{registryPods{env.reg}}
	auth, err := streamauth.New(streamauth.Config{Authenticator: pods, Pods: pods, Bundle: caBundle{env.ca}})
	if err != nil {
		tb.Fatal(err)
	}
	ps.xs, err = ads.New(ads.Config{Generator: tr, Authorizer: auth, Bundle: caBundle{env.ca},
		Registerer: ps.prom, Debounce: debounce})
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(serverOptions(credentials.NewTLS(serverTLS(env.ca, env.serving)), ps.xs.StreamInterceptor())...)
	ps.xs.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ps.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	changes := env.reg.Subscribe()
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	wg.Go(func() { _ = ps.xs.Run(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
				env.pubAt.CompareAndSwap(0, time.Now().UnixNano())
				ps.xs.Changed()
			}
		}
	})
	tb.Cleanup(func() {
		cancel()
		gs.Stop()
		wg.Wait()
	})
	return ps
}

// metric returns the sum of a counter family's values, or a histogram's
// sum and count.
func (ps *pushServer) metric(tb testing.TB, name string, label ...string) (sum, count float64) {
	mfs, err := ps.prom.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(label) == 2 && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == label[0] && l.GetValue() == label[1]
			}) {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				sum += h.GetSampleSum()
				count += float64(h.GetSampleCount())
			} else {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum, count
}
