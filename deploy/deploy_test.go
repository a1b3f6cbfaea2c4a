package deploy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/internal/testutil"
)

func TestRenderDefaults(t *testing.T) {
	v := Defaults()
	v.Tag, v.TrustDomain, v.Replicas = "v1.2.3", "example.org", 2
	b, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, u := range testutil.Objects(t, b) {
		kinds[u.GetKind()+"/"+u.GetName()] = true
		if u.GetKind() == "Deployment" && u.GetName() == "weft-controlplane" {
			r, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "replicas")
			if fmt.Sprint(r) != "2" {
				t.Fatalf("replicas %v", r)
			}
		}
	}
	for _, want := range []string{"Namespace/weft-system", "ServiceAccount/weft-controlplane", "Deployment/weft-controlplane",
		"Service/weft-controlplane", "ClusterRole/weft-controlplane", "Role/weft-controlplane-ca"} {
		if !kinds[want] {
			t.Errorf("missing %s; have %v", want, kinds)
		}
	}
	for _, want := range []string{"image: weft/weft-controlplane:v1.2.3", "-trust-domain=example.org"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("rendered manifests lack %q", want)
		}
	}
}

func TestRenderRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Values)
		want string
	}{
		{func(v *Values) { v.TrustDomain = "Bad Domain" }, `deploy: trust domain "Bad Domain"`},
		{func(v *Values) { v.Tag = "a b" }, `deploy: image tag "a b"`},
		{func(v *Values) { v.Replicas = 0 }, "deploy: replicas must be at least 1"},
		{func(v *Values) { v.PullPolicy = "Sometimes" }, `deploy: image pull policy "Sometimes"`},
		{func(v *Values) { v.AuditPVC = "Bad_Name" }, `deploy: audit PVC "Bad_Name"`},
		{func(v *Values) { v.AuditPVC = "audit"; v.Replicas = 2 }, "deploy: an audit PVC is one volume"},
	} {
		v := Defaults()
		tc.mut(&v)
		if _, err := Render(v); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("err = %v, want prefix %q", err, tc.want)
		}
	}
}

func TestRenderAuditVolume(t *testing.T) {
	v := Defaults()
	b, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("emptyDir: {sizeLimit: 1Gi}")) {
		t.Fatal("default audit volume is not an emptyDir")
	}
	v.AuditPVC = "weft-audit"
	if b, err = Render(v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("persistentVolumeClaim: {claimName: weft-audit}")) {
		t.Fatalf("audit PVC not used:\n%s", b)
	}
	testutil.Objects(t, b) // still valid YAML
}

// TestRenderGuardsTheAdminPort: the control plane may ask TokenReview and
// SubjectAccessReview and read the API server's client CA; the reader
// ClusterRoles grant the virtual resources it asks about; the
// NetworkPolicies are there unless turned off.
func TestRenderGuardsTheAdminPort(t *testing.T) {
	rules := func(objs []*unstructured.Unstructured, kind, name string) string {
		for _, u := range objs {
			if u.GetKind() == kind && u.GetName() == name {
				r, _, _ := unstructured.NestedSlice(u.Object, "rules")
				return fmt.Sprint(r)
			}
		}
		t.Fatalf("no %s %s", kind, name)
		return ""
	}
	b, err := Render(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	objs := testutil.Objects(t, b)
	cp := rules(objs, "ClusterRole", "weft-controlplane")
	for _, want := range []string{"[authentication.k8s.io] resources:[tokenreviews] verbs:[create]", "[authorization.k8s.io] resources:[subjectaccessreviews] verbs:[create]"} {
		if !strings.Contains(cp, want) {
			t.Errorf("ClusterRole weft-controlplane lacks %s: %s", want, cp)
		}
	}
	for role, res := range map[string]string{"weft-audit-reader": "auditevents", "weft-status-reader": "debug"} {
		r := rules(objs, "ClusterRole", role)
		if !strings.Contains(r, "apiGroups:[weft.dev] resources:["+res+"] verbs:[get]") || !strings.Contains(r, "resources:[pods/portforward] verbs:[create]") {
			t.Errorf("ClusterRole %s: %s", role, r)
		}
	}
	var authnReader, policies int
	for _, u := range objs {
		if u.GetKind() == "RoleBinding" && u.GetNamespace() == "kube-system" {
			ref, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
			if ref == "extension-apiserver-authentication-reader" {
				authnReader++
			}
		}
		if u.GetKind() == "NetworkPolicy" {
			policies++
		}
	}
	if authnReader != 1 || policies != 3 {
		t.Errorf("%d bindings to extension-apiserver-authentication-reader (want 1), %d NetworkPolicies (want 3)", authnReader, policies)
	}
	v := Defaults()
	v.NetworkPolicy = false
	if b, err = Render(v); err != nil {
		t.Fatal(err)
	}
	for _, u := range testutil.Objects(t, b) {
		if u.GetKind() == "NetworkPolicy" {
			t.Errorf("NetworkPolicy %s rendered with NetworkPolicy off", u.GetName())
		}
	}
}

// TestRenderHTTPRouting: --http-routing reaches the control plane's
// arguments only when asked for, and the manifests stay valid.
func TestRenderHTTPRouting(t *testing.T) {
	args := func(v Values) []string {
		b, err := Render(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range testutil.Objects(t, b) {
			if u.GetKind() != "Deployment" || u.GetName() != "weft-controlplane" {
				continue
			}
			cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			a, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
			return a
		}
		t.Fatal("no weft-controlplane Deployment")
		return nil
	}
	v := Defaults()
	if a := args(v); strings.Contains(strings.Join(a, " "), "http-routing") {
		t.Errorf("default args %q route HTTP", a)
	}
	v.HTTPRouting = true
	if a := args(v); !slices.Contains(a, "-http-routing") {
		t.Errorf("args %q lack -http-routing", a)
	}
}
