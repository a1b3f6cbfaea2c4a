package weftctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	adminapi "github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/internal/testutil/golden"
)

// now is the fake clock of every test here: the fixed instant, as the
// output goes to golden files.
var now = testutil.Fixed

func at(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(d)) }

// httpAdmin serves every admin endpoint from one httptest server, at
// /pod/<ns>/<pod>/<port><path> and /svc/<ns>/<name>/<port><path>.
type httpAdmin struct{ url string }

func (a httpAdmin) get(ctx context.Context, path string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.url+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, nil
}

func (a httpAdmin) podGet(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	if port == controlPlanePort && (strings.HasPrefix(path, "/audit/") || strings.HasPrefix(path, "/debug/")) {
		// As the control plane answers plain HTTP (the pod proxy's).
		return nil, fmt.Errorf("GET %s: 403 Forbidden: served over TLS only", path)
	}
	return a.get(ctx, fmt.Sprintf("/pod/%s/%s/%d%s", pod.Namespace, pod.Name, port, path))
}

func (a httpAdmin) serviceGet(ctx context.Context, ns, name, _ string, port int, path string) ([]byte, error) {
	return a.get(ctx, fmt.Sprintf("/svc/%s/%s/%d%s", ns, name, port, path))
}

// controlPlaneGet serves the control plane's guarded endpoints at
// /pod/<ns>/<pod>/15014<path> too (cpadmin_test.go tests the TLS client).
func (a httpAdmin) controlPlaneGet(ctx context.Context, pod *corev1.Pod, path string, _ url.Values) ([]byte, error) {
	return a.get(ctx, fmt.Sprintf("/pod/%s/%s/%d%s", pod.Namespace, pod.Name, controlPlanePort, path))
}

// fixture is a cluster with weft installed and a demo namespace: client
// and server meshed, "plain" opted out and serving plaintext, "old"
// created before the namespace was labelled.
type fixture struct {
	kube   *fake.Clientset
	mux    *http.ServeMux
	probes map[string]probeResult
}

