//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestSidecarLearnsOnlyTheServicesItReaches: a sidecar (weft-sidecar's
// default, delta xDS on demand) holds no in-mesh Service's cluster or
// endpoints until its app connects to one; then it holds that one, asked
// for and received while the connection waited, and never the Service
// beside it that its app does not reach.
func TestSidecarLearnsOnlyTheServicesItReaches(t *testing.T) {
	const ns = "e2e-ondemand"
	meshNamespace(t, ns)
	server, client := meshServerClient(t, ns)
	if _, err := kube.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bystander"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	type dump struct {
		OnDemand bool `json:"onDemand"`
		Outbound struct {
			Chains []struct{ Name string }
		} `json:"outbound"`
		Clusters []struct {
			Name string
		} `json:"clusters"`
		Endpoints map[string][]struct {
			Addr string `json:"address"`
		} `json:"endpoints"`
	}
	read := func() (dump, error) {
		var d dump
		out, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", "http://127.0.0.1:15000/config_dump")
		if err != nil {
			return d, err
		}
		body, ok := strings.CutPrefix(out, "200 ")
		if !ok {
			return d, nil
		}
		return d, json.Unmarshal([]byte(body), &d)
	}
	const (
		serverCluster    = "outbound|80|server." + ns
		bystanderCluster = "outbound|80|bystander." + ns
	)
	// The client's sidecar has both Services' chains (it knows their
	// addresses) and neither's cluster.
	var before dump
	waitFor(t, time.Minute, "both Services' chains at the client's sidecar", func(context.Context) (bool, error) {
		d, err := read()
		if err != nil {
			return false, nil
		}
		before = d
		n := 0
		for _, fc := range d.Outbound.Chains {
			if strings.Contains(fc.Name, "server."+ns) || strings.Contains(fc.Name, "bystander."+ns) {
				n++
			}
		}
		return n >= 2, nil
	})
	if !before.OnDemand {
		t.Fatal("the client's sidecar does not learn Services on demand (config_dump onDemand false)")
	}
	held := func(d dump, name string) bool {
		for _, c := range d.Clusters {
			if c.Name == name {
				return true
			}
		}
		return false
	}
	for _, name := range []string{serverCluster, bystanderCluster} {
		if held(before, name) || before.Endpoints[name] != nil {
			t.Fatalf("the client's sidecar holds %s before its app connected to it", name)
		}
	}
	if got := sidecarMetric(t, ns, client.Name, "weft_sidecar_xds_demanded_clusters", nil); got != 0 {
		t.Fatalf("weft_sidecar_xds_demanded_clusters = %v before any connection, want 0", got)
	}

	// The first connection waits for the cluster and goes through.
	url := "http://server." + ns + ".svc.cluster.local/"
	out, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", url)
	if err != nil || !strings.Contains(out, "hello from "+server.Name) {
		t.Fatalf("first request to a Service the sidecar did not hold: %v %s", err, out)
	}
	after, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if !held(after, serverCluster) || len(after.Endpoints[serverCluster]) == 0 {
		t.Errorf("after the request the client's sidecar lacks %s or its endpoints: %+v", serverCluster, after.Clusters)
	}
	if held(after, bystanderCluster) || after.Endpoints[bystanderCluster] != nil {
		t.Errorf("the client's sidecar holds %s, which its app never reached", bystanderCluster)
	}
	if got := sidecarMetric(t, ns, client.Name, "weft_sidecar_xds_demanded_clusters", nil); got != 1 {
		t.Errorf("weft_sidecar_xds_demanded_clusters = %v after one Service was reached, want 1", got)
	}
	if got := sidecarMetric(t, ns, client.Name, "weft_sidecar_connection_failures_total", map[string]string{"reason": "on_demand"}); got != 0 {
		t.Errorf("%v connections refused waiting for a cluster", got)
	}
}
