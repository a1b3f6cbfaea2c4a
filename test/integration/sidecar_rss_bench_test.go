package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/controlplane"
	"github.com/weftmesh/weft/internal/testutil"
)

// rssSidecar is the sidecar process's config (./rsssidecar's Config, as
// JSON in $WEFT_RSS_SIDECAR).
type rssSidecar struct {
	ControlPlane, Token, Bundle, Socket string
	Delta, OnDemand, Destinations       bool
}

// BenchmarkSidecarRSS: one real sidecar's resident memory, by the size of
// the mesh and how it learns it. The control plane (controlplane.Run, in
// this process) serves a fake API server holding N Services × 10
// endpoints (injected pods); the sidecar (sidecar.Run, as weft-sidecar
// runs it, with the runtime's memory settings and the release of free
// heap once quiet) runs in a process of its own, ./rsssidecar, built
// first (a binary of the sidecar's packages alone, as weft-sidecar). Once
// the control plane reports every type it was sent SYNCED (ACKed) and the
// sidecar has been quiet long enough to give back its free heap, its
// VmRSS is read from /proc. Modes: "everything" (delta, sent every
// Service: -xds-on-demand=false), "clusters-on-demand" (every Service
// address's chain, clusters and endpoints on demand:
// -xds-destinations=false) and "lookup" (weft-sidecar's default: nothing
// of a Service until a connection goes to it). No connection is made, so
// the on-demand modes hold no Service's cluster: what a sidecar that
// reached none holds (BenchmarkSidecarHeap, controlplane/xds/translate,
// counts one that reached 10).
//
//	go test ./test/integration/ -run=NONE -bench=SidecarRSS -benchtime=1x
func BenchmarkSidecarRSS(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "rsssidecar")
	if out, err := exec.Command("go", "build", "-o", bin, "./rsssidecar").CombinedOutput(); err != nil {
		b.Fatalf("go build ./rsssidecar: %v\n%s", err, out)
	}
	for _, services := range []int{10, 1000} {
		for _, mode := range []struct {
			name                          string
			delta, onDemand, destinations bool
		}{
			{"everything", true, false, false},
			{"clusters-on-demand", true, true, false},
			{"lookup", true, true, true},
		} {
			b.Run(fmt.Sprintf("services=%d/%s", services, mode.name), func(b *testing.B) {
				var rss float64
				for range b.N {
					rss = sidecarRSS(b, bin, services, rssSidecar{Delta: mode.delta, OnDemand: mode.onDemand, Destinations: mode.destinations})
				}
				b.ReportMetric(rss, "rss-MB")
			})
		}
	}
}

// rssMesh is the API server's objects: the sidecar's own pod (app-1 in
// demo, loopback's IP: the control plane takes its streams only from its
// pod's IPs) and services × 10 injected endpoints in 20 namespaces.
func rssMesh(services int) []runtime.Object {
	pod := testutil.Pod("demo", "app-1", "u1", "app")
	pod.Status.PodIP, pod.Status.PodIPs = "127.0.0.1", []corev1.PodIP{{IP: "127.0.0.1"}}
	objs := []runtime.Object{pod,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"weft.dev/inject": "enabled"}}}}
	for n := range 20 {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", n),
			Labels: map[string]string{"weft.dev/inject": "enabled"}}})
	}
	addr := func(base netip.Addr, n int) string {
		b := base.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + uint32(n)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
	}
	svcBase, podBase := netip.MustParseAddr("198.19.64.0"), netip.MustParseAddr("198.18.64.0")
	tcp := corev1.ProtocolTCP
	for i := range services {
		ns, name := fmt.Sprintf("ns-%d", i%20), fmt.Sprintf("svc-%d", i)
		labels := map[string]string{"app": name}
		objs = append(objs,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, Selector: labels,
				ClusterIP: addr(svcBase, i), ClusterIPs: []string{addr(svcBase, i)},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: tcp}},
			}})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: &tcp}},
		}
		for e := range 10 {
			podName, ip := fmt.Sprintf("%s-%d", name, e), addr(podBase, i*10+e)
			objs = append(objs, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: podName, Labels: labels, UID: types.UID("uid-" + ns + "-" + podName)},
				Spec: corev1.PodSpec{ServiceAccountName: name, NodeName: "node-1",
					Containers: []corev1.Container{{Name: "app"}, {Name: "weft-proxy"}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
			})
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: new("node-1"),
				Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: podName}})
		}
		objs = append(objs, es)
	}
	return objs
}

