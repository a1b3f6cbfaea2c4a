//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/sidecar/proxy"
)

// NetworkPolicy, enforced in test/cluster by kube-router's NetworkPolicy
// controller (iptables + ipset in the node's network namespace, what k3s
// embeds). kube-router admits traffic from the node itself to its pods
// whatever the policies (the test's own dials from the host, the kubelet's
// probes), so every request judged here is made from a pod.

// npExamples is examples/networkpolicy, applied into a namespace with
// kubectl -n, as its README says.
var npExamples = filepath.Join("..", "..", "examples", "networkpolicy")

// clientGet is one GET of the Service server in ns from the pod client
// (testapp get: a new connection from the app each time).
func clientGet(t *testing.T, ns, client string) (string, error) {
	t.Helper()
	return kubectlExec(t, ns, client, "app", "/usr/local/bin/testapp", "get", "http://server."+ns+".svc.cluster.local/")
}

// requireReaches waits until client's GET gets server's answer.
func requireReaches(t *testing.T, ns, client, server, when string) {
	t.Helper()
	var out string
	var err error
	if werr := pollFor(90*time.Second, func() bool {
		out, err = clientGet(t, ns, client)
		return err == nil && strings.Contains(out, "hello from "+server)
	}); werr != nil {
		t.Fatalf("%s: %s/%s never got %s's answer: %v\n%s", when, ns, client, server, err, out)
	}
}

// requireStopped waits until client's GET fails, then requires the next
// three to fail too (a connection the sidecar opened before the policy
// could outlive it: conntrack lets established flows through).
func requireStopped(t *testing.T, ns, client, when string) {
	t.Helper()
	var out string
	if werr := pollFor(90*time.Second, func() bool {
		var err error
		out, err = clientGet(t, ns, client)
		return err != nil
	}); werr != nil {
		keepKubeRouterLog(t)
		t.Fatalf("%s: %s/%s still reaches the server: %s", when, ns, client, out)
	}
	for i := range 3 {
		if out, err := clientGet(t, ns, client); err == nil {
			t.Fatalf("%s: request %d after the first refusal went through: %s", when, i+2, out)
		}
	}
}

