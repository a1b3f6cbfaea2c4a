package weftctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/testutil"
)

var caTD = spiffeid.RequireTrustDomainFromString("cluster.local")

// writeCADir writes m's three intermediate-only files into a new directory
// (never its root key).
func writeCADir(t *testing.T, m certs.Material) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		identity.SecretKeyRoots: m.RootsPEM, identity.SecretKeyIntermediate: m.IntermediatePEM, identity.SecretKeyIntermediateKey: m.IntermediateKeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func offlineCA(t *testing.T, clk certs.Clock) (*certs.CA, certs.Material) {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: caTD, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ca.Material()
	if err != nil {
		t.Fatal(err)
	}
	return ca, m
}

// TestReadCADir: the directory's three files load as an intermediate-only
// CA; a missing file, an intermediate of another root and one of another
// trust domain are refused with the reason before anything is written.
func TestReadCADir(t *testing.T) {
	clk := testutil.FakeClock(t)
	_, m := offlineCA(t, clk)
	_, other := offlineCA(t, clk)
	m.RootKeyPEM = nil
	_, ca, err := readCADir(writeCADir(t, m), caTD, clk.Now())
	if err != nil || !ca.IntermediateOnly() {
		t.Fatalf("readCADir: %v", err)
	}
	missing := writeCADir(t, m)
	_ = os.Remove(filepath.Join(missing, identity.SecretKeyIntermediateKey))
	foreign := m
	foreign.IntermediatePEM, foreign.IntermediateKeyPEM = other.IntermediatePEM, other.IntermediateKeyPEM
	for name, tc := range map[string]struct {
		dir  string
		td   spiffeid.TrustDomain
		want string
	}{
		"missing key":                  {missing, caTD, "intermediate-key.pem: no such file"},
		"intermediate of another root": {writeCADir(t, foreign), caTD, "is not signed by any of the 1 roots in roots.pem"},
		"another trust domain":         {writeCADir(t, m), spiffeid.RequireTrustDomainFromString("other.example"), "want spiffe://other.example"},
	} {
		if _, _, err := readCADir(tc.dir, tc.td, clk.Now()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

// TestInstallCA: on a fresh cluster the Secret is created without a root
// key (and the namespace with it); the same material again changes
// nothing; a renewed intermediate under the same root replaces it (and
// drops a root key weft had made); an intermediate under a root the
// cluster's current intermediate does not chain to is refused and the
// Secret is left as it was.
func TestInstallCA(t *testing.T) {
	ctx := context.Background()
	clk := testutil.FakeClock(t)
	offline, m := offlineCA(t, clk)
	m.RootKeyPEM = nil
	kube := fake.NewClientset()
	load := func(m certs.Material) *certs.CA {
		t.Helper()
		ca, err := certs.LoadCA(certs.CAConfig{TrustDomain: caTD, Clock: clk}, m)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	secret := func() *corev1.Secret {
		t.Helper()
		s, err := kube.CoreV1().Secrets("weft-system").Get(ctx, identity.CASecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	changed, err := installCA(ctx, kube, "weft-system", identity.CASecretName, m, load(m), false)
	if err != nil || changed {
		t.Fatalf("first install: changed %v, %v", changed, err)
	}
	if _, err := kube.CoreV1().Namespaces().Get(ctx, "weft-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	s := secret()
	if _, ok := s.Data[identity.SecretKeyRootKey]; ok || !bytes.Equal(s.Data[identity.SecretKeyIntermediate], m.IntermediatePEM) {
		t.Fatalf("secret keys %v", keys(s.Data))
	}
	if changed, err := installCA(ctx, kube, "weft-system", identity.CASecretName, m, load(m), false); err != nil || changed {
		t.Fatalf("same material again: changed %v, %v", changed, err)
	}

	// A weft-made CA (root key in the Secret) moves offline: same root,
	// new intermediate signed where the root key now lives.
	s.Data[identity.SecretKeyRootKey] = []byte("the root key weft made")
	if _, err := kube.CoreV1().Secrets("weft-system").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Hour)
	if err := offline.RenewIntermediate(); err != nil {
		t.Fatal(err)
	}
	renewed, err := offline.Material()
	if err != nil {
		t.Fatal(err)
	}
	renewed.RootKeyPEM = nil
	if changed, err := installCA(ctx, kube, "weft-system", identity.CASecretName, renewed, load(renewed), false); err != nil || !changed {
		t.Fatalf("renewed intermediate: changed %v, %v", changed, err)
	}
	s = secret()
	if _, ok := s.Data[identity.SecretKeyRootKey]; ok || !bytes.Equal(s.Data[identity.SecretKeyIntermediate], renewed.IntermediatePEM) {
		t.Fatalf("after renewal: keys %v, intermediate renewed %v", keys(s.Data), bytes.Equal(s.Data[identity.SecretKeyIntermediate], renewed.IntermediatePEM))
	}

	// Another root: refused, nothing written.
	_, foreign := offlineCA(t, clk)
	foreign.RootKeyPEM = nil
	_, err = installCA(ctx, kube, "weft-system", identity.CASecretName, foreign, load(foreign), false)
	if !errors.Is(err, errCAConflict) || !strings.Contains(err.Error(), "chains to a root that roots.pem does not hold") {
		t.Fatalf("another root: %v", err)
	}
	if !bytes.Equal(secret().Data[identity.SecretKeyIntermediate], renewed.IntermediatePEM) {
		t.Fatal("a refused install changed the Secret")
	}
	// ...unless the new roots.pem still holds the current root beside it.
	both := foreign
	both.RootsPEM = append(bytes.Clone(foreign.RootsPEM), renewed.RootsPEM...)
	if changed, err := installCA(ctx, kube, "weft-system", identity.CASecretName, both, load(both), false); err != nil || !changed {
		t.Fatalf("new root beside the current one: changed %v, %v", changed, err)
	}
}

// TestRestartForCA: the control plane's pod template gets the new
// intermediate's fingerprint, so the Deployment rolls.
func TestRestartForCA(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "weft-controlplane", Namespace: "weft-system"}})
	ca, _ := offlineCA(t, testutil.FakeClock(t))
	if err := restartForCA(ctx, kube, "weft-system", "weft-controlplane", ca); err != nil {
		t.Fatal(err)
	}
	d, err := kube.AppsV1().Deployments("weft-system").Get(ctx, "weft-controlplane", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fp := certs.Fingerprint(ca.Intermediate())
	if got, want := d.Spec.Template.Annotations[caRestartAnnotation], fmt.Sprintf("%x", fp[:8]); got != want {
		t.Fatalf("template annotation %q = %q, want %s", caRestartAnnotation, got, want)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
