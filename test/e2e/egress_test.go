//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/weftmesh/weft/api/audit"
)

const (
	// externalIP is the "external" host that policies name (api.example.test
	// and friends in the pods' hostAliases).
	externalIP  = "198.18.100.10"
	externalIP6 = "2001:2:0:100::10"
	// otherIP is a second external host, in a network namespace of its
	// own: where a hostile app sends an allowed name that does not resolve
	// there.
	otherIP  = "198.18.101.10"
	otherIP6 = "2001:2:0:101::10"
)

// externalHost starts two "external" hosts outside the cluster, each in its
// own network namespace behind a veth from the node, dual-stack: weft-ext at
// externalIP and externalIP6 answering as external-http (80) and
// external-tls (443), weft-ext2 at otherIP and otherIP6 answering as
// other-http and other-tls. Everything is removed at cleanup.
func externalHost(t *testing.T) {
	t.Helper()
	testapp, err := filepath.Abs(filepath.Join("..", "..", "_output", "images", "bin", "testapp"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(testapp); err != nil {
		t.Fatalf("testapp binary: %v (test/cluster/images.sh builds it)", err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	hosts := []struct{ netns, veth, gw, ip, gw6, ip6, name string }{
		{"weft-ext", "weft-ext0", "198.18.100.1", externalIP, "2001:2:0:100::1", externalIP6, "external"},
		{"weft-ext2", "weft-ext1", "198.18.101.1", otherIP, "2001:2:0:101::1", otherIP6, "other"},
	}
	for _, h := range hosts {
		// Deleting a netns frees its veth asynchronously: delete the pair
		// explicitly, here and at cleanup, so the next test can recreate it.
		teardown := func() {
			_ = exec.Command("ip", "link", "del", h.veth).Run()
			_ = exec.Command("ip", "netns", "del", h.netns).Run()
		}
		teardown()
		run("ip", "netns", "add", h.netns)
		t.Cleanup(teardown)
		run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
		run("ip", "addr", "add", h.gw+"/24", "dev", h.veth)
		run("ip", "-6", "addr", "add", h.gw6+"/64", "dev", h.veth, "nodad")
		run("ip", "link", "set", h.veth, "up")
		run("ip", "-n", h.netns, "link", "set", "lo", "up")
		run("ip", "-n", h.netns, "addr", "add", h.ip+"/24", "dev", "eth0")
		run("ip", "-n", h.netns, "-6", "addr", "add", h.ip6+"/64", "dev", "eth0", "nodad")
		run("ip", "-n", h.netns, "link", "set", "eth0", "up")
		run("ip", "-n", h.netns, "route", "add", "default", "via", h.gw)
		run("ip", "-n", h.netns, "-6", "route", "add", "default", "via", h.gw6)
		for _, args := range [][]string{{"serve", "-addr", ":80", "-name", h.name + "-http"}, {"serve", "-addr", ":443", "-tls", "-name", h.name + "-tls"}} {
			cmd := exec.Command("ip", append([]string{"netns", "exec", h.netns, testapp}, args...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		}
	}
	for _, addr := range []string{externalIP, externalIP6, otherIP, otherIP6} {
		waitFor(t, 10*time.Second, "the external host at "+addr, func(context.Context) (bool, error) {
			_, err := httpGet("http://" + net.JoinHostPort(addr, "80") + "/")
			return err == nil, nil
		})
	}
}

var (
	egressGVR     = schema.GroupVersionResource{Group: "weft.dev", Version: "v1alpha1", Resource: "egresspolicies"}
	meshConfigGVR = schema.GroupVersionResource{Group: "weft.dev", Version: "v1alpha1", Resource: "meshconfigs"}
)

// registryOnly sets the mesh's outbound traffic policy (MeshConfig default)
// to REGISTRY_ONLY, and back to ALLOW_ANY when the test ends.
func registryOnly(t *testing.T) {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(restConfig)
	setOutbound := func(mode string) {
		t.Helper()
		patch := []byte(`{"spec":{"outboundTrafficPolicy":{"mode":"` + mode + `"}}}`)
		if _, err := dyn.Resource(meshConfigGVR).Patch(context.Background(), "default", "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setOutbound("REGISTRY_ONLY")
	t.Cleanup(func() { setOutbound("ALLOW_ANY") })
}

// otherRefused makes three HTTP and three TLS requests from pod's app to
// other.example.test, which its sidecar must refuse (why says under what,
// for failures): HTTP with a 403 holding want403, counted http_denied; TLS
// not served, sent to the blackhole and counted blackhole. Each attempt
// moves its own counter of weft_sidecar_connection_failures_total{outbound}
// by one.
func otherRefused(t *testing.T, ns, pod, why, want403 string) {
	t.Helper()
	get := func(args ...string) (string, error) {
		return kubectlExec(t, ns, pod, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	failures := func(reason string) float64 {
		return sidecarMetric(t, ns, pod, "weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": reason})
	}
	const attempts = 3
	httpBefore, holeBefore := failures("http_denied"), failures("blackhole")
	for i := range attempts {
		out, err := get("http://other.example.test/")
		if err == nil || !strings.Contains(out, want403) {
			t.Fatalf("HTTP attempt %d to other.example.test, %s: %v %q, want the sidecar's 403 %q", i+1, why, err, out, want403)
		}
		if out, err := get("-k", "https://other.example.test/"); err == nil {
			t.Fatalf("TLS attempt %d to other.example.test, %s, was served: %q", i+1, why, out)
		}
	}
	if got := failures("http_denied") - httpBefore; got != attempts {
		t.Fatalf("connection_failures{outbound,http_denied} moved by %v over %d refused HTTP attempts, want %d", got, attempts, attempts)
	}
	if got := failures("blackhole") - holeBefore; got != attempts {
		t.Fatalf("connection_failures{outbound,blackhole} moved by %v over %d refused TLS attempts, want %d", got, attempts, attempts)
	}
}

// TestEgressPolicyAndAudit: a meshed client calls "external" services
// named through hostAliases. An EgressPolicy allows TLS to api.example.test
// (by SNI) and denies plain HTTP to evil.example.test (403 naming the
// policy). It says no defaultAction, so the API server makes it Deny: what
// no rule allows (other.example.test) is refused under ALLOW_ANY, each
// attempt counted, the 403 and the audit naming the policy's default; with
// defaultAction Allow it goes through. Every connection is an audit event at
// the control plane with the client's SPIFFE ID, the destination and the
// decision.
func TestEgressPolicyAndAudit(t *testing.T) {
	externalHost(t)
	const ns = "e2e-egress"
	meshNamespace(t, ns, "client")
	ctx := context.Background()
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "client"
		p.Spec.HostAliases = []corev1.HostAlias{{IP: externalIP, Hostnames: []string{"api.example.test", "evil.example.test", "other.example.test"}}}
	}
	client := deployTestapp(t, ns, "client", "svid")
	testappPodHook = orig
	requireSynced(t, client.Name+"."+ns)
	get := func(args ...string) (string, error) {
		return kubectlExec(t, ns, client.Name, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	// Before any policy: ALLOW_ANY lets everything out (audited).
	waitFor(t, time.Minute, "egress to the external host", func(context.Context) (bool, error) {
		_, err := get("http://other.example.test/")
		return err == nil, nil
	})

	dyn := dynamic.NewForConfigOrDie(restConfig)
	policy := weftObject("EgressPolicy", ns, "client-egress", map[string]any{
		"selector": appSelector("client"),
		"mode":     "Enforce",
		"rules": []any{
			map[string]any{"hosts": []any{"api.example.test"}, "ports": []any{egressPort(443, "TLS")}, "action": "Allow"},
			map[string]any{"hosts": []any{"evil.example.test"}, "ports": []any{egressPort(80, "HTTP")}, "action": "Deny"},
			map[string]any{"hosts": []any{"api.example.test"}, "ports": []any{egressPort(80, "HTTP")}, "action": "Allow"},
		},
	})
	if _, err := dyn.Resource(egressGVR).Namespace(ns).Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var out string
	var err error
	waitFor(t, time.Minute, "evil.example.test denied", func(context.Context) (bool, error) {
		out, err = get("http://evil.example.test/")
		return err != nil && strings.Contains(out, "403"), nil
	})
	if !strings.Contains(out, "client-egress") {
		t.Fatalf("the 403 does not name the policy: %q", out)
	}
	if out, err = get("-k", "https://api.example.test/"); err != nil || !strings.Contains(out, "hello from external-tls") {
		t.Fatalf("TLS to api.example.test (allowed by SNI): %v %q", err, out)
	}
	if out, err = get("http://api.example.test/"); err != nil || !strings.Contains(out, "hello from external-http") {
		t.Fatalf("HTTP to api.example.test (allowed by Host): %v %q", err, out)
	}

	// The policy says no defaultAction: the API server stored Deny, and
	// `kubectl get -o yaml` shows it.
	stored, err := dyn.Resource(egressGVR).Namespace(ns).Get(ctx, "client-egress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if def, _, _ := unstructured.NestedString(stored.Object, "spec", "defaultAction"); def != "Deny" {
		t.Fatalf("spec.defaultAction %q as stored, want the CRD's default Deny", def)
	}
	// An allow-list: other.example.test, named by no rule, is refused under
	// ALLOW_ANY by the client's sidecar, not by a host that is down (it
	// answered before the policy). HTTP on port 80 (a port an HTTP rule
	// inspects) gets the sidecar's 403 naming the policy's default and counts
	// http_denied; TLS on 443 (no rule for its SNI: the default chain) goes
	// to the blackhole and counts blackhole. Each attempt moves its own
	// counter by one.
	otherRefused(t, ns, client.Name, "defaultAction Deny", "403 weft: egress to this host denied by "+ns+"/client-egress default (defaultAction Deny)")

	// The app as the attacker: the allowed name sent to an address it does
	// not resolve to (api.example.test is 198.18.100.10 in the pod's
	// /etc/hosts; 198.18.100.11 answers the node, so a refusal is the
	// sidecar's). Each attempt is refused and counted as name_mismatch; the
	// legitimate request still goes through.
	if body, err := httpGet("http://" + otherIP + "/"); err != nil || !strings.Contains(body, "hello from other-http") {
		t.Fatalf("the other address does not answer the node: %v %q", err, body)
	}
	mismatches := func() float64 {
		return sidecarMetric(t, ns, client.Name, "weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "name_mismatch"})
	}
	before := mismatches()
	if out, err := get("-k", "-connect", otherIP+":443", "https://api.example.test/"); err == nil {
		t.Fatalf("SNI api.example.test to %s was served: %q", otherIP, out)
	}
	out, err = get("-connect", otherIP+":80", "http://api.example.test/")
	if err == nil || !strings.Contains(out, "403 weft: egress to api.example.test denied: api.example.test does not resolve to "+otherIP+" for this pod") {
		t.Fatalf("Host api.example.test to %s: %v %q, want the sidecar's 403", otherIP, err, out)
	}
	if got := mismatches() - before; got != 2 {
		t.Fatalf("connection_failures{outbound,name_mismatch} moved by %v over 2 fronted attempts, want 2", got)
	}
	if out, err = get("-k", "https://api.example.test/"); err != nil || !strings.Contains(out, "hello from external-tls") {
		t.Fatalf("TLS to api.example.test after the attempts: %v %q", err, out)
	}

	// defaultAction Allow: what no rule matches is left to the outbound
	// policy, ALLOW_ANY; the rules still apply.
	patch := []byte(`{"spec":{"defaultAction":"Allow"}}`)
	if _, err := dyn.Resource(egressGVR).Namespace(ns).Patch(ctx, "client-egress", "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "other.example.test let through with defaultAction Allow", func(context.Context) (bool, error) {
		out, err := get("http://other.example.test/")
		return err == nil && strings.Contains(out, "hello from external-http"), nil
	})
	if out, err = get("-k", "https://other.example.test/"); err != nil || !strings.Contains(out, "hello from external-tls") {
		t.Fatalf("TLS to other.example.test with defaultAction Allow: %v %q", err, out)
	}
	if out, err = get("http://evil.example.test/"); err == nil || !strings.Contains(out, "403") || !strings.Contains(out, "client-egress rule 1") {
		t.Fatalf("evil.example.test with defaultAction Allow: %v %q, want the Deny rule's 403", err, out)
	}

	// The audit trail at the control plane, decoded with the record's own
	// type (api/audit), so a renamed field cannot read as empty here.
	type event = audit.Event
	find := func(evs []event, match func(event) bool) bool {
		for _, e := range evs {
			if match(e) {
				return true
			}
		}
		return false
	}
	var events []event
	waitFor(t, time.Minute, "audit events at the control plane", func(context.Context) (bool, error) {
		events, _ = readAuditEvents(t, ns) // the control plane's pods not listed: none yet, asked again
		fronted := find(events, func(e event) bool {
			return e.SNI == "api.example.test" && e.DstIP.String() == otherIP && e.Decision == "deny" && strings.HasPrefix(e.Reason, "name_mismatch: ")
		}) && find(events, func(e event) bool {
			return e.Host == "api.example.test" && e.DstIP.String() == otherIP && e.Decision == "deny" && strings.HasPrefix(e.Reason, "name_mismatch: ")
		})
		denied := fronted && find(events, func(e event) bool { return e.Host == "evil.example.test" && e.Decision == "deny" })
		allowed := find(events, func(e event) bool { return e.SNI == "api.example.test" && e.Decision == "allow" })
		allowedHTTP := find(events, func(e event) bool { return e.Host == "api.example.test" && e.Decision == "allow" })
		byDefault := func(e event) bool {
			return e.Decision == "deny" && e.Policy == ns+"/client-egress" && e.Rule == "default"
		}
		deniedByDefault := find(events, func(e event) bool { return e.Host == "other.example.test" && byDefault(e) }) &&
			find(events, func(e event) bool { return e.SNI == "other.example.test" && byDefault(e) })
		allowedByOutbound := find(events, func(e event) bool {
			return e.Host == "other.example.test" && e.Decision == "allow" && e.Policy == "" && e.Outbound == "ALLOW_ANY"
		})
		return denied && allowed && allowedHTTP && deniedByDefault && allowedByOutbound, nil
	})
	for _, e := range events {
		if e.SourceID != "spiffe://cluster.local/ns/e2e-egress/sa/client" || e.Pod != client.Name || (e.DstIP.String() != externalIP && e.DstIP.String() != otherIP) {
			t.Fatalf("audit event with the wrong source or destination: %+v", e)
		}
	}
	if !strings.Contains(logs(t, ns, client.Name, "weft-proxy"), `"decision":"deny"`) {
		t.Fatal("the sidecar's stdout lacks the deny audit line")
	}
	// What the operator reads.
	table, err := weftctlRun("egress", "audit", "-n", ns)
	if err != nil {
		t.Fatalf("weftctl egress audit: %v\n%s", err, table)
	}
	for _, want := range []string{"api.example.test:443", "evil.example.test:80", "deny", "e2e-egress/client-egress"} {
		if !strings.Contains(table, want) {
			t.Fatalf("weftctl egress audit lacks %q:\n%s", want, table)
		}
	}
	refusals, err := weftctlRun("egress", "audit", "-n", ns, "--events", "--decision", "deny", "--destination", "other.example.test")
	if err != nil || !strings.Contains(refusals, ns+"/client-egress#default") {
		t.Fatalf("weftctl egress audit --events of the refusals by default: %v\n%s", err, refusals)
	}
	suggestion, err := weftctlRun("egress", "suggest", "-n", ns)
	if err != nil || !strings.Contains(suggestion, "kind: EgressPolicy") || !strings.Contains(suggestion, "api.example.test") {
		t.Fatalf("weftctl egress suggest: %v\n%s", err, suggestion)
	}
}

// TestEgressAuditModeAndRegistryOnly: an EgressPolicy in Audit mode lets
// what it would deny through and records it as "audit", by a rule or by its
// defaultAction Deny (the CRD's default); MeshConfig's REGISTRY_ONLY denies
// what no policy allows, an Audit-mode policy opening nothing.
func TestEgressAuditModeAndRegistryOnly(t *testing.T) {
	externalHost(t)
	const ns = "e2e-egress-audit"
	meshNamespace(t, ns)
	ctx := context.Background()
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.HostAliases = []corev1.HostAlias{{IP: externalIP, Hostnames: []string{"evil.example.test", "other.example.test"}}}
	}
	client := deployTestapp(t, ns, "client", "svid")
	testappPodHook = orig
	requireSynced(t, client.Name+"."+ns)
	get := func(args ...string) (string, error) {
		return kubectlExec(t, ns, client.Name, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	dyn := dynamic.NewForConfigOrDie(restConfig)
	policy := weftObject("EgressPolicy", ns, "audit-first", map[string]any{
		"mode": "Audit",
		"rules": []any{
			map[string]any{"hosts": []any{"evil.example.test"}, "ports": []any{egressPort(80, "HTTP")}, "action": "Deny"},
		},
	})
	if _, err := dyn.Resource(egressGVR).Namespace(ns).Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Audit mode: the would-be deny goes through, flagged.
	waitFor(t, time.Minute, "an audited request to evil.example.test", func(context.Context) (bool, error) {
		out, err := get("http://evil.example.test/")
		if err != nil || !strings.Contains(out, "hello from external-http") {
			return false, nil
		}
		return strings.Contains(logs(t, ns, client.Name, "weft-proxy"), `"decision":"audit"`), nil
	})
	// What no rule names goes through too, flagged by the policy's
	// defaultAction Deny.
	if out, err := get("http://other.example.test/"); err != nil || !strings.Contains(out, "hello from external-http") {
		t.Fatalf("other.example.test under an Audit-mode policy: %v %q", err, out)
	}
	waitFor(t, 30*time.Second, "the audit line of other.example.test, by the policy's default", func(context.Context) (bool, error) {
		for _, line := range strings.Split(logs(t, ns, client.Name, "weft-proxy"), "\n") {
			var e audit.Event
			if json.Unmarshal([]byte(line), &e) != nil {
				continue // not an audit line
			}
			if e.Host == "other.example.test" && e.Decision == "audit" && e.Policy == ns+"/audit-first" && e.Rule == "default" {
				return true, nil
			}
		}
		return false, nil
	})

	// REGISTRY_ONLY: a destination no policy allows is refused.
	registryOnly(t)
	waitFor(t, time.Minute, "other.example.test refused under REGISTRY_ONLY", func(context.Context) (bool, error) {
		_, err := get("http://other.example.test/")
		return err != nil, nil
	})
	// The refusals are the client sidecar's, not a host that is down: the
	// host answers the node directly. HTTP on port 80 (a port an HTTP rule
	// of this namespace inspects) gets the sidecar's 403 naming the outbound
	// policy and counts http_denied; TLS on 443 (no rule: the default chain)
	// goes to the blackhole and counts blackhole. Each attempt moves its own
	// counter by one.
	if body, err := httpGet("http://" + externalIP + "/"); err != nil || !strings.Contains(body, "hello from external-http") {
		t.Fatalf("the external host does not answer the node: %v %q", err, body)
	}
	otherRefused(t, ns, client.Name, "under REGISTRY_ONLY", "403 weft: egress to this host denied by outbound policy REGISTRY_ONLY")
	// In-mesh traffic is not egress: the API server's Service stays reachable.
	if out, err := get("-k", "https://kubernetes.default.svc/healthz"); err != nil && !strings.Contains(out, "401") && !strings.Contains(out, "403") {
		t.Fatalf("the API server Service under REGISTRY_ONLY: %v %q", err, out)
	}
}
