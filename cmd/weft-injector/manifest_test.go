package main

import (
	"net"
	"slices"
	"strconv"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftmesh/weft/deploy"
	"github.com/weftmesh/weft/injector"
	"github.com/weftmesh/weft/internal/testutil"
)

// rendered returns the install manifests' objects named weft-injector, by kind.
func rendered(t *testing.T, v deploy.Values) map[string]*unstructured.Unstructured {
	t.Helper()
	b, err := deploy.Render(v)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, u := range testutil.Objects(t, b) {
		if u.GetName() == "weft-injector" {
			out[u.GetKind()] = u
		}
	}
	return out
}

func as[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	if u == nil {
		t.Fatal("object missing from the manifests")
	}
	v := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, v, true); err != nil {
		t.Fatalf("%s: %v", u.GetKind(), err)
	}
	return v
}

// The manifests and the binary agree: flags exist, ports, paths and names
// match the injector's constants.
func TestManifestMatchesBinary(t *testing.T) {
	v := deploy.Defaults()
	v.Namespace, v.Tag, v.TrustDomain = "mesh", "v9.9.9", "example.org"
	objs := rendered(t, v)
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment", "MutatingWebhookConfiguration"} {
		if objs[k] == nil {
			t.Errorf("no %s weft-injector", k)
		}
	}
	dep := as[appsv1.Deployment](t, objs["Deployment"])
	c := dep.Spec.Template.Spec.Containers[0]
	var o options
	var level string
	fs := flagSet(&o, &level)
	if err := fs.Parse(c.Args); err != nil {
		t.Fatalf("Deployment args %v: %v", c.Args, err)
	}
	if o.sidecarImage != "weft/weft-sidecar:v9.9.9" || o.trustDomain != "example.org" || o.controlPlane != "weft-controlplane.mesh.svc:15012" {
		t.Errorf("flags %+v", o)
	}
	_, port, _ := net.SplitHostPort(injector.DefaultAddr)
	if strconv.Itoa(int(c.Ports[0].ContainerPort)) != port || c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("container port %v, probe %+v; want %s over HTTPS", c.Ports, c.ReadinessProbe.HTTPGet, port)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["weft-token"]+"/token" != o.tokenPath || mounts["weft-trust-bundle"]+"/bundle.pem" != o.bundlePath {
		t.Errorf("mounts %v, flags token %s bundle %s", mounts, o.tokenPath, o.bundlePath)
	}
	for _, vol := range dep.Spec.Template.Spec.Volumes {
		if p := vol.Projected; p != nil && p.Sources[0].ServiceAccountToken.Audience != injector.TokenAudience {
			t.Errorf("token audience %q", p.Sources[0].ServiceAccountToken.Audience)
		}
	}

	svc := as[corev1.Service](t, objs["Service"])
	if sp := svc.Spec.Ports[0]; sp.Port != 443 || sp.TargetPort.String() != port {
		t.Errorf("service port %+v", sp)
	}
	mwc := as[admissionregistrationv1.MutatingWebhookConfiguration](t, objs["MutatingWebhookConfiguration"])
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("webhooks %d", len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	if wh.Name != "inject.weft.dev" || wh.ClientConfig.Service.Namespace != "mesh" || *wh.ClientConfig.Service.Path != "/inject" ||
		*wh.FailurePolicy != admissionregistrationv1.Fail || *wh.TimeoutSeconds != 5 || *wh.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun ||
		*wh.ReinvocationPolicy != admissionregistrationv1.NeverReinvocationPolicy || !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("webhook %+v", wh)
	}
	if wh.NamespaceSelector.MatchLabels["weft.dev/inject"] != "enabled" ||
		!slices.Equal(wh.NamespaceSelector.MatchExpressions[0].Values, []string{"kube-system", "mesh"}) {
		t.Errorf("namespaceSelector %+v", wh.NamespaceSelector)
	}
	if r := wh.Rules[0]; !slices.Equal(r.Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!slices.Equal(r.Resources, []string{"pods"}) {
		t.Errorf("rules %+v", wh.Rules)
	}
	role := as[rbacv1.ClusterRole](t, objs["ClusterRole"])
	if r := role.Rules[0]; !slices.Equal(r.ResourceNames, []string{injector.WebhookConfiguration}) || !slices.Equal(r.Verbs, []string{"get", "patch"}) {
		t.Errorf("webhook rule %+v", r)
	}
}