func pod(ns, name, ip string, created time.Duration, injected bool, ports ...int32) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: at(created), Labels: map[string]string{"app": strings.SplitN(name, "-", 2)[0]}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "weft/testapp:dev"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	for _, port := range ports {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "http", ContainerPort: port})
	}
	if injected {
		p.Annotations = map[string]string{"weft.dev/injected": `{"version":"v0.3.0","image":"weft/weft-sidecar:v0.3.0","native":true,"containers":["weft-init","weft-proxy"],"probesRewritten":1}`}
		p.Spec.InitContainers = []corev1.Container{{Name: "weft-init"}, {Name: "weft-proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "weft-init", Ready: false}, {Name: "weft-proxy", Ready: true}}
	}
	return p
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	demoNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-demo", CreationTimestamp: at(-3 * time.Hour),
		Labels: map[string]string{"weft.dev/inject": "enabled", "kubernetes.io/metadata.name": "weft-demo"},
		ManagedFields: []metav1.ManagedFieldsEntry{
			{Manager: "kubectl-create", Time: ptr.To(at(-3 * time.Hour)), FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:kubernetes.io/metadata.name":{}}}}`)}},
			{Manager: "kubectl-label", Time: ptr.To(at(-2 * time.Hour)), FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:weft.dev/inject":{}}}}`)}},
		}}}
	weftNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system", Labels: map[string]string{"weft.dev/inject": "disabled"}}}
	cp := func(name, ip string) *corev1.Pod {
		p := pod("weft-system", name, ip, -5*time.Hour, false)
		p.Labels = map[string]string{"app.kubernetes.io/name": "weft-controlplane"}
		return p
	}
	inj := pod("weft-system", "weft-injector-7d9f", "198.18.0.4", -5*time.Hour, false)
	inj.Labels = map[string]string{"app.kubernetes.io/name": "weft-injector"}
	inj.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: at(-90 * time.Minute)}}
	deployment := func(name string, replicas, available int32) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: name},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas)}, Status: appsv1.DeploymentStatus{AvailableReplicas: available}}
	}
	// The install's default: the audit store on an emptyDir, no export.
	cpDeployment := deployment("weft-controlplane", 2, 2)
	cpDeployment.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "audit", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	webhook := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-injector", CreationTimestamp: at(-5 * time.Hour)},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.weft.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte("-----BEGIN CERTIFICATE-----"),
				Service: &admissionregistrationv1.ServiceReference{Namespace: "weft-system", Name: "weft-injector", Port: ptr.To[int32](443)}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"weft.dev/inject": "enabled"}},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "weft.dev/inject", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}}}},
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
		}},
	}
	plain := pod("weft-demo", "plain-5c4b", "198.18.0.12", -time.Hour, false, 8080)
	plain.Annotations = map[string]string{"weft.dev/inject": "disabled"}
	old := pod("weft-demo", "old-6d7e", "198.18.0.13", -150*time.Minute, false, 8080)
	objs := []runtime.Object{demoNS, weftNS,
		cp("weft-controlplane-a1", "198.18.0.2"), cp("weft-controlplane-b2", "198.18.0.3"), inj,
		cpDeployment, deployment("weft-injector", 1, 1), webhook,
		pod("weft-demo", "client-8f6d", "198.18.0.10", -time.Hour, true),
		pod("weft-demo", "server-v1-9a7c", "198.18.0.11", -time.Hour, true, 8080),
		plain, old,
		&corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-demo", Name: "plain.1"}, Reason: "InjectionSkipped",
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "plain-5c4b"}, Message: "annotation weft.dev/inject: disabled"},
	}
	f := &fixture{kube: fake.NewClientset(objs...), mux: http.NewServeMux(), probes: map[string]probeResult{
		"198.18.0.11:8080": {probeRefused, "connection closed without an answer"},
		"198.18.0.12:8080": {probeAnswered, `plaintext answered: "HTTP/1.1 200 OK"`},
		"198.18.0.13:8080": {probeAnswered, `plaintext answered: "HTTP/1.1 200 OK"`},
	}}
	f.kube.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{Major: "1", Minor: "37", GitVersion: "v1.37.2"}

	cert := func(fp string, d time.Duration) adminapi.Cert {
		return adminapi.Cert{Fingerprint: fp, NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(d)}
	}
	types := func(state adminapi.State, nack string) []adminapi.TypeStatus {
		var out []adminapi.TypeStatus
		for _, ty := range []string{"cluster", "endpoint", "listener", "secret"} {
			ts := adminapi.TypeStatus{Type: ty, State: adminapi.StateSynced, Version: "7f3a9c2e5b1d4e6f", Acked: "7f3a9c2e5b1d4e6f"}
			if ty == "listener" && state != adminapi.StateSynced {
				ts.State, ts.Acked, ts.NACKs = state, "0a1b2c3d4e5f6071", 1
				ts.LastNACK = &adminapi.NACK{Version: "7f3a9c2e5b1d4e6f", Message: nack}
			}
			out = append(out, ts)
		}
		return out
	}
	status := func(sidecars ...adminapi.NodeStatus) adminapi.Status {
		return adminapi.Status{Version: "v0.3.0", TrustDomain: "cluster.local", Roots: []adminapi.Cert{cert("c0ffee00112233445566", 3650*24*time.Hour)},
			Intermediate: cert("abcdef98765432100000", 5*24*time.Hour), Sidecars: sidecars}
	}
	f.json("/pod/weft-system/weft-controlplane-a1/15014/debug/status", status(adminapi.NodeStatus{Node: "client-8f6d.weft-demo", Pod: "client-8f6d", Namespace: "weft-demo",
		SPIFFEID: "spiffe://cluster.local/ns/weft-demo/sa/client", Streams: 1, Types: types("SYNCED", "")}))
	f.json("/pod/weft-system/weft-controlplane-b2/15014/debug/status", status(adminapi.NodeStatus{Node: "server-v1-9a7c.weft-demo", Pod: "server-v1-9a7c", Namespace: "weft-demo",
		SPIFFEID: "spiffe://cluster.local/ns/weft-demo/sa/server", Streams: 1, Types: types("SYNCED", "")}))
	f.json("/pod/weft-system/weft-controlplane-a1/15014/audit/store", audit.StoreResponse{Events: 412_000, Capacity: 500_000})
	f.json("/pod/weft-system/weft-controlplane-b2/15014/audit/store", audit.StoreResponse{Events: 1_200, Capacity: 500_000})
	f.text("/svc/weft-system/weft-injector/443/healthz", "ok\n")
	expiry := strconv.FormatInt(now.Add(23*time.Hour).Unix(), 10)
	f.text("/pod/weft-demo/client-8f6d/15020/metrics", "# HELP x\nweft_sidecar_svid_expiry_timestamp_seconds "+expiry+"\n"+
		`weft_sidecar_tls_handshakes_total{direction="inbound"} 0`+"\n"+`weft_sidecar_tls_handshakes_total{direction="outbound"} 12`+"\n")
	f.text("/pod/weft-demo/server-v1-9a7c/15020/metrics", "weft_sidecar_svid_expiry_timestamp_seconds "+expiry+"\n"+
		`weft_sidecar_tls_handshakes_total{direction="inbound"} 12`+"\n"+`weft_sidecar_tls_handshakes_total{direction="outbound"} 0`+"\n"+
		`weft_sidecar_handshake_failures_total{direction="inbound",reason="not_tls"} 1`+"\n")
	notAfter := now.Add(23 * time.Hour)
	f.json("/pod/weft-demo/client-8f6d/15000/connections", adminapi.Connections{Connections: []adminapi.ConnInfo{{
		Direction: "outbound", Source: "198.18.0.10:40312", Destination: "198.19.4.7:80", Upstream: "198.18.0.11:15006", MTLS: true,
		TLSInfo: &adminapi.TLSInfo{PeerID: "spiffe://cluster.local/ns/weft-demo/sa/server", Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", PeerNotAfter: notAfter},
		BytesIn: 120, BytesOut: 310}}})
	f.json("/pod/weft-demo/server-v1-9a7c/15000/connections", adminapi.Connections{Connections: []adminapi.ConnInfo{{
		Direction: "inbound", Source: "198.18.0.10:40312", Destination: "198.18.0.11:8080", MTLS: true,
		TLSInfo: &adminapi.TLSInfo{PeerID: "spiffe://cluster.local/ns/weft-demo/sa/client", Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", PeerNotAfter: notAfter},
		BytesIn: 310, BytesOut: 120}}})
	return f
}

func (f *fixture) json(path string, v any) {
	f.mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(v) })
}

