//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
)

// grpcReport is what testapp grpc-call prints.
type grpcReport struct {
	Calls    int            `json:"calls"`
	ServedBy map[string]int `json:"served_by"`
	Errors   map[string]int `json:"errors"`
	Seconds  float64        `json:"seconds"`
}

// grpcCall runs testapp grpc-call in the client pod and decodes its report.
func grpcCall(t *testing.T, ns, client, addr string, n, c int) grpcReport {
	t.Helper()
	out, err := kubectlExec(t, ns, client, "app", "/usr/local/bin/testapp", "grpc-call", "-addr", addr,
		"-n", fmt.Sprint(n), "-c", fmt.Sprint(c))
	// The report is the one JSON line (stderr says why when no call
	// succeeded, and the exit status is then 1).
	var line string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, "{") {
			line = l
		}
	}
	var rep grpcReport
	if jerr := json.Unmarshal([]byte(strings.TrimSpace(line)), &rep); jerr != nil {
		t.Fatalf("grpc-call: %v (%v)\n%s", jerr, err, out)
	}
	if rep.Calls != n {
		t.Fatalf("grpc-call made %d calls, want %d\n%s", rep.Calls, n, out)
	}
	return rep
}

// deployReplicas creates a Deployment of testapp with replicas pods
// labelled app=label (and name=name), running as sa, and waits until all
// are ready; it returns their names.
func deployReplicas(t *testing.T, ns, name, label, sa string, replicas int32, args ...string) []string {
	t.Helper()
	tmpl := testappPod(name, nil, args...)
	tmpl.Labels = map[string]string{"app": label, "name": name}
	tmpl.Spec.ServiceAccountName = sa
	tmpl.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "grpc", ContainerPort: 9000}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(context.Background(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var names []string
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d replicas of %s ready", replicas, name), func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "name=" + name})
		if err != nil || len(pods.Items) != int(replicas) {
			return false, nil
		}
		names = names[:0]
		for i := range pods.Items {
			if !podReady(&pods.Items[i]) {
				return false, nil
			}
			names = append(names, pods.Items[i].Name)
		}
		return true, nil
	})
	return names
}

