package identity

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/certs"
)

func TestLoadOrCreateConcurrentStartsAgreeOnOneCA(t *testing.T) {
	api := fake.NewClientset()
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	const replicas = 8
	bundles := make([][]byte, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			ca, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
			if err != nil {
				t.Error(err)
				return
			}
			bundles[i] = ca.BundlePEM()
		})
	}
	close(start)
	wg.Wait()
	for i := 1; i < replicas; i++ {
		if !bytes.Equal(bundles[0], bundles[i]) {
			t.Fatalf("replica %d has a different root than replica 0", i)
		}
	}
	list, err := api.CoreV1().Secrets("weft-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d secrets, want 1", len(list.Items))
	}
}

func TestLoadOrCreateReusesTheCAAcrossRestarts(t *testing.T) {
	api := fake.NewClientset()
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	first, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	second, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.BundlePEM(), second.BundlePEM()) || !bytes.Equal(first.Intermediate().Raw, second.Intermediate().Raw) {
		t.Fatal("restart produced a different CA")
	}
}

func TestLoadOrCreateRefusesACorruptSecret(t *testing.T) {
	api := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-ca"},
		Data:       map[string][]byte{SecretKeyRoots: []byte("garbage")},
	})
	store := CAStore{Client: api, Namespace: "weft-system", Name: "weft-ca"}
	_, err := store.LoadOrCreate(context.Background(), certs.CAConfig{TrustDomain: td})
	if err == nil || !strings.HasPrefix(err.Error(), "identity: CA secret weft-system/weft-ca: certs: ") {
		t.Fatalf("err = %v, want a CA secret error", err)
	}
	// The corrupt Secret is left for the operator to inspect, not replaced.
	sec, _ := api.CoreV1().Secrets("weft-system").Get(context.Background(), "weft-ca", metav1.GetOptions{})
	if string(sec.Data[SecretKeyRoots]) != "garbage" {
		t.Fatal("corrupt secret was overwritten")
	}
}
