package testutil

import (
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Grant is one permission the fake authorizer knows: Subject (a user's
// name, or "group:<name>") may Verb Resource in API group Group, in
// Namespace ("" for every namespace, as a ClusterRoleBinding grants).
type Grant struct {
	Subject   string
	Verb      string
	Group     string
	Resource  string
	Namespace string
}

// SARErrorUser makes the fake SubjectAccessReview fail as if the API server
// were unreachable.
const SARErrorUser = "sar-unreachable"

// FakeRBAC makes cs answer SubjectAccessReviews for resource attributes
// from grants, as RBAC would: allowed when a grant matches the user or one
// of its groups, otherwise not allowed (and not explicitly denied, RBAC
// never denies).
func FakeRBAC(cs *fake.Clientset, grants ...Grant) {
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		spec := sar.Spec
		if spec.User == SARErrorUser {
			return true, nil, errConnRefused
		}
		ra := spec.ResourceAttributes
		sar.Status = authorizationv1.SubjectAccessReviewStatus{Reason: "no RBAC policy matched"}
		if ra == nil {
			return true, sar, nil
		}
		for _, g := range grants {
			who := g.Subject == spec.User
			if name, ok := strings.CutPrefix(g.Subject, "group:"); ok {
				who = slices.Contains(spec.Groups, name)
			}
			if who && g.Verb == ra.Verb && g.Group == ra.Group && g.Resource == ra.Resource && ra.Subresource == "" &&
				(g.Namespace == "" || g.Namespace == ra.Namespace) {
				sar.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: true, Reason: "granted"}
				break
			}
		}
		return true, sar, nil
	})
}
