package weftctl

import (
	"os"
	"path/filepath"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/v1alpha1"
)

// TestExamplesDecodeStrictly: every weft object (and NetworkPolicy) in examples/ decodes into
// its API type without unknown fields, so a misspelt field fails here and
// not silently in a user's cluster.
func TestExamplesDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("../examples/*/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	seen := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifests(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range objs {
			var into any
			switch o.GetKind() {
			case "AuthorizationPolicy":
				into = &v1alpha1.AuthorizationPolicy{}
			case "EgressPolicy":
				into = &v1alpha1.EgressPolicy{}
			case "MTLSPolicy":
				into = &v1alpha1.MTLSPolicy{}
			case "NetworkPolicy":
				into = &networkingv1.NetworkPolicy{}
			default:
				continue
			}
			seen[o.GetKind()]++
			raw, _ := yaml.Marshal(o.Object)
			if err := yaml.UnmarshalStrict(raw, into); err != nil {
				t.Errorf("%s: %s %s: %v", f, o.GetKind(), o.GetName(), err)
			}
		}
	}
	if seen["AuthorizationPolicy"] == 0 || seen["EgressPolicy"] == 0 || seen["NetworkPolicy"] == 0 {
		t.Errorf("examples hold %v, want an AuthorizationPolicy, an EgressPolicy and a NetworkPolicy", seen)
	}
}
