//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/sidecar/proxy"
)

// traefikPort is the web entrypoint of the meshed Traefik: plaintext from
// outside the mesh, so excluded from capture (weft.dev/exclude-inbound-ports).
const traefikPort = 8000

// deployTraefik runs Traefik (test/cluster/images.sh traefik) in ns as the
// cluster's ingress controller for ns's Ingresses of class traefik: service
// account traefik with the RBAC of its kubernetesIngress provider, its web
// entrypoint on traefikPort excluded from capture, behind a NodePort; a
// testapp container "app" beside it reads the pod's sidecar from inside
// the pod. Returns the pod and the NodePort's address on the node.
func deployTraefik(t *testing.T, ns string) (*corev1.Pod, string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join("..", "..", "_output", "images", "traefik.tar")); err != nil {
		t.Fatalf("the Traefik image: %v (test/cluster/images.sh traefik builds it)", err)
	}
	ctx := context.Background()
	name := "weft-e2e-traefik-" + ns
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "endpoints", "secrets", "nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses", "ingressclasses"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses/status"}, Verbs: []string{"update"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "traefik"}}}
	class := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "traefik"},
		Spec: networkingv1.IngressClassSpec{Controller: "traefik.io/ingress-controller"}}
	if _, err := kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := kube.NetworkingV1().IngressClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.NetworkingV1().IngressClasses().Delete(context.Background(), "traefik", metav1.DeleteOptions{})
	})

	debug := testappPod("traefik", nil, "svid").Spec.Containers[0]
	pod := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "traefik"},
			Annotations: map[string]string{"weft.dev/exclude-inbound-ports": fmt.Sprint(traefikPort)}},
		Spec: corev1.PodSpec{
			ServiceAccountName:            "traefik",
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name: "traefik", Image: "weft/traefik:" + tag, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/usr/local/bin/traefik"},
				Args: []string{"--entryPoints.web.address=:" + fmt.Sprint(traefikPort), "--providers.kubernetesingress=true",
					"--providers.kubernetesingress.namespaces=" + ns, "--providers.kubernetesingress.ingressclass=traefik",
					"--ping=true", "--log.level=INFO", "--accesslog=true"},
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: traefikPort}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ping", Port: intstr.FromInt32(8080)}}},
			}, debug},
		},
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "traefik"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "traefik"}}, Template: pod}}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "traefik"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "traefik"},
			Ports: []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("web")}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return waitAppReady(t, ns, "traefik", "Traefik ready"), net.JoinHostPort(hostIP, fmt.Sprint(svc.Spec.Ports[0].NodePort))
}

