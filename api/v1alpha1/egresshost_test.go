package v1alpha1

import (
	"os"
	"strings"
	"testing"
)

// TestEgressHostPatternIsTheSchemas holds EgressHostPattern to the marker
// controller-gen turns into the CRD's pattern.
func TestEgressHostPatternIsTheSchemas(t *testing.T) {
	src, err := os.ReadFile("egresspolicy_types.go")
	if err != nil {
		t.Fatal(err)
	}
	if marker := "// +kubebuilder:validation:items:Pattern=`" + EgressHostPattern + "`"; !strings.Contains(string(src), marker) {
		t.Fatalf("egresspolicy_types.go has no marker %s", marker)
	}
	for h, want := range map[string]bool{"api.example.com": true, "*.example.com": true, "Example.com": false, "a..b": false,
		"*": false, strings.Repeat("a.", 126) + "a": true, strings.Repeat("a.", 126) + "ab": false} {
		if got := ValidEgressHost(h); got != want {
			t.Errorf("ValidEgressHost(%q) = %v, want %v", h, got, want)
		}
	}
}