// denyServerIngress is a policy that isolates ns's server pods for
// ingress and admits nothing: client -> server is denied.
func denyServerIngress(t *testing.T, ns string) func() {
	t.Helper()
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-to-server"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if _, err := kube.NetworkingV1().NetworkPolicies(ns).Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := kube.NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), np.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNetworkPolicyStopsMeshedTrafficLikeUnmeshed: the same NetworkPolicy
// (the server pods isolated for ingress, nothing admitted) stops a meshed
// client -> server exactly as it stops an unmeshed one, and removing it
// lets both through again. In the mesh the client's sidecar dials the
// server pod's IP on the server's port; that dial is what the policy
// refuses, and the client sidecar counts it
// (weft_sidecar_connection_failures_total{reason=upstream_connect}).
func TestNetworkPolicyStopsMeshedTrafficLikeUnmeshed(t *testing.T) {
	const meshed, plain = "e2e-np-mesh", "e2e-np-plain"
	meshNamespace(t, meshed)
	namespace(t, plain, nil)
	mServer, mClient := meshServerClient(t, meshed)
	serviceAccounts(t, plain, "client", "server")
	serverService(t, plain)
	pServer := deployTestappAs(t, plain, "server", "server", "serve", "-addr", ":8080")
	pClient := deployTestappAs(t, plain, "client", "client", "serve", "-addr", ":9090") // idle
	if !injected(mServer) || !injected(mClient) || injected(pServer) || injected(pClient) {
		t.Fatalf("want the %s pods injected and the %s pods not", meshed, plain)
	}
	requireSynced(t, mServer.Name+"."+meshed)
	requireSynced(t, mClient.Name+"."+meshed)

	upstreamConnect := func() float64 {
		return sidecarMetric(t, meshed, mClient.Name, "weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "upstream_connect"})
	}
	// Before: both pairs talk; the meshed one over mTLS (the server's
	// sidecar lists the client's SPIFFE ID).
	requireReaches(t, plain, pClient.Name, pServer.Name, "before the policy")
	requireReaches(t, meshed, mClient.Name, mServer.Name, "before the policy")
	held := holdRequest(t, meshed, mClient.Name, "5s", "http://server."+meshed+".svc.cluster.local/")
	liveInbound(t, meshed, mServer.Name, 20*time.Second, "the server sidecar listing the client's mTLS connection", func(c proxy.ConnInfo) bool {
		return c.PeerID == "spiffe://cluster.local/ns/"+meshed+"/sa/client"
	})
	if err := <-held; err != nil {
		t.Fatalf("the held request: %v", err)
	}
	refusedBefore := upstreamConnect()

	// With the policy: both stopped.
	removePlain := denyServerIngress(t, plain)
	removeMeshed := denyServerIngress(t, meshed)
	start := time.Now()
	requireStopped(t, plain, pClient.Name, "unmeshed, with the policy")
	requireStopped(t, meshed, mClient.Name, "meshed, with the policy")
	t.Logf("both pairs stopped %.1fs after the policies were created", time.Since(start).Seconds())
	if got := upstreamConnect() - refusedBefore; got < 4 {
		t.Fatalf("the client sidecar's upstream_connect failures moved by %v over at least 4 refused requests: the refusal was not its dial to the server", got)
	}

	// Without it again: both through.
	removePlain()
	removeMeshed()
	requireReaches(t, plain, pClient.Name, pServer.Name, "after the policy was deleted")
	requireReaches(t, meshed, mClient.Name, mServer.Name, "after the policy was deleted")
}

// TestNetworkPolicyDefaultDenyWithWeftsPolicies: a namespace that denies
// all ingress and egress, plus the policies weft documents
// (examples/networkpolicy: the sidecar to the control plane's 15012 and to
// the cluster DNS, the kubelet to 15020, and the app's own client ->
// server on 8080), applied before any pod exists: the meshed pods start
// and become Ready (their sidecars got certificates and configuration
// through the policies), the client reaches the server over mTLS, and
// without the app's policy the default deny is seen to hold.
func TestNetworkPolicyDefaultDenyWithWeftsPolicies(t *testing.T) {
	const ns = "e2e-np-deny"
	meshNamespace(t, ns)
	kubectlRun(t, "-n", ns, "apply", "-f", npExamples)
	server, client := meshServerClient(t, ns) // waits for both pods Ready
	requireSynced(t, server.Name+"."+ns)
	requireSynced(t, client.Name+"."+ns)
	requireReaches(t, ns, client.Name, server.Name, "default deny with weft's policies")
	held := holdRequest(t, ns, client.Name, "5s", "http://server."+ns+".svc.cluster.local/")
	live := liveInbound(t, ns, server.Name, 20*time.Second, "the server sidecar listing the client's mTLS connection", func(c proxy.ConnInfo) bool {
		return c.PeerID == "spiffe://cluster.local/ns/"+ns+"/sa/client"
	})
	if live.Version != "TLS 1.3" {
		t.Fatalf("the client's connection at the server sidecar: %+v, want TLS 1.3", live)
	}
	if err := <-held; err != nil {
		t.Fatalf("the held request: %v", err)
	}
	// weftctl check finds weft's policies sufficient: the control plane
	// and the cluster DNS (the kubelet's clusterDNS, a host address here)
	// admitted, for both pods.
	out, _ := weftctlRun("check", "-o", "json")
	judged := 0
	for _, r := range checkResults(t, out) {
		if r.Check == "network policy "+ns {
			judged++
			if r.Status != "ok" {
				t.Errorf("weftctl check on weft's own policies: [%s] %s", r.Status, r.Message)
			}
		}
	}
	if judged == 0 {
		t.Errorf("weftctl check does not judge %s's policies:\n%s", ns, out)
	}

	// The default deny holds: without the policy that admits the app's
	// traffic (the client's egress to 8080) the client no longer reaches
	// the server, and with it back it does.
	kubectlRun(t, "-n", ns, "delete", "networkpolicy", "client-to-server")
	requireStopped(t, ns, client.Name, "default deny without client-to-server")
	kubectlRun(t, "-n", ns, "apply", "-f", filepath.Join(npExamples, "30-allow-app.yaml"))
	requireReaches(t, ns, client.Name, server.Name, "client-to-server applied again")
}

// checkLine is one result of `weftctl check -o json`.
type checkLine struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func checkResults(t *testing.T, out string) []checkLine {
	t.Helper()
	var r struct {
		Results []checkLine `json:"results"`
	}
	// weftctl prints its JSON first; an error line may follow it.
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("weftctl check -o json: %v\n%s", err, out)
	}
	return r.Results
}

// TestCheckReportsPolicyBlockingTheControlPlane: in a default-deny
// namespace with DNS allowed but not 15012 to the control plane, a meshed
// pod's sidecar cannot get its certificate, so the pod never becomes
// Ready, and `weftctl check` FAILs naming the namespace, the pod and the
// policy, and saying what to add. With weft's policy applied the pod
// becomes Ready and check no longer reports the namespace.
func TestCheckReportsPolicyBlockingTheControlPlane(t *testing.T) {
	const ns = "e2e-np-check"
	ctx := context.Background()
	meshNamespace(t, ns)
	kubectlRun(t, "-n", ns, "apply", "-f", filepath.Join(npExamples, "10-default-deny.yaml"))
	// Only the DNS and probe policies of 20-allow-weft-sidecar.yaml.
	kubectlRun(t, "-n", ns, "apply", "-f", filepath.Join(npExamples, "20-allow-weft-sidecar.yaml"))
	kubectlRun(t, "-n", ns, "delete", "networkpolicy", "weft-sidecar-to-controlplane")

	pod := testappPod("lonely", nil, "serve", "-addr", ":8080")
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	p, err := kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil || !injected(p) {
		t.Fatalf("the pod was not injected (err %v)", err)
	}

	// check names the namespace, the pod, the policy that isolates it and
	// what to add.
	var blocked *checkLine
	out, err := weftctlRun("check", "-o", "json")
	for _, r := range checkResults(t, out) {
		if r.Check == "network policy "+ns && r.Status == "FAIL" && strings.Contains(r.Message, "the control plane") {
			blocked = &r
		}
	}
	if blocked == nil || err == nil {
		t.Fatalf("weftctl check (err %v) does not FAIL the namespace whose policies block 15012:\n%s", err, out)
	}
	for _, want := range []string{"pods lonely:", "default-deny", "port 15012/TCP", "kubernetes.io/metadata.name: weft-system"} {
		if !strings.Contains(blocked.Message, want) {
			t.Errorf("check's message lacks %q: %s", want, blocked.Message)
		}
	}
	t.Logf("weftctl check: [%s] %s: %s", blocked.Status, blocked.Check, blocked.Message)
	// What check says is what happens: the sidecar gets no certificate, so
	// the pod is not Ready (30 s; a pod with its sidecar served is Ready in
	// a few). kube-router, like other implementations, programs a new
	// pod's rules a moment after the pod has its address, and a sidecar
	// that reaches the control plane in that window keeps its stream
	// (conntrack admits established flows): then what must hold is that
	// every new connection to 15012 is refused.
	time.Sleep(time.Until(created.Add(30 * time.Second)))
	got, err := kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if podReady(got) {
		cp := controlPlanePod(t)
		probe := net.JoinHostPort(cp.Status.PodIP, "15012")
		if out, err := kubectlExec(t, ns, pod.Name, "app", "/usr/local/bin/testapp", "raw", "-connect", probe,
			"-hello", "weft-controlplane.weft-system.svc", "-read", "3s"); err == nil {
			keepKubeRouterLog(t)
			t.Fatalf("the pod is Ready and a new connection to the control plane at %s is answered: %q", probe, out)
		}
		t.Logf("the pod's sidecar reached the control plane before kube-router programmed the pod (Ready); a new connection to %s is refused", probe)
	}

	// With weft's policy: Ready, and check quiet about the namespace.
	kubectlRun(t, "-n", ns, "apply", "-f", filepath.Join(npExamples, "20-allow-weft-sidecar.yaml"))
	start := time.Now()
	waitFor(t, 3*time.Minute, "the pod Ready once 15012 is allowed", func(ctx context.Context) (bool, error) {
		got, err := kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && podReady(got), nil
	})
	t.Logf("the pod was Ready %.1fs after weft-sidecar-to-controlplane was applied", time.Since(start).Seconds())
	out, _ = weftctlRun("check", "-o", "json")
	seen := false
	for _, r := range checkResults(t, out) {
		if r.Check == "network policy "+ns {
			seen = true
			if r.Status == "FAIL" {
				t.Errorf("check still FAILs the namespace: %s", r.Message)
			}
		}
	}
	if !seen {
		t.Errorf("check says nothing about %s, whose pods are isolated for egress:\n%s", ns, out)
	}
}

// keepKubeRouterLog copies the NetworkPolicy controller's log (test/cluster
// runs kube-router on the host; down.sh removes its state dir) into the
// artifacts, and shows its end: what it synced, or failed to, when a
// policy did not hold.
func keepKubeRouterLog(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(envOr("WEFT_CLUSTER_DIR", filepath.Join("..", "..", "_output", "cluster")), "logs", "kube-router.log"))
	if err != nil {
		t.Logf("kube-router's log: %v", err)
		return
	}
	if err := os.MkdirAll(artifacts, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(artifacts, strings.ReplaceAll(t.Name(), "/", "_")+"-kube-router.log"), b, 0o644)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	t.Logf("kube-router's log, last lines (all of it in %s):\n%s", artifacts, strings.Join(lines[max(0, len(lines)-40):], "\n"))
}
