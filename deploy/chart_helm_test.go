//go:build helm

package deploy

// The chart against weftctl install with the real helm binary (built from
// test/cluster/helm by `test/cluster/build.sh helm`): `make chart-test`.
// WEFT_HELM names another helm binary.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/manifests"
)

func helmBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WEFT_HELM")
	if p == "" {
		p = "../_output/bin/helm"
	}
	p, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no helm binary (%v): run test/cluster/build.sh helm, or set WEFT_HELM", err)
	}
	return p
}

// helm runs helm with a private home (no repositories, no cache of the
// machine's helm) and returns its standard output.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
		"HELM_DATA_HOME="+home+"/data", "KUBECONFIG="+home+"/no-kubeconfig")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), nil
}

// setArgs turns chart values into helm flags: strings with --set-string
// (a tag like 1.0 stays a string), the rest with --set.
func setArgs(set map[string]any) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		if s, ok := set[k].(string); ok {
			args = append(args, "--set-string", k+"="+s)
		} else {
			args = append(args, "--set", fmt.Sprintf("%s=%v", k, set[k]))
		}
	}
	return args
}

// objectsByKey decodes a manifest stream as weftctl does and keys each
// object by apiVersion, kind, namespace and name; a key twice fails.
func objectsByKey(t *testing.T, what string, b []byte) map[string]map[string]any {
	t.Helper()
	objs, err := manifests.Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	out := map[string]map[string]any{}
	for _, u := range objs {
		k := u.GetAPIVersion() + " " + u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
		if _, dup := out[k]; dup {
			t.Fatalf("%s renders %s twice", what, k)
		}
		out[k] = u.Object
	}
	return out
}

// TestHelmTemplateRendersLikeInstall: `helm template` of charts/weft and
// deploy.Render (what weftctl install applies) give the same objects, field
// for field, for the defaults, each value changed alone and all together.
// Nothing is ignored: the chart adds no labels or annotations of its own
// (Helm's ownership annotations are added by helm install on the server,
// never rendered). Helm orders objects by kind, so order is not compared.
func TestHelmTemplateRendersLikeInstall(t *testing.T) {
	for _, vs := range valueSets(t) {
		t.Run(vs.name, func(t *testing.T) {
			args := append([]string{"template", "weft", chartDir, "--include-crds", "--namespace", "default"}, setArgs(vs.set)...)
			got, err := helm(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Render(vs.values)
			if err != nil {
				t.Fatal(err)
			}
			g, w := objectsByKey(t, "helm template", got), objectsByKey(t, "deploy.Render", want)
			for k, wo := range w {
				gobj, ok := g[k]
				if !ok {
					t.Errorf("helm template lacks %s", k)
					continue
				}
				if !reflect.DeepEqual(gobj, wo) {
					gy, _ := yaml.Marshal(gobj)
					wy, _ := yaml.Marshal(wo)
					t.Errorf("%s differs:\nhelm template:\n%s\nweftctl install:\n%s", k, gy, wy)
				}
			}
			for k := range g {
				if _, ok := w[k]; !ok {
					t.Errorf("helm template renders %s, weftctl install does not", k)
				}
			}
			if len(w) < 20 {
				t.Errorf("only %d objects rendered", len(w))
			}
		})
	}
}

// TestHelmRefusesWhatInstallRefuses: values.schema.json turns away every
// value weftctl install refuses, and a misspelt value, before anything
// is rendered.
func TestHelmRefusesWhatInstallRefuses(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]any
		mut  func(*Values)
		want string // in helm's error
	}{
		{map[string]any{"trustDomain": "Bad Domain"}, func(v *Values) { v.TrustDomain = "Bad Domain" }, "trustDomain"},
		{map[string]any{"tag": "a b"}, func(v *Values) { v.Tag = "a b" }, "tag"},
		{map[string]any{"replicas": 0}, func(v *Values) { v.Replicas = 0 }, "replicas"},
		{map[string]any{"injectorReplicas": 0}, func(v *Values) { v.InjectorReplica = 0 }, "injectorReplicas"},
		{map[string]any{"pullPolicy": "Sometimes"}, func(v *Values) { v.PullPolicy = "Sometimes" }, "pullPolicy"},
		{map[string]any{"auditPvc": "Bad_Name"}, func(v *Values) { v.AuditPVC = "Bad_Name" }, "auditPvc"},
		{map[string]any{"auditPvc": "audit", "replicas": 2}, func(v *Values) { v.AuditPVC, v.Replicas = "audit", 2 }, "replicas"},
		{map[string]any{"replica": 2}, nil, "replica"},
	} {
		if tc.mut != nil {
			v := Defaults()
			tc.mut(&v)
			if _, err := Render(v); err == nil {
				t.Errorf("%v: deploy.Render accepts it", tc.set)
			}
		}
		args := append([]string{"template", "weft", chartDir, "--namespace", "default"}, setArgs(tc.set)...)
		_, err := helm(t, args...)
		if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: helm template: err = %v, want a schema error naming %s", tc.set, err, tc.want)
		}
	}
}

// TestHelmLint: helm's own checks of the chart, strict.
func TestHelmLint(t *testing.T) {
	out, err := helm(t, "lint", "--strict", chartDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