func (f *fixture) text(path, body string) {
	f.mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) })
}

// run runs weftctl against the fixture.
func (f *fixture) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	srv := httptest.NewServer(f.mux)
	defer srv.Close()
	e := &env{kube: f.kube, admin: httpAdmin{srv.URL}, now: func() time.Time { return now }, weftNS: "weft-system",
		probe: func(_ context.Context, addr string) probeResult {
			if r, ok := f.probes[addr]; ok {
				return r
			}
			return probeResult{probeRefused, "connection refused: nothing accepts plaintext"}
		}}
	var out bytes.Buffer
	root := NewRoot(&out, &out)
	root.SetArgs(args)
	err := root.ExecuteContext(withEnv(context.Background(), e))
	return out.String(), err
}

func TestStatus(t *testing.T) {
	f := newFixture(t)
	out, err := f.run(t, "status")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	golden.Check(t, "testdata/status.golden", out)
}

func TestStatusNACKedExitsNonZero(t *testing.T) {
	f := newFixture(t)
	base := f.mux
	// The first replica reports the client NACKing a listener.
	f.mux = http.NewServeMux()
	f.mux.HandleFunc("/pod/weft-system/weft-controlplane-a1/15014/debug/status", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(adminapi.Status{Version: "v0.3.0", Sidecars: []adminapi.NodeStatus{{
			Node: "client-8f6d.weft-demo", Pod: "client-8f6d", Namespace: "weft-demo", SPIFFEID: "spiffe://cluster.local/ns/weft-demo/sa/client",
			Types: []adminapi.TypeStatus{{Type: "listener", State: adminapi.StateNacked, Version: "7f3a9c2e5b1d4e6f", Acked: "0a1b2c3d4e5f6071", NACKs: 1,
				LastNACK: &adminapi.NACK{Version: "7f3a9c2e5b1d4e6f", Message: "xds: listener inbound: filter chain 8080: unsupported field transport_socket_connect_timeout"}}},
		}}})
	})
	f.mux.Handle("/", base)
	out, err := f.run(t, "status", "-n", "weft-demo")
	if err == nil || !strings.Contains(err.Error(), "1 sidecar(s) NACKed") {
		t.Fatalf("err = %v\n%s", err, out)
	}
	golden.Check(t, "testdata/status-nacked.golden", out)
	out, _ = f.run(t, "status", "-n", "weft-demo", "-o", "json")
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.NACKed != 1 {
		t.Fatalf("json: %v %+v\n%s", err, r, out)
	}
}

