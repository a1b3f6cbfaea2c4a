package testutil

import (
	"errors"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// Token is what the fake API server knows about one token.
type Token struct {
	User      string   // "system:serviceaccount:<ns>:<sa>", or a user's name
	Groups    []string // the user's groups
	Audiences []string // the audiences it was issued for (APIServerAudience: for the API server)
	Pod, UID  string   // the pod it is bound to ("" for an unbound token)
	Expired   bool
}

// APIServerAudience is the fake API server's own audience: a TokenReview
// that names no audiences accepts only tokens issued for it, as the real
// one does with its --api-audiences.
const APIServerAudience = "https://kubernetes.default.svc.cluster.local"

// TokenReviewErrorToken makes the fake TokenReview fail as if the API server
// were unreachable.
const TokenReviewErrorToken = "tokenreview-unreachable"

// FakeKube returns a client-go fake clientset holding objs whose TokenReview
// behaves like the real API server's: unknown or expired tokens and tokens
// issued for none of the requested audiences are unauthenticated; bound
// tokens carry their pod's name and UID in the user's extra fields.
func FakeKube(tokens map[string]Token, objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		tok, ok := tokens[tr.Spec.Token]
		want := tr.Spec.Audiences
		if len(want) == 0 {
			want = []string{APIServerAudience}
		}
		switch {
		case tr.Spec.Token == TokenReviewErrorToken:
			return true, nil, errConnRefused
		case !ok:
			tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}
		case tok.Expired:
			tr.Status = authenticationv1.TokenReviewStatus{Error: "token has expired"}
		case !slices.ContainsFunc(want, func(a string) bool { return slices.Contains(tok.Audiences, a) }):
			tr.Status = authenticationv1.TokenReviewStatus{Error: "token audiences [" + strings.Join(tok.Audiences, ",") + "] is invalid for the target audiences"}
		default:
			extra := map[string]authenticationv1.ExtraValue{}
			if tok.Pod != "" {
				extra["authentication.kubernetes.io/pod-name"] = authenticationv1.ExtraValue{tok.Pod}
				extra["authentication.kubernetes.io/pod-uid"] = authenticationv1.ExtraValue{tok.UID}
			}
			tr.Status = authenticationv1.TokenReviewStatus{
				Authenticated: true,
				Audiences:     tok.Audiences,
				User:          authenticationv1.UserInfo{Username: tok.User, Groups: tok.Groups, Extra: extra},
			}
		}
		return true, tr, nil
	})
	return cs
}

var errConnRefused = errors.New("connection refused")

// Pod returns a minimal pod running as service account sa.
func Pod(ns, name, uid, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{ServiceAccountName: sa},
	}
}

// FakeWeft returns a dynamic fake client serving weft's CRDs (empty unless
// objs are given), as the control plane's registry reads them.
func FakeWeft(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		v1alpha1.MeshConfigResource:          "MeshConfigList",
		v1alpha1.MTLSPolicyResource:          "MTLSPolicyList",
		v1alpha1.AuthorizationPolicyResource: "AuthorizationPolicyList",
		v1alpha1.EgressPolicyResource:        "EgressPolicyList",
	}, objs...)
}