// ingressGet sends GET / with Host host to Traefik's NodePort at addr
// from the node (outside the mesh): the status and body.
func ingressGet(addr, host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestIngressControllerInTheMesh ([k8s-networking]): Traefik, injected, is
// the ingress of a meshed backend. HTTP from the node to Traefik's
// NodePort (a port excluded from capture: plaintext from outside the mesh)
// reaches the backend over mTLS, both when Traefik sends to the pods' IPs
// (its default) and to the Service's ClusterIP (nativelb): the backend's
// sidecar sees Traefik's SPIFFE ID, and an AuthorizationPolicy that
// admits only that identity holds (another meshed workload is refused).
// Traefik's sidecar shows both upstream connections as its own mTLS;
// weftctl verify calls the backend ENCRYPTED and names the excluded port
// of Traefik's.
func TestIngressControllerInTheMesh(t *testing.T) {
	const ns = "e2e-ingress"
	meshNamespace(t, ns, "traefik")
	server, client := meshServerClient(t, ns)
	ctx := context.Background()
	native, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server-native", Annotations: map[string]string{"traefik.ingress.kubernetes.io/service.nativelb": "true"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	traefikID := "spiffe://cluster.local/ns/" + ns + "/sa/traefik"
	dyn := dynamic.NewForConfigOrDie(restConfig)
	only := weftObject("AuthorizationPolicy", ns, "server-from-ingress", map[string]any{
		"selector": appSelector("server"),
		"action":   "ALLOW",
		"rules":    []any{map[string]any{"from": []any{map[string]any{"serviceAccounts": []any{ns + "/traefik"}}}}},
	})
	if _, err := dyn.Resource(authzGVR).Namespace(ns).Create(ctx, only, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pathType := networkingv1.PathTypePrefix
	rule := func(host, svc string) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pathType, Backend: networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: networkingv1.IngressSpec{
		IngressClassName: ptr.To("traefik"),
		Rules:            []networkingv1.IngressRule{rule("pods.e2e.test", "server"), rule("native.e2e.test", "server-native")}}}
	if _, err := kube.NetworkingV1().Ingresses(ns).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	traefik, addr := deployTraefik(t, ns)
	requireSynced(t, traefik.Name+"."+ns)
	requireSynced(t, server.Name+"."+ns)

	for _, host := range []string{"pods.e2e.test", "native.e2e.test"} {
		var status int
		var body string
		waitFor(t, time.Minute, "HTTP from the node through Traefik ("+host+") to the server", func(context.Context) (bool, error) {
			status, body, err = ingressGet(addr, host)
			return err == nil && status == http.StatusOK && strings.Contains(body, "hello from "+server.Name), nil
		})
	}
	// The backend's sidecar terminated Traefik's mTLS: its peer is
	// Traefik's SPIFFE ID (Traefik keeps its upstream connections open).
	in := liveInbound(t, ns, server.Name, 30*time.Second, "the server's inbound mTLS from Traefik", func(c proxy.ConnInfo) bool {
		return c.PeerID == traefikID
	})
	t.Logf("server's inbound from the ingress: %s -> %s, %s %s, peer %s", in.Source, in.Destination, in.Version, in.Cipher, in.PeerID)
	// Traefik's sidecar originated both: to the pod's IP and port (pod-IP
	// upstreams), and to the ClusterIP (nativelb), each mTLS to the
	// server's identity.
	serverID := "spiffe://cluster.local/ns/" + ns + "/sa/server"
	for what, dst := range map[string]string{
		"pod IP":    net.JoinHostPort(server.Status.PodIP, "8080"),
		"ClusterIP": net.JoinHostPort(native.Spec.ClusterIP, "80"),
	} {
		out := liveMTLS(t, ns, traefik.Name, "outbound", 30*time.Second, "Traefik's mTLS upstream to the "+what+" "+dst, func(c proxy.ConnInfo) bool {
			return c.Destination == dst && c.PeerID == serverID
		})
		t.Logf("Traefik's upstream to the %s: %s -> %s (%s), peer %s", what, out.Source, out.Destination, out.Chain, out.PeerID)
	}

	// The policy admits only the ingress: a meshed client of the same
	// namespace is refused, through the Service and at the pod.
	for _, url := range []string{"http://server/", "http://" + net.JoinHostPort(server.Status.PodIP, "8080") + "/"} {
		if out, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", url); err == nil {
			t.Fatalf("client -> %s, which only the ingress may call, was served: %q", url, out)
		}
	}
	if status, body, err := ingressGet(addr, "pods.e2e.test"); err != nil || status != http.StatusOK {
		t.Fatalf("through Traefik after the client's refusals: %d %q %v", status, body, err)
	}

	// weftctl verify: the backend is encrypted; Traefik's web port is
	// plaintext by design, and verify says which annotation made it so.
	out, err := weftctlRun("verify", "-n", ns, "server")
	if err != nil || !strings.Contains(out, "All 1 pod(s) encrypted") {
		t.Fatalf("weftctl verify -n %s server: %v\n%s", ns, err, out)
	}
	out, _ = weftctlRun("verify", "-n", ns, "traefik")
	if !strings.Contains(out, "NOT ENCRYPTED") || !strings.Contains(out, "weft.dev/exclude-inbound-ports") {
		t.Fatalf("weftctl verify -n %s traefik does not name the excluded ingress port:\n%s", ns, out)
	}
	t.Logf("weftctl verify -n %s traefik:\n%s", ns, out)
}
