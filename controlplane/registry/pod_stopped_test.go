package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/internal/testutil"
)

// Once Run has returned, its informers no longer watch: what they hold is
// the cluster as it was, however long ago. Pod must then answer nothing,
// so that identity.TokenReviewer asks the API server (a pod deleted since
// would otherwise pass its check from the frozen cache for ever).
func TestPodNotFromAStoppedInformer(t *testing.T) {
	web := pod("demo", "web-1", "web", "198.18.0.10", true, nil)
	kube := kubefake.NewClientset(web)
	reg, err := New(Config{Client: kube, Weft: testutil.FakeWeft()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	select {
	case <-reg.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("registry not ready after 10s")
	}
	if _, ok := reg.Pod("demo", "web-1"); !ok {
		t.Fatal("a running registry does not know web-1")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := kube.CoreV1().Pods("demo").Delete(context.Background(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, ok := reg.Pod("demo", "web-1"); ok {
		t.Fatalf("a stopped registry answers Pod(demo, web-1) = %s (UID %s), deleted from the API server since", p.Name, p.UID)
	}
}

// The checks identity.TokenReviewer makes on the pod Pod returns read its
// UID, DeletionTimestamp and spec.serviceAccountName: the informer's
// transform must take nothing from a pod but its managed fields.
func TestStripManagedFieldsKeepsTheRest(t *testing.T) {
	p := pod("demo", "web-1", "", "198.18.0.10", true, map[string]string{"app": "web"})
	now := metav1.Now()
	p.DeletionTimestamp = &now
	p.Finalizers = []string{"example.com/hold"}
	p.Spec.DeprecatedServiceAccount = "web"
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	want := p.DeepCopy()
	want.ManagedFields = nil
	got, err := stripManagedFields(p)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Fatalf("stripManagedFields changed more than managedFields:\n got %+v\nwant %+v", got, want)
	}
}
