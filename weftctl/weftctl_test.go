package weftctl

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func run(args ...string) (string, error) {
	var out bytes.Buffer
	root := NewRoot(&out, &out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./weftctl -update)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s (go test ./weftctl -update rewrites it):\n%s", path, got)
	}
}

func TestInstallRender(t *testing.T) {
	out, err := run("install", "--render", "--tag", "v0.1.0", "--trust-domain", "prod.example")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "install-render.golden.yaml", out)
}

func TestInstallRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--render", "--trust-domain", "Not Valid"}, `deploy: trust domain "Not Valid"`},
		{[]string{"install", "--render", "--replicas", "0"}, "deploy: replicas must be at least 1"},
		{[]string{"install", "--dry-run", "client", "--kubeconfig", "/nonexistent"}, `weftctl install: --dry-run="client"`},
		{[]string{"install", "extra-arg"}, `unknown command "extra-arg"`},
	} {
		_, err := run(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestDecodeManifestsRefusesGarbage(t *testing.T) {
	_, err := decodeManifests([]byte("kind: [unclosed"))
	if err == nil || !strings.HasPrefix(err.Error(), "weftctl: manifests: ") {
		t.Fatalf("err = %v", err)
	}
}
