package v1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedFilesFresh regenerates deepcopy, the CRDs and deploy's
// 05-crds.yaml into a temp dir and fails if the committed ones differ: run
// api/v1alpha1/generate.sh after editing a type. It builds controller-gen
// (from the module cache or the Go module proxy), so -short skips it.
func TestGeneratedFilesFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping controller-gen")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	tmp := t.TempDir()
	cmd := exec.Command("bash", "generate.sh", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, out)
	}
	files := map[string]string{
		"zz_generated.deepcopy.go": "zz_generated.deepcopy.go",
		"05-crds.yaml":             "../../deploy/05-crds.yaml",
	}
	crds, err := filepath.Glob(filepath.Join(tmp, "crds", "*.yaml"))
	if err != nil || len(crds) != 4 {
		t.Fatalf("generated CRDs: %v %v, want 4", crds, err)
	}
	for _, f := range crds {
		files[filepath.Join("crds", filepath.Base(f))] = filepath.Join("crds", filepath.Base(f))
	}
	committed, _ := filepath.Glob(filepath.Join("crds", "*.yaml"))
	if len(committed) != len(crds) {
		t.Errorf("crds/ holds %d files, generate.sh makes %d: run api/v1alpha1/generate.sh", len(committed), len(crds))
	}
	for gen, have := range files {
		want, err := os.ReadFile(filepath.Join(tmp, gen))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(have)
		if err != nil {
			t.Errorf("%s: %v (run api/v1alpha1/generate.sh)", have, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run api/v1alpha1/generate.sh", have)
		}
	}
}
