package registry

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// Pod answers from the informer: nothing before the registry has synced,
// then the pods as the API server has them, a change seen once watched.
func TestPodFromTheInformer(t *testing.T) {
	web := pod("demo", "web-1", "web", "198.18.0.10", true, nil)
	idle, err := New(Config{Client: kubefake.NewClientset(web), Weft: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := idle.Pod("demo", "web-1"); ok {
		t.Fatal("a registry that has not synced answers")
	}
	f := start(t, Config{}, web)
	p, ok := f.reg.Pod("demo", "web-1")
	if !ok || p.Spec.ServiceAccountName != "web" {
		t.Fatalf("Pod(demo, web-1) = %v, %v", p, ok)
	}
	if _, ok := f.reg.Pod("demo", "web-2"); ok {
		t.Fatal("a pod the API server does not have")
	}
	if _, ok := f.reg.Pod("other", "web-1"); ok {
		t.Fatal("a pod of another namespace")
	}
	gone := p.DeepCopy()
	gone.DeletionTimestamp = &metav1.Time{Time: p.CreationTimestamp.Time}
	if _, err := f.kube.CoreV1().Pods("demo").Update(context.Background(), gone, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.eventually("the pod seen terminating", func() bool {
		p, ok := f.reg.Pod("demo", "web-1")
		return ok && p.DeletionTimestamp != nil
	})
}
