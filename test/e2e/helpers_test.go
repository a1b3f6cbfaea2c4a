//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/weftmesh/weft/api/audit"
	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/sidecar/proxy"
)

var trustDomain = spiffeid.RequireTrustDomainFromString("cluster.local")

// namespace creates a namespace for one test and deletes it afterwards.
func namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = wait.PollUntilContextTimeout(context.Background(), time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			return err != nil, nil
		})
	})
	// The namespace's default ServiceAccount appears asynchronously.
	waitFor(t, time.Minute, "default ServiceAccount in "+name, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func waitPodRunning(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(t, 2*time.Minute, "pod "+ns+"/"+name+" running", func(ctx context.Context) (bool, error) {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return p.Status.Phase == corev1.PodRunning, nil
	})
	return pod
}

// controlPlanePod returns a ready control plane pod.
func controlPlanePod(t *testing.T) *corev1.Pod {
	t.Helper()
	pods, err := kube.CoreV1().Pods(weftNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-controlplane"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
				return p
			}
		}
	}
	t.Fatalf("no ready control plane pod among %d", len(pods.Items))
	return nil
}

// publishedBundle reads the trust bundle the control plane published in ns.
func publishedBundle(t *testing.T, ns string) *x509bundle.Bundle {
	t.Helper()
	var bundle *x509bundle.Bundle
	waitFor(t, time.Minute, "weft-trust-bundle in "+ns, func(ctx context.Context) (bool, error) {
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "weft-trust-bundle", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		bundle, err = x509bundle.Parse(trustDomain, []byte(cm.Data["bundle.pem"]))
		return err == nil, err
	})
	return bundle
}

