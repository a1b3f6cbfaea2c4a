//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestSidecarLearnsOnlyTheServicesItReaches: a sidecar (weft-sidecar's
// default: delta xDS, clusters on demand, destinations looked up) holds no
// in-mesh Service's chain, cluster or endpoints until its app connects to
// one; then it holds that one's, asked for and received while the
// connection waited, and never those of the Service beside it that its
// app does not reach. A pod annotated weft.dev/xds-destinations: "false"
// holds every Service's chain, and still only the clusters and endpoints
// of those it reached.
func TestSidecarLearnsOnlyTheServicesItReaches(t *testing.T) {
	const ns = "e2e-ondemand"
	meshNamespace(t, ns)
	server, client := meshServerClient(t, ns)
	bystander, err := kube.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bystander"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type listener struct {
		Name   string
		Chains []struct{ Name string }
	}
	type dump struct {
		OnDemand     bool       `json:"onDemand"`
		LookUp       bool       `json:"lookUp"`
		Outbound     listener   `json:"outbound"`
		Destinations []listener `json:"destinations"`
		Clusters     []struct {
			Name string
		} `json:"clusters"`
		Endpoints map[string][]struct {
			Addr string `json:"address"`
		} `json:"endpoints"`
	}
	read := func(pod string) (dump, error) {
		var d dump
		out, err := kubectlExec(t, ns, pod, "app", "/usr/local/bin/testapp", "get", "http://127.0.0.1:15000/config_dump")
		if err != nil {
			return d, err
		}
		body, ok := strings.CutPrefix(out, "200 ")
		if !ok {
			return d, fmt.Errorf("config_dump: %s", out)
		}
		return d, json.Unmarshal([]byte(body), &d)
	}
	const (
		serverCluster    = "outbound|80|server." + ns
		bystanderCluster = "outbound|80|bystander." + ns
	)
	// chains names the chains d holds for Service svc: in its outbound
	// listener and its destination listeners.
	chains := func(d dump, svc string) []string {
		var out []string
		for _, l := range append([]listener{d.Outbound}, d.Destinations...) {
			for _, fc := range l.Chains {
				if strings.Contains(fc.Name, "|"+svc+"."+ns) {
					out = append(out, l.Name+"/"+fc.Name)
				}
			}
		}
		return out
	}
	held := func(d dump, name string) bool {
		for _, c := range d.Clusters {
			if c.Name == name {
				return true
			}
		}
		return d.Endpoints[name] != nil
	}
	svc, err := kube.CoreV1().Services(ns).Get(context.Background(), "server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, pod string, lookUp bool) {
		var before dump
		if lookUp {
			if before, err = read(pod); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"server", "bystander"} {
				if c := chains(before, s); len(c) != 0 {
					t.Fatalf("the sidecar holds %s's chains %q before its app connected to it", s, c)
				}
			}
		} else {
			// It has both Services' chains (it knows their addresses): the
			// control plane has both.
			waitFor(t, time.Minute, "both Services' chains at the client's sidecar", func(context.Context) (bool, error) {
				d, err := read(pod)
				before = d
				return err == nil && len(chains(d, "server")) > 0 && len(chains(d, "bystander")) > 0, nil
			})
		}
		if !before.OnDemand || before.LookUp != lookUp {
			t.Fatalf("config_dump onDemand %t, lookUp %t; want true, %t", before.OnDemand, before.LookUp, lookUp)
		}
		for _, name := range []string{serverCluster, bystanderCluster} {
			if held(before, name) {
				t.Fatalf("the sidecar holds %s before its app connected to it", name)
			}
		}
		if got := sidecarMetric(t, ns, pod, "weft_sidecar_xds_demanded_clusters", nil); got != 0 {
			t.Fatalf("weft_sidecar_xds_demanded_clusters = %v before any connection, want 0", got)
		}
		// The first connection waits for what it needs and goes through.
		url := "http://server." + ns + ".svc.cluster.local/"
		out, err := kubectlExec(t, ns, pod, "app", "/usr/local/bin/testapp", "get", url)
		if err != nil || !strings.Contains(out, "hello from "+server.Name) {
			t.Fatalf("first request to a Service the sidecar did not hold: %v %s", err, out)
		}
		after, err := read(pod)
		if err != nil {
			t.Fatal(err)
		}
		if !held(after, serverCluster) || len(after.Endpoints[serverCluster]) == 0 {
			t.Errorf("after the request the sidecar lacks %s or its endpoints: %+v", serverCluster, after.Clusters)
		}
		if held(after, bystanderCluster) {
			t.Errorf("the sidecar holds %s, which its app never reached", bystanderCluster)
		}
		if got := sidecarMetric(t, ns, pod, "weft_sidecar_xds_demanded_clusters", nil); got != 1 {
			t.Errorf("weft_sidecar_xds_demanded_clusters = %v after one Service was reached, want 1", got)
		}
		if lookUp {
			want := svc.Spec.ClusterIP + ":80/"
			if c := chains(after, "server"); !slices.ContainsFunc(c, func(s string) bool { return strings.HasPrefix(s, want) }) {
				t.Errorf("after the request the sidecar holds server's chains %q, want one in %s (its ClusterIP's destination listener)", c, want)
			}
			if c := chains(after, "bystander"); len(c) != 0 {
				t.Errorf("the sidecar holds bystander's chains %q (ClusterIP %s), which its app never reached", c, bystander.Spec.ClusterIP)
			}
			if got := sidecarMetric(t, ns, pod, "weft_sidecar_xds_destinations", nil); got < 1 {
				t.Errorf("weft_sidecar_xds_destinations = %v after one Service was reached, want at least 1", got)
			}
		}
		if got := sidecarMetric(t, ns, pod, "weft_sidecar_connection_failures_total", map[string]string{"reason": "on_demand"}); got != 0 {
			t.Errorf("%v connections refused waiting for a cluster or a destination", got)
		}
	}
	orig := testappPodHook
	testappPodHook = func(p *corev1.Pod) {
		p.Spec.ServiceAccountName = "client"
		p.Annotations = map[string]string{"weft.dev/xds-destinations": "false"}
	}
	classic := deployTestapp(t, ns, "classic", "svid")
	testappPodHook = orig
	// First the pod that holds every Service's chain: once it has both,
	// the control plane has both Services.
	t.Run("clusters", func(t *testing.T) { check(t, classic.Name, false) })
	t.Run("destinations", func(t *testing.T) { check(t, client.Name, true) })
}
