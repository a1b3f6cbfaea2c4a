package adminauth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testutil"
)

func TestClientCAsFollowTheAPIServersConfigMap(t *testing.T) {
	clk := testutil.FakeClock(t)
	ca, _ := newCA(t, clk.Now())
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
