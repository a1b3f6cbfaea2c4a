package weftctl

import (
	"bytes"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testutil/golden"
)

func run(args ...string) (string, error) {
	var out bytes.Buffer
	root := NewRoot(&out, &out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestInstallRender(t *testing.T) {
	out, err := run("install", "--render", "--tag", "v0.1.0", "--trust-domain", "prod.example")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/install-render.golden.yaml", out)
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