// TestHTTPRouting ([l7]): with weftctl install --http-routing, a gRPC
// client's one connection to a Service of three replicas reaches all
// three, request by request, where the L4 path sends every call to one;
// a replica that answers UNAVAILABLE is retried around (no call fails);
// an AuthorizationPolicy naming gRPC method paths decides each request.
func TestHTTPRouting(t *testing.T) {
	const ns = "e2e-l7"
	meshNamespace(t, ns, "client", "server")
	ctx := context.Background()
	grpcProto := "grpc"
	if _, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "greeter"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "greeter"},
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 9000, TargetPort: intstr.FromString("grpc"), AppProtocol: &grpcProto}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	servers := deployReplicas(t, ns, "greeter", "greeter", "server", 3, "grpc-serve", "-addr", ":9000")
	client := deployTestappAs(t, ns, "client", "client", "svid")
	for _, p := range append([]string{client.Name}, servers...) {
		requireSynced(t, p+"."+ns)
	}
	addr := "greeter." + ns + ".svc.cluster.local:9000"

	// The L4 path: one connection, one server pod, every call.
	l4 := grpcCall(t, ns, client.Name, addr, 300, 4)
	t.Logf("L4: %+v", l4)
	if len(l4.ServedBy) != 1 || len(l4.Errors) != 0 {
		t.Fatalf("L4: one gRPC connection was answered by %v (errors %v), want one pod", l4.ServedBy, l4.Errors)
	}

	// HTTP routing on: install again with --http-routing (a rolling
	// restart of the control plane), and off again at the end.
	withHTTPRouting(t)
	// Each sidecar picks the change up when it reconnects to the
	// restarted control plane; a replica whose sidecar has not yet got
	// its h2 chain fails the client sidecar's connections and is ejected
	// for 30 s (outlier detection), so all three may take a while.
	for _, p := range append([]string{client.Name}, servers...) {
		requireSynced(t, p+"."+ns)
	}
	waitFor(t, 2*time.Minute, "the client's sidecar routing greeter's requests to all three replicas", func(context.Context) (bool, error) {
		rep := grpcCall(t, ns, client.Name, addr, 30, 2)
		return len(rep.ServedBy) == len(servers), nil
	})
	const calls = 900
	l7 := grpcCall(t, ns, client.Name, addr, calls, 4)
	t.Logf("HTTP routing: %+v", l7)
	if len(l7.Errors) != 0 {
		t.Errorf("HTTP routing: failed calls %v", l7.Errors)
	}
	even := float64(calls) / float64(len(servers))
	for _, s := range servers {
		n := l7.ServedBy[s]
		t.Logf("replica %s: %d calls, %+.1f %% of even", s, n, 100*(float64(n)-even)/even)
		// Peak-EWMA power of two choices is not round robin: it sends
		// fewer requests to a replica that answers slower, as one does
		// when the machine's 2 cores are busy (alone: 300/306/294; under
		// a mutation run or builds beside it: 141/248/511, 119/371/410).
		// The spread is reported above; what L4 cannot do is reach every
		// replica over one connection, and a replica with under a
		// quarter of its share means the balancing is broken.
		if float64(n) < even/4 {
			t.Errorf("replica %s answered %d of %d calls over one connection, want about %.0f", s, n, calls, even)
		}
	}
	if got := sidecarMetric(t, ns, client.Name, "weft_sidecar_http_requests_total", map[string]string{"direction": "outbound"}); got < calls {
		t.Errorf("the client's sidecar counted %v outbound requests, want >= %d", got, calls)
	}

	// A broken replica behind the same Service: UNAVAILABLE is retried on
	// another endpoint, so no call fails.
	broken := deployReplicas(t, ns, "greeter-broken", "greeter", "server", 1, "grpc-serve", "-addr", ":9000", "-fail")
	requireSynced(t, broken[0]+"."+ns)
	waitFor(t, time.Minute, "the broken replica in the client's endpoints", func(context.Context) (bool, error) {
		grpcCall(t, ns, client.Name, addr, 20, 2)
		return strings.Contains(logs(t, ns, broken[0], "app"), "served 1 calls"), nil
	})
	rep := grpcCall(t, ns, client.Name, addr, 300, 4)
	t.Logf("with a broken replica: %+v", rep)
	if len(rep.Errors) != 0 {
		t.Errorf("calls failed although three replicas are healthy: %v", rep.Errors)
	}
	if _, ok := rep.ServedBy[broken[0]]; ok {
		t.Errorf("the broken replica answered successfully: %v", rep.ServedBy)
	}
	if n := sidecarMetric(t, ns, client.Name, "weft_sidecar_http_retries_total", nil); n < 1 {
		t.Errorf("the client's sidecar retried %v times", n)
	}

	// Authorization at L7: an AuthorizationPolicy that allows the client
	// only the health service's Watch method denies its Check calls, per
	// request, with PERMISSION_DENIED from the server sidecars (the app
	// never sees them); allowing the Check path lets them through again.
	if err := kube.AppsV1().Deployments(ns).Delete(ctx, "greeter-broken", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(restConfig)
	policy := func(paths ...string) *unstructured.Unstructured {
		ps := make([]any, len(paths))
		for i, p := range paths {
			ps[i] = p
		}
		return weftObject("AuthorizationPolicy", ns, "greeter-methods", map[string]any{
			"selector": appSelector("greeter"),
			"action":   "ALLOW",
			"rules": []any{map[string]any{
				"from": []any{map[string]any{"serviceAccounts": []any{ns + "/client"}}},
				"to":   []any{map[string]any{"methods": []any{"POST"}, "paths": ps}},
			}},
		})
	}
	if _, err := dyn.Resource(authzGVR).Namespace(ns).Create(ctx, policy("/grpc.health.v1.Health/Watch"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	denials := func() float64 {
		var sum float64
		for _, s := range servers {
			sum += sidecarMetric(t, ns, s, "weft_sidecar_authz_denials_total", map[string]string{"direction": "inbound"})
		}
		return sum
	}
	before := denials()
	var denied grpcReport
	waitFor(t, time.Minute, "Check calls denied per request", func(context.Context) (bool, error) {
		denied = grpcCall(t, ns, client.Name, addr, 30, 2)
		return denied.Errors["PermissionDenied"] == 30, nil
	})
	t.Logf("only Watch allowed: %+v", denied)
	if got := denials() - before; got < 30 {
		t.Errorf("the server sidecars counted %v request denials, want >= 30", got)
	}
	u, err := dyn.Resource(authzGVR).Namespace(ns).Get(ctx, "greeter-methods", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Object["spec"] = policy("/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/Check").Object["spec"]
	if _, err := dyn.Resource(authzGVR).Namespace(ns).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "Check calls allowed again", func(context.Context) (bool, error) {
		rep := grpcCall(t, ns, client.Name, addr, 30, 2)
		return len(rep.Errors) == 0, nil
	})
}