// podToken asks the API server for a token of sa bound to pod, as the
// kubelet does for a projected token volume.
func podToken(t *testing.T, pod *corev1.Pod, audience string) string {
	t.Helper()
	exp := int64(600)
	tr, err := kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(context.Background(), pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{audience},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// certClient dials the certificate service of pod cp, trusting only the
// published bundle and the control plane's SPIFFE ID, as a sidecar does.
func certClient(t *testing.T, cp *corev1.Pod, bundle *x509bundle.Bundle) certificatev1.CertificateServiceClient {
	t.Helper()
	cpID := spiffeid.RequireFromSegments(trustDomain, "ns", weftNS, "sa", "weft-controlplane")
	conn, err := grpc.NewClient(net.JoinHostPort(cp.Status.PodIP, "15012"),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(cpID)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return certificatev1.NewCertificateServiceClient(conn)
}

func sign(client certificatev1.CertificateServiceClient, token string) (*certificatev1.SignResponse, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := client.Sign(ctx, &certificatev1.SignRequest{Csr: csr})
	return resp, key, err
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// sidecarMetric is the sum of the samples of the counter or gauge name on
// pod's sidecar (its /metrics, read from inside the pod) whose labels
// include match. A labelled family has no series until its first event,
// so an absent family reads 0: callers prove a refusal by the counter
// moving by exactly the number of attempts, which an absent or renamed
// family never does.
func sidecarMetric(t *testing.T, ns, pod, name string, match map[string]string) float64 {
	t.Helper()
	return sumSamples(sidecarFamilies(t, ns, pod), name, match)
}

// sidecarFamilies reads pod's sidecar /metrics (from inside the pod) once.
func sidecarFamilies(t *testing.T, ns, pod string) map[string]*dto.MetricFamily {
	t.Helper()
	out, err := kubectlExec(t, ns, pod, "app", "/usr/local/bin/testapp", "get", "http://127.0.0.1:15020/metrics")
	if err != nil {
		t.Fatalf("%s/%s sidecar /metrics: %v\n%s", ns, pod, err, out)
	}
	body, ok := strings.CutPrefix(out, "200 ")
	if !ok {
		t.Fatalf("%s/%s sidecar /metrics: %q", ns, pod, out)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body + "\n"))
	if err != nil {
		t.Fatalf("%s/%s sidecar /metrics: %v", ns, pod, err)
	}
	return fams
}

// sumSamples is what sidecarMetric returns, for families already read.
func sumSamples(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	fam, ok := fams[name]
	if !ok {
		return 0 // a labelled family has no series before its first event
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range match {
			ok = ok && labels[k] == v
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// meshNamespace creates namespace ns labelled for injection
// (weft.dev/inject: enabled) and the service accounts named in it.
func meshNamespace(t *testing.T, ns string, accounts ...string) {
	t.Helper()
	namespace(t, ns, map[string]string{"weft.dev/inject": "enabled"})
	serviceAccounts(t, ns, accounts...)
}

// serviceAccounts creates the service accounts names in ns.
func serviceAccounts(t *testing.T, ns string, names ...string) {
	t.Helper()
	for _, sa := range names {
		if _, err := kube.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// scaleWeft sets the replicas of weft's Deployment name.
func scaleWeft(t *testing.T, name string, replicas int32) {
	t.Helper()
	ctx := context.Background()
	s, err := kube.AppsV1().Deployments(weftNS).GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = replicas
	if _, err := kube.AppsV1().Deployments(weftNS).UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// weftObject is a weft.dev/v1alpha1 object of kind, ns/name, with spec.
func weftObject(kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "weft.dev/v1alpha1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     spec,
	}}
}

// appSelector selects the pods labelled app=<app>.
func appSelector(app string) map[string]any {
	return map[string]any{"matchLabels": map[string]any{"app": app}}
}

// allowAPIExampleTest creates EgressPolicy name in ns: the client's egress
// (app=client), Enforce, one rule allowing api.example.test on 80 (HTTP)
// and 443 (TLS), defaultAction the CRD's default (Deny).
func allowAPIExampleTest(t *testing.T, ns, name string) {
	t.Helper()
	policy := weftObject("EgressPolicy", ns, name, map[string]any{
		"selector": appSelector("client"),
		"mode":     "Enforce",
		"rules": []any{
			map[string]any{"hosts": []any{"api.example.test"}, "ports": []any{egressPort(80, "HTTP"), egressPort(443, "TLS")}, "action": "Allow"},
		},
	})
	if _, err := dynamic.NewForConfigOrDie(restConfig).Resource(egressGVR).Namespace(ns).Create(context.Background(), policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// egressPort is a port of an EgressPolicy rule.
func egressPort(number int64, protocol string) any {
	return map[string]any{"number": number, "protocol": protocol}
}

// serverService creates the Service server in ns: port 80 (http) to the
// port named http of the pods labelled app=server.
func serverService(t *testing.T, ns string) {
	t.Helper()
	if _, err := kube.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// meshServerClient sets up the two workloads of most mesh tests in ns:
// service accounts server and client, the Service server, and a testapp
// pod running as each (server serving on :8080 behind the Service, client
// idle with its SVID). It does not wait for their sidecars' config.
func meshServerClient(t *testing.T, ns string) (server, client *corev1.Pod) {
	t.Helper()
	serviceAccounts(t, ns, "client", "server")
	serverService(t, ns)
	server = deployTestappAs(t, ns, "server", "server", "serve", "-addr", ":8080")
	client = deployTestappAs(t, ns, "client", "client", "svid")
	return server, client
}

// holdRequest has pod's app GET url and hold the connection open for
// hold (testapp get -hold) in the background; the channel gets the
// request's outcome once it ends.
func holdRequest(t *testing.T, ns, pod, hold, url string) <-chan error {
	t.Helper()
	held := make(chan error, 1)
	go func() {
		out, err := kubectlExec(t, ns, pod, "app", "/usr/local/bin/testapp", "get", "-hold", hold, url)
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		held <- err
	}()
	return held
}

// liveInbound waits up to timeout for pod's sidecar to list (its
// /connections, read from inside the pod) an inbound mTLS connection for
// which match holds, and returns it. what names the wait in a failure.
func liveInbound(t *testing.T, ns, pod string, timeout time.Duration, what string, match func(proxy.ConnInfo) bool) proxy.ConnInfo {
	t.Helper()
	return liveMTLS(t, ns, pod, "inbound", timeout, what, match)
}

// liveMTLS is liveInbound for connections of direction ("inbound" or
// "outbound": an mTLS connection the sidecar originated).
func liveMTLS(t *testing.T, ns, pod, direction string, timeout time.Duration, what string, match func(proxy.ConnInfo) bool) proxy.ConnInfo {
	t.Helper()
	var live proxy.ConnInfo
	waitFor(t, timeout, what, func(context.Context) (bool, error) {
		out, err := kubectlExec(t, ns, pod, "app", "/usr/local/bin/testapp", "get", "http://127.0.0.1:15000/connections")
		if err != nil {
			return false, nil
		}
		var conns struct {
			Connections []proxy.ConnInfo `json:"connections"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(out, "200 ")), &conns); err != nil {
			return false, fmt.Errorf("%s/%s sidecar /connections: %w: %q", ns, pod, err, out)
		}
		for _, c := range conns.Connections {
			if c.Direction == direction && c.MTLS && c.TLSInfo != nil && match(c) {
				live = c
				return true, nil
			}
		}
		return false, nil
	})
	return live
}

// plaintextRefused sends probes plaintext HTTP requests from outside the
// mesh (the node running the test) to addr, a port of pod's app that its
// sidecar captures into its STRICT inbound listener: none may get an
// answer, and each must move the sidecar's
// weft_sidecar_handshake_failures_total{direction=inbound,reason=not_tls}
// by one. what names the probes in a failure ("plaintext", "IPv6
// plaintext").
func plaintextRefused(t *testing.T, ns, pod, addr, what string, probes int) {
	t.Helper()
	notTLS := func() float64 {
		return sidecarMetric(t, ns, pod, "weft_sidecar_handshake_failures_total", map[string]string{"direction": "inbound", "reason": "not_tls"})
	}
	before := notTLS()
	for range probes {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s (pod %s): %v", addr, pod, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: server\r\n\r\n"))
		reply, _ := io.ReadAll(io.LimitReader(c, 4096))
		c.Close()
		if len(reply) > 0 {
			t.Fatalf("%s from outside the mesh got an answer: %q", what, reply)
		}
	}
	if got := notTLS() - before; got != float64(probes) {
		t.Fatalf("weft_sidecar_handshake_failures_total{direction=inbound,reason=not_tls} moved by %v over %d %s probes, want %d", got, probes, what, probes)
	}
}

// auditEvents reads namespace ns's egress audit events from every control
// plane replica, each event once (by ID).
func auditEvents(t *testing.T, ns string) []audit.Event {
	t.Helper()
	events, err := readAuditEvents(t, ns)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// readAuditEvents is auditEvents, but returns the error of listing the
// control plane's pods (a caller that polls asks again). A replica that
// cannot be reached is passed over; one that refuses the test's
// credentials, or answers what is not JSON, fails the test.
func readAuditEvents(t *testing.T, ns string) ([]audit.Event, error) {
	t.Helper()
	pods, err := kube.CoreV1().Pods(weftNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-controlplane"})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var events []audit.Event
	for _, p := range pods.Items {
		body, err := cpAdminGet(p.Status.PodIP, "/audit/events?namespace="+ns+"&limit=1000")
		if errors.Is(err, errAdminRefused) {
			t.Fatalf("%s: %v\n%s", p.Name, err, body)
		}
		if err != nil {
			continue
		}
		var resp struct {
			Events []audit.Event `json:"events"`
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatalf("%s /audit/events: %v\n%s", p.Name, err, body)
		}
		for _, e := range resp.Events {
			if !seen[e.ID] {
				seen[e.ID] = true
				events = append(events, e)
			}
		}
	}
	return events, nil
}

// withHTTPRouting installs weft again with --http-routing (a rolling
// restart of the control plane) for the rest of the test, and as it was
// at the end.
func withHTTPRouting(t *testing.T) {
	t.Helper()
	install := func(extra ...string) {
		t.Helper()
		args := append([]string{"install", "--tag", tag, "--pull-policy", "Never", "--timeout", "3m", "--replicas", "2"}, extra...)
		if out, err := weftctlRun(args...); err != nil {
			t.Fatalf("weftctl %v: %v\n%s", args, err, out)
		}
	}
	install("--http-routing")
	t.Cleanup(func() { install() })
}