func TestVerifyNamespace(t *testing.T) {
	f := newFixture(t)
	out, err := f.run(t, "verify", "-n", "weft-demo")
	if err == nil || err.Error() != "weftctl verify: not everything is encrypted" {
		t.Fatalf("err = %v, want the non-zero exit of an unencrypted pod\n%s", err, out)
	}
	golden.Check(t, "testdata/verify-namespace.golden", out)
}

func TestVerifyTwoWorkloads(t *testing.T) {
	f := newFixture(t)
	out, err := f.run(t, "verify", "-n", "weft-demo", "client-8f6d", "server-v1-9a7c")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	golden.Check(t, "testdata/verify-pair.golden", out)
	out, err = f.run(t, "verify", "-n", "weft-demo", "client-8f6d", "server-v1-9a7c", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/verify-pair.golden.json", out)
}

func TestVerifyWithoutNetworkPathIsNotAClaim(t *testing.T) {
	f := newFixture(t)
	f.probes["198.18.0.11:8080"] = probeResult{probeNoPath, "probe skipped: no network path from here to the pod IP (dial tcp 198.18.0.11:8080: i/o timeout)"}
	out, err := f.run(t, "verify", "-n", "weft-demo", "server-v1-9a7c")
	if err == nil || !strings.Contains(out, "UNVERIFIED") || !strings.Contains(out, "cannot claim STRICT") {
		t.Fatalf("err = %v\n%s", err, out)
	}
	out, err = f.run(t, "verify", "-n", "weft-demo", "server-v1-9a7c", "--no-probe")
	if err != nil || !strings.Contains(out, "STRICT not proven") {
		t.Fatalf("--no-probe: err = %v\n%s", err, out)
	}
}

func TestCheckPost(t *testing.T) {
	f := newFixture(t)
	out, err := f.run(t, "check")
	if err == nil || !strings.Contains(err.Error(), "1 problem(s)") {
		t.Fatalf("err = %v, want the pod that slipped through\n%s", err, out)
	}
	golden.Check(t, "testdata/check-post.golden", out)
}

func TestCheckPre(t *testing.T) {
	f := newFixture(t)
	f.kube.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		r.Status.Allowed = !(ra.Resource == "mutatingwebhookconfigurations" && ra.Verb == "patch")
		return true, r, nil
	})
	out, err := f.run(t, "check", "--pre")
	if err == nil {
		t.Fatalf("want a failure for the missing permission\n%s", out)
	}
	golden.Check(t, "testdata/check-pre.golden", out)
}

func TestExplainInjection(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ pod, file string }{
		{"client-8f6d", "explain-injected.golden"},
		{"plain-5c4b", "explain-optout.golden"},
		{"old-6d7e", "explain-predates.golden"},
	} {
		out, err := f.run(t, "explain-injection", "-n", "weft-demo", tc.pod)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.pod, err, out)
		}
		golden.Check(t, "testdata/"+tc.file, out)
	}
	if _, err := f.run(t, "explain-injection", "-n", "weft-demo", "nope"); err == nil || !strings.Contains(err.Error(), "weftctl explain-injection: pod weft-demo/nope") {
		t.Fatalf("err = %v", err)
	}
}

// TestProbePlaintext runs the real prober against loopback listeners
// behaving like an app, a STRICT sidecar, and a TLS-only server.
func TestProbePlaintext(t *testing.T) {
	serve := func(handle func(net.Conn)) string { return testutil.ServeTCP(t, handle).String() }
	app := serve(func(c net.Conn) {
		_, _ = c.Read(make([]byte, 512))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
	})
	strict := serve(func(c net.Conn) { _, _ = c.Read(make([]byte, 512)) }) // reads the bytes, sees no TLS, closes
	alert := serve(func(c net.Conn) {
		_, _ = c.Read(make([]byte, 512))
		_, _ = c.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46})
	})
	closed := serve(func(net.Conn) {})
	closedAddr := closed
	for _, tc := range []struct {
		addr, outcome, detail string
	}{
		{app, probeAnswered, `plaintext answered: "HTTP/1.1 200 OK"`},
		{strict, probeRefused, "connection closed without an answer"},
		{alert, probeRefused, "answered only with a TLS record: plaintext refused"},
		{closedAddr, probeRefused, ""},
	} {
		got := probePlaintext(context.Background(), tc.addr)
		if got.Outcome != tc.outcome || (tc.detail != "" && got.Detail != tc.detail) {
			t.Errorf("%s: got %+v, want %s %q", tc.addr, got, tc.outcome, tc.detail)
		}
	}
	// Nothing listening: refused.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if got := probePlaintext(context.Background(), addr); got.Outcome != probeRefused || !strings.Contains(got.Detail, "refused") {
		t.Errorf("closed port: %+v", got)
	}
}

