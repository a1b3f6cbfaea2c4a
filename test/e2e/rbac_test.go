//go:build e2e

package e2e

import (
	"context"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestControlPlaneLeastPrivilege asks the real API server's authorizer
// what the control plane's ServiceAccount may do with ConfigMaps: read and
// update the trust bundle it publishes (and create it), nothing else — not
// another ConfigMap of an injected namespace, not kube-system's, and no
// listing.
func TestControlPlaneLeastPrivilege(t *testing.T) {
	sa := "system:serviceaccount:" + weftNS + ":weft-controlplane"
	can := func(verb, ns, name string) bool {
		t.Helper()
		r, err := kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + weftNS},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "configmaps", Name: name}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	for _, tc := range []struct {
		verb, ns, name string
		want           bool
	}{
		{"get", "demo", "weft-trust-bundle", true},
		{"update", "demo", "weft-trust-bundle", true},
		{"create", "demo", "", true},
		{"update", "demo", "app-settings", false},
		{"patch", "demo", "weft-trust-bundle", false},
		{"get", "kube-system", "kube-proxy", false},
		{"update", "kube-system", "coredns", false},
		{"list", "demo", "", false},
		{"delete", "demo", "weft-trust-bundle", false},
	} {
		if got := can(tc.verb, tc.ns, tc.name); got != tc.want {
			t.Errorf("%s may %s configmap %s/%s: %v, want %v", sa, tc.verb, tc.ns, tc.name, got, tc.want)
		}
	}
}
