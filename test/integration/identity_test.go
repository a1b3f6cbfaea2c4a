package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/controlplane"
	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar"
)

// TestSidecarGetsItsIdentityFromTheControlPlane: a control plane and a
// sidecar on loopback; the sidecar trusts only the bundle the control plane
// published, authenticates with its token, becomes ready, and an app reads
// its SVID over the SPIFFE Workload API.
func TestSidecarGetsItsIdentityFromTheControlPlane(t *testing.T) {
	// The pod's IP is loopback's: the control plane accepts the sidecar's
	// ADS and audit streams only from its pod's IPs.
	pod := testutil.Pod("demo", "app-1", "u1", "app")
	pod.Status.PodIP, pod.Status.PodIPs = "127.0.0.1", []corev1.PodIP{{IP: "127.0.0.1"}}
	kube := testutil.FakeKube(map[string]testutil.Token{
		"app-token": {User: "system:serviceaccount:demo:app", Audiences: []string{"weft-ca"}, Pod: "app-1", UID: "u1"},
		// An operator allowed to read /debug/status (controlplane/adminauth).
		"ops-token": {User: "ops", Audiences: []string{testutil.APIServerAudience}},
	}, pod,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"weft.dev/inject": "enabled"}}})
	testutil.FakeRBAC(kube, testutil.Grant{Subject: "ops", Verb: "get", Group: "weft.dev", Resource: "debug", Namespace: "weft-system"})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cpReady := make(chan [2]net.Addr, 1)
	cpDone := make(chan error, 1)
	go func() {
		cpDone <- controlplane.Run(ctx, controlplane.Config{Kube: kube, Weft: testutil.FakeWeft(), AuditDB: filepath.Join(t.TempDir(), "audit.db"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			Ready: func(g, h net.Addr) { cpReady <- [2]net.Addr{g, h} }})
	}()
	var cpAddr, cpHTTP net.Addr
	select {
	case a := <-cpReady:
		cpAddr, cpHTTP = a[0], a[1]
	case err := <-cpDone:
		t.Fatal(err)
	}

	// What the kubelet mounts into the pod: the token and the bundle.
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenPath, []byte("app-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	var bundlePEM string
	testutil.Eventually(t, "the trust bundle published in demo", func() bool {
		if cm, err := kube.CoreV1().ConfigMaps("demo").Get(ctx, "weft-trust-bundle", metav1.GetOptions{}); err == nil {
			bundlePEM = cm.Data["bundle.pem"]
		}
		return bundlePEM != ""
	})
	bundlePath := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundlePath, []byte(bundlePEM), 0o644); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "workload.sock")

	scReady := make(chan net.Addr, 1)
	scDone := make(chan error, 1)
	go func() {
		// The control plane's certificate carries its Service DNS name, not
		// 127.0.0.1; the sidecar checks its SPIFFE ID, which is what counts.
		scDone <- sidecar.Run(ctx, sidecar.Config{ControlPlane: cpAddr.String(), TokenPath: tokenPath, BundlePath: bundlePath,
			WorkloadSocket: socket, HealthAddr: "127.0.0.1:0",
			InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", DNSAddrs: []string{"127.0.0.1:0"}, PodName: "app-1", PodNamespace: "demo",
			Ready: func(h net.Addr) { scReady <- h }})
	}()
	var health net.Addr
	select {
	case health = <-scReady:
	case err := <-scDone:
		t.Fatal(err)
	}

	// Ready once the SVID is in.
	testutil.Eventually(t, "the sidecar ready (/healthz/ready 200)", func() bool {
		code, _ := testutil.Get(t, "http://"+health.String()+"/healthz/ready")
		return code == http.StatusOK
	})

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	svid, err := workloadapi.FetchX509SVID(wctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatalf("Workload API: %v", err)
	}
	if want := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/app"); svid.ID != want {
		t.Fatalf("app got %s, want %s", svid.ID, want)
	}
	_, metrics := testutil.Get(t, "http://"+health.String()+"/metrics")
	if !strings.Contains(metrics, "weft_sidecar_svid_renewals_total 1") || !strings.Contains(metrics, "weft_sidecar_svid_expiry_timestamp_seconds") {
		t.Fatalf("sidecar metrics lack identity state:\n%s", metrics)
	}
	// Served uncompressed even to a scraper that offers gzip, as Prometheus
	// does: a compressor per scrape would cost more memory than the sidecar
	// saves on a few KB of text.
	req, _ := http.NewRequest("GET", "http://"+health.String()+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Fatalf("sidecar /metrics answered with Content-Encoding %q", ce)
	}

	// The control plane sees the sidecar's ADS stream with every type ACKed
	// and no NACK: the translator's real output is accepted whole.
	// /debug/status is served over TLS to a caller RBAC allows.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(bundlePEM))
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "weft-controlplane.weft-system.svc", MinVersion: tls.VersionTLS12}}}
	var st controlplane.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "https://"+cpHTTP.String()+"/debug/status", nil)
		req.Header.Set("Authorization", "Bearer ops-token")
		resp, body := testutil.Do(t, admin, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/debug/status: %s %s", resp.Status, body)
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		if synced(st) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !synced(st) {
		t.Fatalf("sidecar not SYNCED with zero NACKs: %+v", st.Sidecars)
	}

	cancel()
	for _, ch := range []chan error{scDone, cpDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("did not stop within 30s of cancel")
		}
	}
}

func synced(st controlplane.Status) bool {
	if len(st.Sidecars) != 1 || st.Sidecars[0].Node != "app-1.demo" {
		return false
	}
	// Endpoints and routes are only sent when a service or an HTTP egress
	// rule needs them; listeners, clusters and the trust bundle always.
	seen := map[string]bool{}
	for _, ty := range st.Sidecars[0].Types {
		if ty.State != "SYNCED" || ty.NACKs != 0 {
			return false
		}
		seen[ty.Type] = true
	}
	return seen["listener"] && seen["cluster"] && seen["secret"]
}