func TestMetricValue(t *testing.T) {
	m := []byte(`# HELP weft_sidecar_tls_handshakes_total x
weft_sidecar_tls_handshakes_total{direction="inbound"} 3
weft_sidecar_tls_handshakes_total{direction="outbound"} 4
weft_sidecar_tls_handshakes_total_other 100
weft_sidecar_svid_expiry_timestamp_seconds 1.7724168e+09
`)
	if v, ok := metricValue(m, "weft_sidecar_tls_handshakes_total", nil); !ok || v != 7 {
		t.Errorf("sum = %v %v", v, ok)
	}
	if v, _ := metricValue(m, "weft_sidecar_tls_handshakes_total", map[string]string{"direction": "outbound"}); v != 4 {
		t.Errorf("outbound = %v", v)
	}
	if v, ok := metricValue(m, "weft_sidecar_svid_expiry_timestamp_seconds", nil); !ok || v != 1.7724168e+09 {
		t.Errorf("expiry = %v", v)
	}
	if _, ok := metricValue(m, "weft_missing", nil); ok {
		t.Error("found a missing metric")
	}
}

func TestOutputFormatRefused(t *testing.T) {
	f := newFixture(t)
	if _, err := f.run(t, "status", "-o", "xml"); err == nil || !strings.Contains(err.Error(), `-o "xml"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestVerifyPermissiveIsNotEncrypted: a pod with a sidecar that answers
// plaintext (PERMISSIVE, or a port excluded from capture) is not encrypted,
// and so is one whose sidecar reports a live plaintext inbound connection.
func TestVerifyPermissiveIsNotEncrypted(t *testing.T) {
	f := newFixture(t)
	f.probes["198.18.0.11:8080"] = probeResult{probeAnswered, `plaintext answered: "HTTP/1.1 200 OK"`}
	out, err := f.run(t, "verify", "-n", "weft-demo", "server-v1-9a7c")
	if err == nil || !strings.Contains(out, `server-v1-9a7c: NOT ENCRYPTED: the sidecar let plaintext through (PERMISSIVE mode): :8080 plaintext answered: "HTTP/1.1 200 OK"`) {
		t.Fatalf("err = %v\n%s", err, out)
	}

	f = newFixture(t)
	base := f.mux
	f.mux = http.NewServeMux()
	f.mux.HandleFunc("/pod/weft-demo/server-v1-9a7c/15000/connections", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"connections":[{"direction":"inbound","source":"198.18.0.12:5123","destination":"198.18.0.11:8080","mtls":false}]}`)
	})
	f.mux.Handle("/", base)
	out, err = f.run(t, "verify", "-n", "weft-demo", "server-v1-9a7c")
	if err == nil || !strings.Contains(out, "NOT ENCRYPTED: live plaintext inbound connection from 198.18.0.12:5123 to 198.18.0.11:8080") ||
		!strings.Contains(out, "plain-5c4b (198.18.0.12:5123)  NO") {
		t.Fatalf("err = %v\n%s", err, out)
	}
}

// TestVerifyReportsUnreachableSidecar: when a sidecar's admin endpoints
// cannot be read, verify says so and still decides from the probe.
func TestVerifyReportsUnreachableSidecar(t *testing.T) {
	f := newFixture(t)
	base := f.mux
	f.mux = http.NewServeMux()
	f.mux.HandleFunc("/pod/weft-demo/server-v1-9a7c/", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusBadGateway) })
	f.mux.Handle("/", base)
	out, err := f.run(t, "verify", "-n", "weft-demo", "server-v1-9a7c")
	if err != nil || !strings.Contains(out, "could not read connections: GET /pod/weft-demo/server-v1-9a7c/15000/connections: 502 Bad Gateway") {
		t.Fatalf("err = %v\n%s", err, out)
	}
}
