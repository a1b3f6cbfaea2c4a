package injector

import (
	"context"
	"log/slog"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testutil"
)

// TestWatchMeshFollowsTheMeshConfig: the injector admits pods by the
// MeshConfig named default as the API server has it — the defaults while
// there is none, its settings once it exists, the new ones when it
// changes, the defaults again when it is deleted — and a MeshConfig of
// another name is not the mesh's.
func TestWatchMeshFollowsTheMeshConfig(t *testing.T) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{v1alpha1.MeshConfigResource: "MeshConfigList"})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mesh, err := watchMesh(ctx, dyn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := mesh(); got != (MeshSettings{}) {
		t.Fatalf("no MeshConfig: %+v, want the defaults", got)
	}
	meshConfig := func(name, mode, handshake string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "weft.dev/v1alpha1", "kind": "MeshConfig",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"outboundTrafficPolicy": map[string]any{"mode": mode},
				"captureBypass":         "Refuse",
				"proxyTimeouts":         map[string]any{"handshake": handshake, "idle": "30m", "write": "1m"},
			},
		}}
	}
	res := dyn.Resource(v1alpha1.MeshConfigResource)
	if _, err := res.Create(ctx, meshConfig("other", "ALLOW_ANY", "9s"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Create(ctx, meshConfig(v1alpha1.DefaultMeshConfigName, "REGISTRY_ONLY", "3s"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := MeshSettings{Outbound: "REGISTRY_ONLY", CaptureBypass: "Refuse", HandshakeTimeout: "3s", IdleTimeout: "30m", WriteTimeout: "1m"}
	testutil.Eventually(t, "the MeshConfig's settings", func() bool { return mesh() == want })
	if _, err := res.Update(ctx, meshConfig(v1alpha1.DefaultMeshConfigName, "ALLOW_ANY", "7s"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want.Outbound, want.HandshakeTimeout = "ALLOW_ANY", "7s"
	testutil.Eventually(t, "the updated settings", func() bool { return mesh() == want })
	if err := res.Delete(ctx, v1alpha1.DefaultMeshConfigName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the defaults once it is deleted", func() bool { return mesh() == (MeshSettings{}) })
}
