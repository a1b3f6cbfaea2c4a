//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testutil"
)

// udpResponder is `testapp serve-udp` in the external host's network
// namespace (externalHost must have made it): an echo server whose stdout,
// one line per datagram, tells what reached the host.
type udpResponder struct{ testutil.SyncBuffer }

// datagrams counts the datagrams the responders received whose payload
// contains marker ("" counts them all).
func (r *udpResponder) datagrams(marker string) int {
	n := 0
	for _, line := range strings.Split(r.String(), "\n") {
		if strings.HasPrefix(line, "datagram ") && strings.Contains(line, marker) {
			n++
		}
	}
	return n
}

// startUDPResponder runs one `testapp serve-udp` per port in the weft-ext
// namespace, as externalHost runs its servers, all writing to one log.
func startUDPResponder(t *testing.T, ports ...string) *udpResponder {
	t.Helper()
	testapp, err := filepath.Abs(filepath.Join("..", "..", "_output", "images", "bin", "testapp"))
	if err != nil {
		t.Fatal(err)
	}
	r := &udpResponder{}
	for _, port := range ports {
		cmd := exec.Command("ip", "netns", "exec", "weft-ext", testapp, "serve-udp", "-addr", ":"+port)
		cmd.Stdout, cmd.Stderr = r, r
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	waitFor(t, 10*time.Second, "the UDP responders listening", func(context.Context) (bool, error) {
		return strings.Count(r.String(), "serving udp on") == len(ports), nil
	})
	return r
}

// TestEgressUDPUnderRegistryOnly: the mesh cannot decide UDP, so the
// injector (-outbound-udp=mesh, its default) has weft-init let a pod's
// outbound UDP leave, unaudited, when the pod is admitted under ALLOW_ANY,
// and reject it (DNS to the pod's nameservers excepted) when admitted
// under REGISTRY_ONLY. A QUIC-like datagram to the external host's 443 is
// echoed from a pod admitted under ALLOW_ANY (which keeps its choice after
// the switch); from a pod admitted under REGISTRY_ONLY (weft-init
// --outbound-udp=drop in its spec) the send fails at once (EPERM or
// ECONNREFUSED, not a read timeout) and nothing reaches the host, nor does
// UDP to port 53 of a server other than the pod's nameservers; the pod
// still resolves names, and its TCP is the sidecar's to decide: allowed by
// an EgressPolicy, refused by REGISTRY_ONLY otherwise. The annotations
// opt pods out: weft.dev/exclude-outbound-ports and
// weft.dev/exclude-outbound-cidrs cover UDP, weft.dev/outbound-udp: allow
// overrides the mesh.
func TestEgressUDPUnderRegistryOnly(t *testing.T) {
	externalHost(t)
	responder := startUDPResponder(t, "443", "53")
	const ns = "e2e-udp"
	meshNamespace(t, ns)
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(restConfig)
	mc, err := dyn.Resource(meshConfigGVR).Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mode, _, _ := unstructured.NestedString(mc.Object, "spec", "outboundTrafficPolicy", "mode"); mode != "ALLOW_ANY" {
		t.Fatalf("MeshConfig default: outbound mode %q at the start, want ALLOW_ANY", mode)
	}

	// The external host answers UDP from the node itself: a datagram that
	// does not come back from a pod was stopped in the pod.
	hostApp, err := filepath.Abs(filepath.Join("..", "..", "_output", "images", "bin", "testapp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"443", "53"} {
		out, err := exec.Command(hostApp, "udp", "-to", externalIP+":"+port, "-send", "from-the-node", "-wait", "5s").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "reply 1 from "+externalIP+":"+port+": from-the-node") {
			t.Fatalf("the external host does not echo UDP to %s from the node: %v\n%s", port, err, out)
		}
	}

	// TCP to the external host by name: an EgressPolicy allows HTTP to
	// api.example.test and leaves the rest to the outbound policy.
	policy := weftObject("EgressPolicy", ns, "api-only", map[string]any{
		"mode":          "Enforce",
		"defaultAction": "Allow",
		"rules": []any{
			map[string]any{"hosts": []any{"api.example.test"}, "ports": []any{egressPort(80, "HTTP")}, "action": "Allow"},
		},
	})
	if _, err := dyn.Resource(egressGVR).Namespace(ns).Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	hook := func(annotations map[string]string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Annotations = annotations
			p.Spec.HostAliases = []corev1.HostAlias{{IP: externalIP, Hostnames: []string{"api.example.test", "other.example.test"}}}
		}
	}
	deploy := func(name string, annotations map[string]string) *corev1.Pod {
		t.Helper()
		orig := testappPodHook
		testappPodHook = hook(annotations)
		defer func() { testappPodHook = orig }()
		return deployTestapp(t, ns, name, "svid")
	}
	// outboundUDP is the --outbound-udp of the pod's weft-init, as admitted.
	outboundUDP := func(p *corev1.Pod) (string, []string) {
		for _, c := range p.Spec.InitContainers {
			if c.Name != "weft-init" {
				continue
			}
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--outbound-udp="); ok {
					return v, c.Args
				}
			}
			return "", c.Args
		}
		return "", nil
	}

	// sendUDP has the pod's app send three datagrams, each a fresh marker,
	// to the external host's port and wait up to 10s for an echo.
	type udpResult struct {
		out    string
		err    error
		took   time.Duration // the whole kubectl exec (logged only)
		failed time.Duration // what testapp udp reported, on failure
		echoed bool          // an echo of the marker came back
		seen   int           // datagrams with the marker at the responder
		total  int           // datagrams at the responder, any payload, meanwhile
	}
	failedAfter := regexp.MustCompile(`testapp udp: failed after (\S+)`)
	sendUDP := func(pod *corev1.Pod, port string) udpResult {
		t.Helper()
		marker := "weft-udp-" + pod.Name + "-" + port + "-" + randomHex(t)
		before := responder.datagrams("")
		start := time.Now()
		out, err := kubectlExec(t, ns, pod.Name, "app", "/usr/local/bin/testapp", "udp", "-to", externalIP+":"+port, "-send", marker, "-n", "3", "-wait", "10s")
		r := udpResult{out: out, err: err, took: time.Since(start)}
		r.echoed = strings.Contains(out, "reply 1 from "+externalIP+":"+port+": "+marker)
		if m := failedAfter.FindStringSubmatch(out); m != nil {
			r.failed, _ = time.ParseDuration(m[1])
		}
		// Whatever left the pod has reached the responder by now (a veth
		// away); give a straggler a moment anyway.
		time.Sleep(time.Second)
		r.seen = responder.datagrams(marker)
		r.total = responder.datagrams("") - before
		t.Logf("%s: testapp udp to %s:%s in %v: %v\n%s(the responder saw %d of its datagrams, %d in all)", pod.Name, externalIP, port, r.took.Round(time.Millisecond), err, out, r.seen, r.total)
		return r
	}
	wantEcho := func(pod *corev1.Pod, port, why string) {
		t.Helper()
		r := sendUDP(pod, port)
		if r.err != nil || !r.echoed || r.seen == 0 {
			t.Errorf("%s (%s): UDP to %s:%s: %v, echoed %v, the responder saw %d datagrams; want the echo\n%s", pod.Name, why, externalIP, port, r.err, r.echoed, r.seen, r.out)
		}
	}
	wantRejected := func(pod *corev1.Pod, port, why string) {
		t.Helper()
		r := sendUDP(pod, port)
		refused := strings.Contains(r.out, "connection refused") || strings.Contains(r.out, "operation not permitted")
		switch {
		case r.err == nil || r.echoed || strings.Contains(r.out, "reply "):
			t.Errorf("%s (%s): UDP to %s:%s got an answer: %v\n%s", pod.Name, why, externalIP, port, r.err, r.out)
		case !refused:
			t.Errorf("%s (%s): UDP to %s:%s failed, but not with ECONNREFUSED or EPERM: %v\n%s", pod.Name, why, externalIP, port, r.err, r.out)
		case r.failed == 0 || r.failed > 2*time.Second:
			// testapp's own clock: kubectl exec alone can take seconds on a
			// loaded node. A read timeout would report 10s.
			t.Errorf("%s (%s): UDP to %s:%s failed after %v (testapp's clock), want at once, not after the 10s wait\n%s", pod.Name, why, externalIP, port, r.failed, r.out)
		}
		if r.seen != 0 || r.total != 0 {
			t.Errorf("%s (%s): UDP to %s:%s reached the external host: the responder saw %d of its datagrams (%d in all), want none\n%s", pod.Name, why, externalIP, port, r.seen, r.total, responder.String())
		}
	}

	// ALLOW_ANY: UDP leaves, unaudited.
	early := deploy("udp-early", nil)
	if mode, args := outboundUDP(early); mode != "allow" {
		t.Errorf("udp-early, admitted under ALLOW_ANY: weft-init --outbound-udp=%q, want allow (args %q)", mode, args)
	}
	wantEcho(early, "443", "admitted under ALLOW_ANY")
	wantEcho(early, "53", "admitted under ALLOW_ANY, DNS to a server not its nameserver")

	// REGISTRY_ONLY, restored at cleanup.
	registryOnly(t)
	// The injector reads the mode through an informer: wait until its
	// admissions (server-side dry runs, which the webhook serves: sideEffects
	// NoneOnDryRun) say drop several times in a row, whichever replica
	// answers.
	streak := 0
	waitFor(t, time.Minute, "the injector admitting pods with --outbound-udp=drop", func(ctx context.Context) (bool, error) {
		pod := testappPod("udp-dry-run", nil, "svid")
		// Restricted (drop ALL, non-root, no privilege escalation): no
		// capture-bypass warning on every dry run. Never runs.
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To[int64](65532),
			AllowPrivilegeEscalation: ptr.To(false),
		}
		p, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, nil
		}
		if mode, _ := outboundUDP(p); mode == "drop" {
			streak++
		} else {
			streak = 0
		}
		return streak >= 6, nil
	})

	drop := deploy("udp-drop", nil)
	if mode, args := outboundUDP(drop); mode != "drop" {
		t.Errorf("udp-drop, admitted under REGISTRY_ONLY: weft-init --outbound-udp=%q, want drop (args %q)", mode, args)
	}
	wantRejected(drop, "443", "admitted under REGISTRY_ONLY")
	wantRejected(drop, "53", "admitted under REGISTRY_ONLY, DNS to a server not its nameserver")
	// DNS to its nameservers still works (through the sidecar's DNS proxy).
	if out, err := kubectlExec(t, ns, drop.Name, "app", "/usr/local/bin/testapp", "lookup", "kubernetes.default.svc.cluster.local"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("udp-drop: DNS lookup of kubernetes.default.svc.cluster.local: %v\n%s", err, out)
	} else {
		t.Logf("udp-drop: kubernetes.default.svc.cluster.local is %s", strings.TrimSpace(out))
	}
	// Its TCP is the sidecar's: the allowed name goes through, the rest is
	// refused by REGISTRY_ONLY (the sidecar's 403, not a host that is down).
	requireSynced(t, drop.Name+"."+ns)
	get := func(args ...string) (string, error) {
		return kubectlExec(t, ns, drop.Name, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	waitFor(t, time.Minute, "udp-drop: HTTP to api.example.test, allowed by the EgressPolicy", func(context.Context) (bool, error) {
		out, err := get("http://api.example.test/")
		return err == nil && strings.Contains(out, "hello from external-http"), nil
	})
	var out string
	waitFor(t, time.Minute, "udp-drop: HTTP to other.example.test refused under REGISTRY_ONLY", func(context.Context) (bool, error) {
		out, err = get("http://other.example.test/")
		return err != nil && strings.Contains(out, "403"), nil
	})
	if !strings.Contains(out, "403 weft: egress to this host denied by outbound policy REGISTRY_ONLY") {
		t.Errorf("udp-drop: HTTP to other.example.test under REGISTRY_ONLY: %q, want the sidecar's 403 naming the outbound policy", out)
	}
	t.Logf("udp-drop: TCP to api.example.test:80 allowed by the EgressPolicy; to other.example.test:80: %s", strings.TrimSpace(out))

	// A pod keeps the choice made at its admission.
	wantEcho(early, "443", "admitted under ALLOW_ANY, after the switch to REGISTRY_ONLY")

	// The pod author's opt-outs.
	for _, c := range []struct {
		name        string
		annotations map[string]string
		mode        string
	}{
		{"udp-exclude-port", map[string]string{"weft.dev/exclude-outbound-ports": "443"}, "drop"},
		{"udp-exclude-cidr", map[string]string{"weft.dev/exclude-outbound-cidrs": externalIP + "/32"}, "drop"},
		{"udp-allow", map[string]string{"weft.dev/outbound-udp": "allow"}, "allow"},
	} {
		p := deploy(c.name, c.annotations)
		if mode, args := outboundUDP(p); mode != c.mode {
			t.Errorf("%s %v, admitted under REGISTRY_ONLY: weft-init --outbound-udp=%q, want %s (args %q)", c.name, c.annotations, mode, c.mode, args)
		}
		wantEcho(p, "443", "admitted under REGISTRY_ONLY with "+annotationText(c.annotations))
	}
}

// annotationText shows annotations as k: v, sorted.
func annotationText(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+": "+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
