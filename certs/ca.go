package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CAConfig configures a CA. Zero fields get defaults.
type CAConfig struct {
	TrustDomain     spiffeid.TrustDomain
	Clock           Clock         // nil: time.Now
	RootTTL         time.Duration // 0: 10 years
	IntermediateTTL time.Duration // 0: 1 year
	WorkloadTTL     time.Duration // 0: 24h (default SVID lifetime)
}

func (cfg CAConfig) withDefaults() (CAConfig, error) {
	if cfg.TrustDomain.IsZero() {
		return cfg, errors.New("certs: CAConfig: trust domain is empty")
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"RootTTL", cfg.RootTTL}, {"IntermediateTTL", cfg.IntermediateTTL}, {"WorkloadTTL", cfg.WorkloadTTL}} {
		if f.d < 0 {
			return cfg, fmt.Errorf("certs: CAConfig: %s is negative (%v)", f.name, f.d)
		}
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.RootTTL == 0 {
		cfg.RootTTL = DefaultRootTTL
	}
	if cfg.IntermediateTTL == 0 {
		cfg.IntermediateTTL = DefaultIntermediateTTL
	}
	if cfg.WorkloadTTL == 0 {
		cfg.WorkloadTTL = DefaultWorkloadTTL
	}
	return cfg, nil
}

// CA is a SPIFFE certificate authority for one trust domain. Its methods
// are safe for concurrent use.
type CA struct {
	cfg CAConfig

	mu sync.RWMutex
	// roots is the bundle, newest first; roots[0] is the signing root: the
	// one the next intermediate will be signed by (see ROTATION.md).
	roots []*x509.Certificate
	// rootKeys holds the keys we have: roots[0]'s always, the active root's
	// while a rotation is prepared but not yet activated; none in an
	// intermediate-only CA.
	rootKeys map[[32]byte]crypto.Signer
	// active is the root the intermediate chains to.
	active   *x509.Certificate
	inter    *x509.Certificate
	interKey crypto.Signer
}

// NewCA creates a CA with a fresh ECDSA P-256 root and an intermediate
// signed by it.
func NewCA(cfg CAConfig) (*CA, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	now := cfg.Clock.Now()
	rootKey, err := newKey()
	if err != nil {
		return nil, err
	}
	root, err := newCACert(cfg.TrustDomain, now, cfg.RootTTL, rootKey, nil, nil)
	if err != nil {
		return nil, err
	}
	ca := &CA{
		cfg:      cfg,
		roots:    []*x509.Certificate{root},
		rootKeys: map[[32]byte]crypto.Signer{Fingerprint(root): rootKey},
	}
	if err := ca.renewIntermediateLocked(root, now); err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain is the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.cfg.TrustDomain }

// IntermediateOnly reports whether the CA holds no root key (see
// Material): it signs workloads, but its intermediate is renewed and its
// roots rotated outside the cluster.
func (ca *CA) IntermediateOnly() bool {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return len(ca.rootKeys) == 0
}

// Bundle returns a copy of every root currently trusted.
func (ca *CA) Bundle() *x509bundle.Bundle {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return x509bundle.FromX509Authorities(ca.cfg.TrustDomain, ca.roots)
}

// BundlePEM returns every root currently trusted as PEM, signing root first.
func (ca *CA) BundlePEM() []byte {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return certsPEM(ca.roots...)
}

// Intermediate returns the certificate that signs SVIDs.
func (ca *CA) Intermediate() *x509.Certificate {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.inter
}

// ActiveRoot returns the root the current intermediate chains to.
func (ca *CA) ActiveRoot() *x509.Certificate {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.active
}

// Roots returns the trusted roots, signing (newest) root first.
func (ca *CA) Roots() []*x509.Certificate {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return append([]*x509.Certificate(nil), ca.roots...)
}

func certsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
