package deploy

import (
	"fmt"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/internal/testutil"
)

// TestManifestsSpellAPINames: the YAML restates names and ports that
// api/names holds for the code (the components' names and labels, their
// ports, the control plane's address, the webhook and the injection label).
// Each must be the same in both, so that neither can be renamed alone.
func TestManifestsSpellAPINames(t *testing.T) {
	if got := Defaults().Namespace; got != names.Namespace {
		t.Errorf("Defaults().Namespace = %q, names.Namespace = %q", got, names.Namespace)
	}
	v := Defaults()
	v.Namespace = "mesh"
	b, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]*unstructured.Unstructured{}
	for _, u := range testutil.Objects(t, b) {
		objs[u.GetKind()+"/"+u.GetName()] = u
	}
	get := func(kind, name string) *unstructured.Unstructured {
		t.Helper()
		u := objs[kind+"/"+name]
		if u == nil {
			t.Fatalf("no %s %s in the manifests", kind, name)
		}
		return u
	}
	str := func(u *unstructured.Unstructured, path ...string) string {
		t.Helper()
		s, _, err := unstructured.NestedString(u.Object, path...)
		if err != nil {
			t.Fatalf("%s %s: %v: %v", u.GetKind(), u.GetName(), path, err)
		}
		return s
	}
	app := map[string]string{names.AppLabel: ""}

	if ns := get("Namespace", "mesh"); ns.GetLabels()[names.InjectLabel] != names.InjectDisabled {
		t.Errorf("Namespace labels %v, want %s=%s", ns.GetLabels(), names.InjectLabel, names.InjectDisabled)
	}

	for comp, ports := range map[string][]int64{
		names.ControlPlane: {names.ControlPlaneGRPC, names.ControlPlaneAdmin},
		names.Injector:     {names.InjectorPort},
	} {
		app[names.AppLabel] = comp
		get("ServiceAccount", comp)
		for _, kind := range []string{"ServiceAccount", "Service", "Deployment", "NetworkPolicy"} {
			if u := objs[kind+"/"+comp]; u != nil && u.GetLabels()[names.AppLabel] != comp {
				t.Errorf("%s %s: labels %v, want %s=%s", kind, comp, u.GetLabels(), names.AppLabel, comp)
			}
		}

		d := get("Deployment", comp)
		if sa := str(d, "spec", "template", "spec", "serviceAccountName"); sa != comp {
			t.Errorf("Deployment %s runs as ServiceAccount %q", comp, sa)
		}
		sel, _, _ := unstructured.NestedStringMap(d.Object, "spec", "selector", "matchLabels")
		if fmt.Sprint(sel) != fmt.Sprint(app) {
			t.Errorf("Deployment %s selects %v, want %v", comp, sel, app)
		}
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		if len(cs) != 1 {
			t.Fatalf("Deployment %s has %d containers", comp, len(cs))
		}
		c := cs[0].(map[string]any)
		var cports []int64
		ps, _, _ := unstructured.NestedSlice(c, "ports")
		for _, p := range ps {
			cports = append(cports, num(p.(map[string]any)["containerPort"]))
		}
		if !slices.Equal(cports, ports) {
			t.Errorf("Deployment %s: container ports %v, api/names %v", comp, cports, ports)
		}
		for _, probe := range []string{"readinessProbe", "livenessProbe"} {
			if p, ok, _ := unstructured.NestedFieldNoCopy(c, probe, "httpGet", "port"); ok && !slices.Contains(ports, num(p)) {
				t.Errorf("Deployment %s: %s on port %d, not one of %v", comp, probe, p, ports)
			}
		}

		s := get("Service", comp)
		sel, _, _ = unstructured.NestedStringMap(s.Object, "spec", "selector")
		if fmt.Sprint(sel) != fmt.Sprint(app) {
			t.Errorf("Service %s selects %v, want %v", comp, sel, app)
		}
		var targets []int64
		sps, _, _ := unstructured.NestedSlice(s.Object, "spec", "ports")
		for _, p := range sps {
			targets = append(targets, num(p.(map[string]any)["targetPort"]))
		}
		if !slices.Equal(targets, ports) {
			t.Errorf("Service %s: target ports %v, api/names %v", comp, targets, ports)
		}

		np := get("NetworkPolicy", comp)
		sel, _, _ = unstructured.NestedStringMap(np.Object, "spec", "podSelector", "matchLabels")
		if fmt.Sprint(sel) != fmt.Sprint(app) {
			t.Errorf("NetworkPolicy %s selects %v, want %v", comp, sel, app)
		}
		var open []int64
		ing, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
		for _, rule := range ing {
			rps, _, _ := unstructured.NestedSlice(rule.(map[string]any), "ports")
			for _, p := range rps {
				open = append(open, num(p.(map[string]any)["port"]))
			}
		}
		if !slices.Equal(open, ports) {
			t.Errorf("NetworkPolicy %s: ports %v, api/names %v", comp, open, ports)
		}
	}

	// The injector dials the control plane at the address api/names gives.
	inj := get("Deployment", names.Injector)
	cs, _, _ := unstructured.NestedSlice(inj.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	if want := "-control-plane=" + names.ControlPlaneAddr("mesh"); !slices.Contains(args, want) {
		t.Errorf("injector args %v lack %q", args, want)
	}

	// The webhook: its name, the Service it calls, and the injection label
	// it selects namespaces and pods by.
	wc := get("MutatingWebhookConfiguration", names.WebhookConfiguration)
	hooks, _, _ := unstructured.NestedSlice(wc.Object, "webhooks")
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(hooks))
	}
	h := hooks[0].(map[string]any)
	if h["name"] != names.WebhookName {
		t.Errorf("webhook %v, want %s", h["name"], names.WebhookName)
	}
	if svc, _, _ := unstructured.NestedString(h, "clientConfig", "service", "name"); svc != names.Injector {
		t.Errorf("the webhook calls Service %q, want %s", svc, names.Injector)
	}
	nsSel, _, _ := unstructured.NestedStringMap(h, "namespaceSelector", "matchLabels")
	if fmt.Sprint(nsSel) != fmt.Sprint(map[string]string{names.InjectLabel: names.InjectEnabled}) {
		t.Errorf("namespaceSelector %v, want %s=%s", nsSel, names.InjectLabel, names.InjectEnabled)
	}
	exprs, _, _ := unstructured.NestedSlice(h, "objectSelector", "matchExpressions")
	if len(exprs) != 1 || fmt.Sprint(exprs[0]) != fmt.Sprint(map[string]any{"key": names.InjectLabel, "operator": "NotIn", "values": []any{names.InjectDisabled}}) {
		t.Errorf("objectSelector %v, want %s NotIn [%s]", exprs, names.InjectLabel, names.InjectDisabled)
	}
}

// num is a port number as the YAML decoder gives it (float64 or int64);
// anything else is -1, which matches no port.
func num(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return -1
}