// sidecarRSS runs a control plane on a mesh of services and a sidecar
// process in mode c, and returns the sidecar's VmRSS (MB) once synced and
// quiet.
func sidecarRSS(b *testing.B, bin string, services int, c rssSidecar) float64 {
	b.Helper()
	kube := testutil.FakeKube(map[string]testutil.Token{
		"app-token": {User: "system:serviceaccount:demo:app", Audiences: []string{"weft-ca"}, Pod: "app-1", UID: "u1"},
		"ops-token": {User: "ops", Audiences: []string{testutil.APIServerAudience}},
	}, rssMesh(services)...)
	testutil.FakeRBAC(kube, testutil.Grant{Subject: "ops", Verb: "get", Group: "weft.dev", Resource: "debug", Namespace: "weft-system"})
	ctx, cancel := context.WithCancel(context.Background())
	cpReady := make(chan [2]net.Addr, 1)
	cpDone := make(chan error, 1)
	go func() {
		cpDone <- controlplane.Run(ctx, controlplane.Config{Kube: kube, Weft: testutil.FakeWeft(), AuditDB: filepath.Join(b.TempDir(), "audit.db"),
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Ready: func(g, h net.Addr) { cpReady <- [2]net.Addr{g, h} }})
	}()
	b.Cleanup(func() {
		cancel()
		select {
		case <-cpDone:
		case <-time.After(30 * time.Second):
			b.Error("control plane did not stop within 30s")
		}
	})
	var cpAddr, cpHTTP net.Addr
	select {
	case a := <-cpReady:
		cpAddr, cpHTTP = a[0], a[1]
	case err := <-cpDone:
		b.Fatal(err)
	}

	dir := b.TempDir()
	c.ControlPlane, c.Token, c.Bundle, c.Socket = cpAddr.String(), filepath.Join(dir, "token"), filepath.Join(dir, "bundle.pem"), filepath.Join(dir, "workload.sock")
	if err := os.WriteFile(c.Token, []byte("app-token"), 0o600); err != nil {
		b.Fatal(err)
	}
	var bundlePEM string
	testutil.Eventually(b, "the trust bundle published in demo", func() bool {
		if cm, err := kube.CoreV1().ConfigMaps("demo").Get(ctx, "weft-trust-bundle", metav1.GetOptions{}); err == nil {
			bundlePEM = cm.Data["bundle.pem"]
		}
		return bundlePEM != ""
	})
	if err := os.WriteFile(c.Bundle, []byte(bundlePEM), 0o644); err != nil {
		b.Fatal(err)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		b.Fatal(err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "WEFT_RSS_SIDECAR="+string(raw))
	cmd.ExtraFiles = []*os.File{evW}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	evW.Close()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(evR)
		for sc.Scan() {
			if h, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- h
			}
		}
	}()
	var health string
	select {
	case health = <-ready:
	case <-time.After(60 * time.Second):
		b.Fatal("sidecar process not started after 60s")
	}
	testutil.Eventually(b, "the sidecar ready", func() bool {
		code, _ := testutil.Get(b, "http://"+health+"/healthz/ready")
		return code == http.StatusOK
	})

	// Synced: every type the sidecar was sent ACKed, none NACKed.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(bundlePEM))
	admin := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "weft-controlplane.weft-system.svc", MinVersion: tls.VersionTLS12}}}
	testutil.Eventually(b, "the sidecar SYNCED", func() bool {
		req, _ := http.NewRequest(http.MethodGet, "https://"+cpHTTP.String()+"/debug/status", nil)
		req.Header.Set("Authorization", "Bearer ops-token")
		resp, body := testutil.Do(b, admin, req)
		var st controlplane.Status
		return resp.StatusCode == http.StatusOK && json.Unmarshal([]byte(body), &st) == nil && synced(st)
	})

	// Quiet: the sidecar gives its free heap back after a quiet period
	// (memtune: 5 s samples, so not before 10 s); RSS is read once it
	// moved less than 1 % over 3 s after that, at most 60 s.
	time.Sleep(12 * time.Second)
	var last float64
	steady := 0
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && steady < 3; time.Sleep(time.Second) {
		r := vmRSS(b, cmd.Process.Pid)
		if last > 0 && r < last*1.01 && r > last*0.99 {
			steady++
		} else {
			steady = 0
		}
		last = r
	}
	if steady < 3 {
		b.Fatalf("sidecar RSS still moving after 60s (last %.1f MB): no figure", last)
	}
	return last
}

// vmRSS is pid's resident set (MB), from /proc/<pid>/status.
func vmRSS(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for l := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				b.Fatalf("VmRSS %q: %v", v, err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}
