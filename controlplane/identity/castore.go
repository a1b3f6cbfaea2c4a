package identity

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/certs"
)

// CASecretName is the default name of the CA Secret in weft's namespace.
const CASecretName = "weft-ca"

// Keys of the CA Secret.
const (
	SecretKeyRoots           = "roots.pem"
	SecretKeyRootKey         = "root-key.pem"
	SecretKeyIntermediate    = "intermediate.pem"
	SecretKeyIntermediateKey = "intermediate-key.pem"
)

// CAStore names the Secret that holds the CA.
type CAStore struct {
	Client    kubernetes.Interface
	Namespace string // weft-system
	Name      string // weft-ca
	Logger    *slog.Logger
}

// LoadOrCreate returns the CA kept in the Secret, creating it once if the
// Secret does not exist. Two replicas starting together are safe: the one
// whose Create loses gets AlreadyExists and loads the winner's CA, so every
// replica signs under the same roots.
func (s CAStore) LoadOrCreate(ctx context.Context, cfg certs.CAConfig) (*certs.CA, error) {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		ca, err := s.load(cfg, sec)
		if err == nil && ca.IntermediateOnly() {
			log.Info("loaded an intermediate-only CA: the cluster holds no root key; renew the intermediate where the root key lives before it expires (weftctl install --ca-dir)",
				"secret", s.Namespace+"/"+s.Name, "not_after", ca.Intermediate().NotAfter)
		}
		return ca, err
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("identity: get CA secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	ca, err := certs.NewCA(cfg)
	if err != nil {
		return nil, err
	}
	m, err := ca.Material()
	if err != nil {
		return nil, err
	}
	_, err = secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.Name,
			Namespace: s.Namespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "weft"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			SecretKeyRoots:           m.RootsPEM,
			SecretKeyRootKey:         m.RootKeyPEM,
			SecretKeyIntermediate:    m.IntermediatePEM,
			SecretKeyIntermediateKey: m.IntermediateKeyPEM,
		},
	}, metav1.CreateOptions{})
	switch {
	case err == nil:
		log.Info("created CA", "secret", s.Namespace+"/"+s.Name, "trust_domain", cfg.TrustDomain.String())
		return ca, nil
	case apierrors.IsAlreadyExists(err):
		// Another replica won the race; use its CA, not ours.
		sec, err = secrets.Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("identity: get CA secret %s/%s after losing the create race: %w", s.Namespace, s.Name, err)
		}
		log.Info("another replica created the CA first; loading it", "secret", s.Namespace+"/"+s.Name)
		return s.load(cfg, sec)
	default:
		return nil, fmt.Errorf("identity: create CA secret %s/%s: %w", s.Namespace, s.Name, err)
	}
}

func (s CAStore) load(cfg certs.CAConfig, sec *corev1.Secret) (*certs.CA, error) {
	ca, err := certs.LoadCA(cfg, certs.Material{
		RootsPEM:           sec.Data[SecretKeyRoots],
		RootKeyPEM:         sec.Data[SecretKeyRootKey],
		IntermediatePEM:    sec.Data[SecretKeyIntermediate],
		IntermediateKeyPEM: sec.Data[SecretKeyIntermediateKey],
	})
	if err != nil {
		return nil, fmt.Errorf("identity: CA secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return ca, nil
}
