package envoy_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates every .pb.go of the repository
// (hack/genproto.sh) into a temporary directory and compares.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc is not on PATH (apt-get install protobuf-compiler libprotobuf-dev): cannot check that the generated code matches the .proto files")
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	// The generated files name the protoc that made them; another version
	// would differ in that line, if in nothing else.
	header, err := os.ReadFile(filepath.Join(root, "sidecar/internal/envoy/config/core/v3/base.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^// \tprotoc +v(\S+)$`).FindSubmatch(header)
	if m == nil {
		t.Fatal("base.pb.go does not name the protoc version it was generated with")
	}
	out, err := exec.Command("protoc", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if have := strings.TrimPrefix(strings.TrimSpace(string(out)), "libprotoc "); have != string(m[1]) {
		t.Skipf("protoc is %s, the generated code was made with %s: cannot compare", have, m[1])
	}

	tmp := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "hack/genproto.sh"), tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/genproto.sh: %v\n%s", err, out)
	}
	fresh := generated(t, tmp)
	for _, dir := range []string{"api", "sidecar/internal/envoy"} {
		for _, rel := range generated(t, filepath.Join(root, dir)) {
			if _, err := os.Stat(filepath.Join(tmp, dir, rel)); err != nil {
				t.Errorf("%s/%s: no .proto generates it any more; run hack/genproto.sh", dir, rel)
			}
		}
	}
	for _, rel := range fresh {
		want, _ := os.ReadFile(filepath.Join(tmp, rel))
		have, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil || !bytes.Equal(have, want) {
			t.Errorf("%s is not what hack/genproto.sh generates from the .proto files; run it", rel)
		}
	}
	if len(fresh) == 0 {
		t.Fatal("hack/genproto.sh generated nothing")
	}
}

// generated lists the .pb.go files under dir, relative to it.
func generated(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".pb.go") {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
