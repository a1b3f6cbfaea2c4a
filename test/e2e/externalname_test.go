//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/api/audit"
)

// clusterDNSName makes the cluster's DNS (CoreDNS, test/cluster) answer
// name with ip until the test ends: a line of its hosts file, which it
// reloads every 2 s. The pods learn the name only from the cluster DNS
// (no hostAliases), as they do an external name on a real cluster.
func clusterDNSName(t *testing.T, ip, name string) {
	t.Helper()
	path := filepath.Join(envOr("WEFT_CLUSTER_DIR", filepath.Join("..", "..", "_output", "cluster")), "coredns", "hosts")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the cluster DNS's hosts file: %v", err)
	}
	if err := os.WriteFile(path, append(before, []byte(ip+" "+name+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(path, before, 0o644) })
}

// TestExternalNameEgress: an ExternalName Service is egress to the name
// it points at. Service ext points at api.example.test, which an
// EgressPolicy allows (HTTP on 80, TLS on 443); Service ext-other at
// other.example.test, which no rule allows (defaultAction Deny). A meshed
// client calls them by their Service names, short and fully qualified,
// resolved by the cluster DNS (the Service's CNAME, then the external
// name's address): ext is let through by the rule for api.example.test,
// ext-other refused with a 403 naming the Service and the external name;
// the app as the attacker, sending Host ext to an address ext does not
// resolve to, is refused (name_mismatch). The audit records at the control
// plane name the Service and, as the destination, the external host.
func TestExternalNameEgress(t *testing.T) {
	externalHost(t)
	clusterDNSName(t, externalIP, "api.example.test")
	clusterDNSName(t, otherIP, "other.example.test")
	const ns = "e2e-extname"
	meshNamespace(t, ns, "client")
	ctx := context.Background()
	for name, target := range map[string]string{"ext": "api.example.test", "ext-other": "other.example.test"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: target}}
		if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	allowAPIExampleTest(t, ns, "by-name")
	client := deployTestappAs(t, ns, "client", "client", "svid")
	requireSynced(t, client.Name+"."+ns)
	get := func(args ...string) (string, error) {
		return kubectlExec(t, ns, client.Name, "app", append([]string{"/usr/local/bin/testapp", "get"}, args...)...)
	}
	fqdn := "ext." + ns + ".svc.cluster.local"
	waitFor(t, time.Minute, "HTTP to Service ext (api.example.test)", func(context.Context) (bool, error) {
		out, err := get("http://ext/")
		return err == nil && strings.Contains(out, "hello from external-http"), nil
	})
	if out, err := get("http://" + fqdn + "/"); err != nil || !strings.Contains(out, "hello from external-http") {
		t.Fatalf("HTTP to %s: %v %q", fqdn, err, out)
	}
	if out, err := get("-k", "https://"+fqdn+"/"); err != nil || !strings.Contains(out, "hello from external-tls") {
		t.Fatalf("TLS to %s (SNI the Service's name): %v %q", fqdn, err, out)
	}
	// The name no rule allows, through its Service: refused, and the 403
	// says which Service and which external name.
	out, err := get("http://ext-other/")
	want403 := "403 weft: egress to ext-other." + ns + ".svc.cluster.local (ExternalName " + ns + "/ext-other → other.example.test) denied by " + ns + "/by-name default (defaultAction Deny)"
	if err == nil || !strings.Contains(out, want403) {
		t.Fatalf("HTTP to Service ext-other: %v %q, want %q", err, out, want403)
	}
	if out, err := get("-k", "https://ext-other."+ns+"/"); err == nil {
		t.Fatalf("TLS to Service ext-other was served: %q", out)
	}
	// The app as the attacker: the allowed Service's name sent to the
	// address of the refused one (it answers the node: a refusal is the
	// sidecar's).
	if body, err := httpGet("http://" + otherIP + "/"); err != nil || !strings.Contains(body, "hello from other-http") {
		t.Fatalf("the other address does not answer the node: %v %q", err, body)
	}
	mismatches := func() float64 {
		return sidecarMetric(t, ns, client.Name, "weft_sidecar_connection_failures_total", map[string]string{"direction": "outbound", "reason": "name_mismatch"})
	}
	before := mismatches()
	// The name is bound to what the cluster DNS answers for the Service.
	if out, err := get("-connect", otherIP+":80", "http://ext/"); err == nil || !strings.Contains(out, "403 weft: egress to ext denied: "+fqdn+" does not resolve to "+otherIP) {
		t.Fatalf("Host ext sent to %s: %v %q, want the sidecar's 403", otherIP, err, out)
	}
	if out, err := get("-k", "-connect", otherIP+":443", "https://"+fqdn+"/"); err == nil {
		t.Fatalf("SNI %s sent to %s was served: %q", fqdn, otherIP, out)
	}
	if got := mismatches() - before; got != 2 {
		t.Fatalf("connection_failures{outbound,name_mismatch} moved by %v over 2 fronted attempts, want 2", got)
	}

	// The audit trail names the Service and, as the destination, the
	// external host.
	var events []audit.Event
	find := func(match func(audit.Event) bool) bool {
		for _, e := range events {
			if match(e) {
				return true
			}
		}
		return false
	}
	ext := func(e audit.Event) bool { return e.Service == ns+"/ext" && e.DstHost == "api.example.test" }
	waitFor(t, time.Minute, "the audit records of the ExternalName Services", func(context.Context) (bool, error) {
		events, _ = readAuditEvents(t, ns)
		return find(func(e audit.Event) bool {
			return ext(e) && e.Host == "ext" && e.DstIP.String() == externalIP && e.Decision == "allow" && e.Policy == ns+"/by-name" && e.Rule == "0"
		}) && find(func(e audit.Event) bool {
			return ext(e) && e.SNI == fqdn && e.Protocol == audit.ProtocolTLS && e.Decision == "allow"
		}) && find(func(e audit.Event) bool {
			return e.Service == ns+"/ext-other" && e.DstHost == "other.example.test" && e.Host == "ext-other" && e.Decision == "deny" && e.Rule == "default"
		}) && find(func(e audit.Event) bool {
			return ext(e) && e.Host == "ext" && e.DstIP.String() == otherIP && e.Decision == "deny" && strings.HasPrefix(e.Reason, "name_mismatch: ")
		}), nil
	})
	table, err := weftctlRun("egress", "audit", "-n", ns, "--events", "--destination", "api.example.test")
	if err != nil || !strings.Contains(table, "(ExternalName "+ns+"/ext)") || !strings.Contains(table, "api.example.test:80") {
		t.Fatalf("weftctl egress audit --events: %v\n%s", err, table)
	}
}
