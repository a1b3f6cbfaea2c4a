package adminauth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weftmesh/weft/internal/testutil"
)

func TestClientCAsFollowTheAPIServersConfigMap(t *testing.T) {
	clk := testutil.FakeClock(t)
	ca, _ := testutil.ClientCA(t, clk.Now())
	kube := testutil.FakeKube(nil)
	c := &ClientCAs{Client: kube}
	ctx := context.Background()
	if err := c.Load(ctx); err != nil || c.Pool() != nil {
		t.Fatalf("without the ConfigMap: pool %v, err %v; want nil, nil", c.Pool(), err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ClientCANamespace, Name: ClientCAConfigMap},
		Data: map[string]string{ClientCAKey: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))}}
	if _, err := kube.CoreV1().ConfigMaps(ClientCANamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(ctx); err != nil || c.Pool() == nil {
		t.Fatalf("with the ConfigMap: pool %v, err %v", c.Pool(), err)
	}
	if _, err := ca.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: clk.Now()}); err != nil {
		t.Fatalf("the loaded pool does not hold the API server's client CA: %v", err)
	}
	cm.Data[ClientCAKey] = "not a certificate"
	if _, err := kube.CoreV1().ConfigMaps(ClientCANamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(ctx); err != nil || c.Pool() != nil {
		t.Fatalf("with garbage: pool %v, err %v; want no pool (tokens only)", c.Pool(), err)
	}
}

// TestClientCAsRetrySoonAfterAFailedRead: a control plane that could not
// read the client CA (its RoleBinding not there yet) tries again within
// seconds, not at the next minute.
func TestClientCAsRetrySoonAfterAFailedRead(t *testing.T) {
	clk := testutil.FakeClock(t)
	ca, _ := testutil.ClientCA(t, clk.Now())
	kube := testutil.FakeKube(nil)
	var refuse atomic.Bool
	refuse.Store(true)
	kube.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, ClientCAConfigMap, nil)
		}
		return false, nil, nil
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ClientCANamespace, Name: ClientCAConfigMap},
		Data: map[string]string{ClientCAKey: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))}}
	if _, err := kube.CoreV1().ConfigMaps(ClientCANamespace).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &ClientCAs{Client: kube, Clock: clk}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	if err := c.Load(ctx); err == nil {
		t.Fatal("Load succeeded while forbidden")
	}
	refuse.Store(false)
	go func() { defer close(done); c.Run(ctx, true) }()
	testutil.Eventually(t, "Run's retry timer", clk.HasWaiters)
	clk.Step(6 * time.Second) // once: the minute's reload is far off
	testutil.Eventually(t, "a client CA 6s (fake) after a failed read", func() bool { return c.Pool() != nil })
}
