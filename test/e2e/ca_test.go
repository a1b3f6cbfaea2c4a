//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/controlplane"
)

// cpStatus is the control plane's /debug/status, decoded with the control
// plane's own type so that a renamed field fails to compile here instead of
// reading as empty.
type cpStatus = controlplane.Status

// readyControlPlanes returns the ready control plane pods' statuses.
func controlPlaneStatuses(t *testing.T) map[string]cpStatus {
	t.Helper()
	pods, err := kube.CoreV1().Pods(weftNS).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-controlplane"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]cpStatus{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !podReady(&p) {
			continue
		}
		body, err := cpAdminGet(p.Status.PodIP, "/debug/status")
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		var st cpStatus
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("%s /debug/status: %v", p.Name, err)
		}
		out[p.Name] = st
	}
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestReplicasShareOneCAAndRestartsKeepIt: the two replicas installed
// together raced to create weft-ca and agree on one CA; deleting every
// control plane pod brings up new ones with the same root and intermediate.
func TestReplicasShareOneCAAndRestartsKeepIt(t *testing.T) {
	before := controlPlaneStatuses(t)
	if len(before) != 2 {
		t.Fatalf("%d ready control plane replicas, want 2", len(before))
	}
	var ref cpStatus
	for name, st := range before {
		if len(st.Roots) != 1 {
			t.Fatalf("%s trusts %d roots, want 1", name, len(st.Roots))
		}
		if ref.Roots == nil {
			ref = st
		} else if st.Roots[0] != ref.Roots[0] || st.Intermediate != ref.Intermediate {
			t.Fatalf("replicas disagree on the CA: %+v vs %+v", st, ref)
		}
	}
	ctx := context.Background()
	err := kube.CoreV1().Pods(weftNS).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)},
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-controlplane"})
	if err != nil {
		t.Fatal(err)
	}
	var after map[string]cpStatus
	waitFor(t, 2*time.Minute, "two new ready control plane pods", func(context.Context) (bool, error) {
		after = controlPlaneStatuses(t)
		if len(after) != 2 {
			return false, nil
		}
		for name := range after {
			if _, old := before[name]; old {
				return false, nil
			}
		}
		return true, nil
	})
	for name, st := range after {
		if len(st.Roots) != 1 || st.Roots[0] != ref.Roots[0] || st.Intermediate != ref.Intermediate {
			t.Fatalf("after restart %s has CA %+v, before %+v", name, st, ref)
		}
	}
}

// requireSynced waits until a control plane replica reports node's ADS
// stream with listeners, clusters and the trust bundle ACKed and no NACK.
func requireSynced(t *testing.T, node string) {
	t.Helper()
	var last string
	waitFor(t, time.Minute, "sidecar "+node+" SYNCED with zero NACKs", func(context.Context) (bool, error) {
		for _, st := range controlPlaneStatuses(t) {
			for _, sc := range st.Sidecars {
				if sc.Node != node {
					continue
				}
				seen := map[string]bool{}
				for _, ty := range sc.Types {
					if ty.NACKs != 0 {
						msg := ""
						if ty.LastNACK != nil {
							msg = ty.LastNACK.Message
						}
						t.Fatalf("sidecar %s NACKed %s: %s", node, ty.Type, msg)
					}
					if ty.State == "SYNCED" {
						seen[ty.Type] = true
					}
				}
				last = fmt.Sprintf("%+v", sc.Types)
				if seen["listener"] && seen["cluster"] && seen["secret"] {
					return true, nil
				}
			}
		}
		return false, nil
	})
	_ = last
}
