//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
)

// TestIntermediateOnlyCA: the CA's root key leaves the cluster. As an
// operator moving a weft-made root offline would, the test takes the root
// key out of weft-ca, signs a new intermediate under the same root outside
// the cluster, and runs `weftctl install --ca-dir` with roots.pem,
// intermediate.pem and intermediate-key.pem. Then the Secret holds no root
// key, every control plane replica restarted and reports intermediate-only
// with the new intermediate, `weftctl check` says so, and a newly meshed
// pod's SVID chains to the new intermediate and its mTLS traffic works. A
// CA of another root is refused and changes nothing. The original CA is
// restored at the end.
func TestIntermediateOnlyCA(t *testing.T) {
	ctx := context.Background()
	secrets := kube.CoreV1().Secrets(weftNS)
	orig, err := secrets.Get(ctx, identity.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restart := func(why string) {
		t.Helper()
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"weft.dev/ca-intermediate":%q}}}}}`, why)
		if _, err := kube.AppsV1().Deployments(weftNS).Patch(ctx, "weft-controlplane", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Put the weft-made CA back (root key included) and restart the
		// control plane on it: later tests see the CA the suite installed.
		cur, err := secrets.Get(ctx, identity.CASecretName, metav1.GetOptions{})
		if err != nil {
			t.Errorf("restore the CA: %v", err)
			return
		}
		cur.Data = orig.Data
		if _, err := secrets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Errorf("restore the CA: %v", err)
			return
		}
		restart("restored-" + randomHex(t))
		if out, err := weftctlRun("install", "--tag", tag, "--pull-policy", "Never", "--timeout", "3m", "--replicas", "2"); err != nil {
			t.Errorf("waiting for the control plane on the restored CA: %v\n%s", err, out)
		}
	})

	// Outside the cluster, where the root key now lives: a new
	// intermediate under the same root.
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	full := certs.Material{
		RootsPEM: orig.Data[identity.SecretKeyRoots], RootKeyPEM: orig.Data[identity.SecretKeyRootKey],
		IntermediatePEM: orig.Data[identity.SecretKeyIntermediate], IntermediateKeyPEM: orig.Data[identity.SecretKeyIntermediateKey],
	}
	offline, err := certs.LoadCA(certs.CAConfig{TrustDomain: td}, full)
	if err != nil {
		t.Fatal(err)
	}
	if err := offline.RenewIntermediate(); err != nil {
		t.Fatal(err)
	}
	m, err := offline.Material()
	if err != nil {
		t.Fatal(err)
	}
	fp := certs.Fingerprint(offline.Intermediate())
	newInter := fmt.Sprintf("%x", fp)
	writeDir := func(m certs.Material) string {
		dir := t.TempDir()
		for name, b := range map[string][]byte{identity.SecretKeyRoots: m.RootsPEM, identity.SecretKeyIntermediate: m.IntermediatePEM, identity.SecretKeyIntermediateKey: m.IntermediateKeyPEM} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// The root key sits beside the files, as it might on an operator's
	// disk: install reads only the three it needs.
	dir := writeDir(m)
	if err := os.WriteFile(filepath.Join(dir, identity.SecretKeyRootKey), m.RootKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	// A CA under another root is refused before anything changes.
	other, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	om, err := other.Material()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := weftctlRun("install", "--tag", tag, "--pull-policy", "Never", "--timeout", "3m", "--replicas", "2", "--ca-dir", writeDir(om)); err == nil ||
		!strings.Contains(err.Error(), "chains to a root that roots.pem does not hold") {
		t.Fatalf("install --ca-dir with another root: %v\n%s", err, out)
	}
	if cur, err := secrets.Get(ctx, identity.CASecretName, metav1.GetOptions{}); err != nil || string(cur.Data[identity.SecretKeyIntermediate]) != string(orig.Data[identity.SecretKeyIntermediate]) {
		t.Fatalf("a refused install changed the CA Secret (%v)", err)
	}

	out, err := weftctlRun("install", "--tag", tag, "--pull-policy", "Never", "--timeout", "3m", "--replicas", "2", "--ca-dir", dir)
	if err != nil {
		t.Fatalf("weftctl install --ca-dir: %v\n%s", err, out)
	}
	t.Logf("weftctl install --ca-dir:\n%s", out)
	cur, err := secrets.Get(ctx, identity.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cur.Data[identity.SecretKeyRootKey]; ok {
		t.Fatal("the CA Secret still holds root-key.pem")
	}
	waitFor(t, 2*time.Minute, "every control plane replica on the new intermediate, intermediate-only", func(context.Context) (bool, error) {
		sts := controlPlaneStatuses(t)
		if len(sts) != 2 {
			return false, nil
		}
		for _, st := range sts {
			if !st.IntermediateOnly || st.Intermediate.Fingerprint != newInter {
				return false, nil
			}
		}
		return true, nil
	})
	check, _ := weftctlRun("check")
	if !strings.Contains(check, "intermediate-only: root key outside the cluster") {
		t.Fatalf("weftctl check does not say the CA is intermediate-only:\n%s", check)
	}

	// A pod meshed now: its SVID chains to the new intermediate, and mTLS
	// between two such pods works.
	const ns = "e2e-intermediate-only"
	meshNamespace(t, ns)
	serverService(t, ns)
	server := deployTestapp(t, ns, "server", "serve", "-addr", ":8080")
	client := deployTestapp(t, ns, "client", "svid")
	requireSynced(t, client.Name+"."+ns)
	waitFor(t, time.Minute, "the client's SVID from the new intermediate", func(context.Context) (bool, error) {
		return strings.Contains(logs(t, ns, client.Name, "app"), " intermediate "+newInter), nil
	})
	waitFor(t, time.Minute, "the client's request through the mesh", func(context.Context) (bool, error) {
		out, err := kubectlExec(t, ns, client.Name, "app", "/usr/local/bin/testapp", "get", "http://server."+ns+".svc.cluster.local/")
		return err == nil && strings.Contains(out, "hello from "+server.Name), nil
	})
}
