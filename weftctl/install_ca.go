package weftctl

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
)

// Files of an intermediate-only CA directory (install --ca-dir). A
// root-key.pem beside them is never read: the point of the mode is that
// the cluster never holds the root key.
var caDirFiles = []string{identity.SecretKeyRoots, identity.SecretKeyIntermediate, identity.SecretKeyIntermediateKey}

// caRestartAnnotation on the control plane's pod template names the
// intermediate it signs with; a new intermediate changes it, so the
// Deployment rolls and every replica loads the new one.
const caRestartAnnotation = "weft.dev/ca-intermediate"

// readCADir reads and checks an intermediate-only CA: roots.pem (the
// bundle workloads trust), intermediate.pem and intermediate-key.pem (an
// intermediate signed by one of those roots, for trust domain td). It
// refuses what the control plane would refuse at start, with the reason.
func readCADir(dir string, td spiffeid.TrustDomain, now time.Time) (certs.Material, *certs.CA, error) {
	files := map[string][]byte{}
	for _, name := range caDirFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return certs.Material{}, nil, fmt.Errorf("weftctl install --ca-dir: %w (the directory holds %v; never root-key.pem)", err, caDirFiles)
		}
		files[name] = b
	}
	m := certs.Material{
		RootsPEM:           files[identity.SecretKeyRoots],
		IntermediatePEM:    files[identity.SecretKeyIntermediate],
		IntermediateKeyPEM: files[identity.SecretKeyIntermediateKey],
	}
	ca, err := certs.LoadCA(certs.CAConfig{TrustDomain: td, Clock: fixedClock(now)}, m)
	if err != nil {
		return certs.Material{}, nil, fmt.Errorf("weftctl install --ca-dir %s: %w", dir, err)
	}
	return m, ca, nil
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// errCAConflict: the cluster's CA cannot be replaced by the one given.
var errCAConflict = errors.New("the cluster's CA cannot be replaced by this one")

// installCA writes an intermediate-only CA into the Secret the control
// plane loads (weft-ca), before the control plane starts, so the cluster
// never makes its own root. It creates the namespace if needed. On an
// existing Secret it takes the new material only if the new roots still
// hold the root the current intermediate chains to (the intermediate is
// renewed, or the root key leaves the cluster): SVIDs already issued keep
// verifying. Replacing the trust root itself is refused (uninstall first).
// It returns whether an existing Secret changed.
func installCA(ctx context.Context, kube kubernetes.Interface, ns, name string, m certs.Material, ca *certs.CA, dry bool) (changed bool, err error) {
	var opts metav1.CreateOptions
	var uopts metav1.UpdateOptions
	if dry {
		opts.DryRun, uopts.DryRun = []string{metav1.DryRunAll}, []string{metav1.DryRunAll}
	}
	_, err = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, opts)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("weftctl install --ca-dir: namespace %s: %w", ns, err)
	}
	data := map[string][]byte{
		identity.SecretKeyRoots:           m.RootsPEM,
		identity.SecretKeyIntermediate:    m.IntermediatePEM,
		identity.SecretKeyIntermediateKey: m.IntermediateKeyPEM,
	}
	secrets := kube.CoreV1().Secrets(ns)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/part-of": "weft"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}, opts)
		if err != nil {
			return false, fmt.Errorf("weftctl install --ca-dir: create secret %s/%s: %w", ns, name, err)
		}
		return false, nil
	case err != nil:
		return false, fmt.Errorf("weftctl install --ca-dir: get secret %s/%s: %w", ns, name, err)
	}
	same := len(cur.Data) == len(data)
	for k, v := range data {
		same = same && bytes.Equal(cur.Data[k], v)
	}
	if same {
		return false, nil
	}
	// The root the cluster's current intermediate chains to must stay
	// trusted, or every SVID issued so far stops verifying at once.
	var curInter *x509.Certificate
	if block, _ := pem.Decode(cur.Data[identity.SecretKeyIntermediate]); block != nil {
		curInter, err = x509.ParseCertificate(block.Bytes)
	}
	if curInter == nil {
		return false, fmt.Errorf("weftctl install --ca-dir: secret %s/%s holds no readable intermediate (%v): %w; uninstall weft first", ns, name, err, errCAConflict)
	}
	kept := false
	for _, r := range ca.Roots() {
		kept = kept || curInter.CheckSignatureFrom(r) == nil
	}
	if !kept {
		return false, fmt.Errorf("weftctl install --ca-dir: the intermediate in %s/%s (%q) chains to a root that %s does not hold: "+
			"installing it would change every workload's trust root at once: %w; to move to a new root, add it to roots.pem beside the current one, or uninstall weft first",
			ns, name, curInter.Subject, identity.SecretKeyRoots, errCAConflict)
	}
	next := cur.DeepCopy()
	next.Data = data // drops root-key.pem: from now on the cluster holds no root key
	if _, err := secrets.Update(ctx, next, uopts); err != nil {
		return false, fmt.Errorf("weftctl install --ca-dir: update secret %s/%s: %w", ns, name, err)
	}
	return true, nil
}

// restartForCA rolls the control plane's Deployment so that every replica
// loads the CA now in its Secret (the control plane reads it at start).
func restartForCA(ctx context.Context, kube kubernetes.Interface, ns, deployment string, ca *certs.CA) error {
	fp := certs.Fingerprint(ca.Intermediate())
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:"%x"}}}}}`, caRestartAnnotation, fp[:8])
	_, err := kube.AppsV1().Deployments(ns).Patch(ctx, deployment, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("weftctl install --ca-dir: restart %s/%s to load the new intermediate: %w", ns, deployment, err)
	}
	return nil
}
