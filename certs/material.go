package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"
)

// Material is what is stored in the Kubernetes Secret weft-ca (keys
// roots.pem, root-key.pem, intermediate.pem, intermediate-key.pem).
//
// RootKeyPEM starts with the key of RootsPEM[0]. Between PrepareRoot and
// ActivateRoot it also holds, as a second PEM block, the key of the root the
// intermediate chains to, so that a restart mid-rotation can still renew the
// intermediate under it. LoadCA accepts a single block too.
type Material struct {
	RootsPEM           []byte // every trusted root (the bundle), signing root first
	RootKeyPEM         []byte // PKCS#8 key of the signing (newest active) root
	IntermediatePEM    []byte
	IntermediateKeyPEM []byte // PKCS#8
}

// Material returns the CA's state as PEM, for storage.
func (ca *CA) Material() (Material, error) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	var signers []crypto.Signer
	if k := ca.rootKeys[Fingerprint(ca.roots[0])]; k != nil {
		signers = append(signers, k)
		if k := ca.rootKeys[Fingerprint(ca.active)]; ca.active != ca.roots[0] && k != nil {
			signers = append(signers, k)
		}
	}
	var rootKeys []byte
	for _, k := range signers {
		b, err := keyPEM(k)
		if err != nil {
			return Material{}, err
		}
		rootKeys = append(rootKeys, b...)
	}
	interKey, err := keyPEM(ca.interKey)
	if err != nil {
		return Material{}, err
	}
	return Material{
		RootsPEM:           certsPEM(ca.roots...),
		RootKeyPEM:         rootKeys,
		IntermediatePEM:    certsPEM(ca.inter),
		IntermediateKeyPEM: interKey,
	}, nil
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal %T key: %w", key, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadCA restores a CA from stored material. It refuses keys that do not
// match their certificates, an intermediate that is not signed by one of the
// roots, and an intermediate or active root outside its validity at
// cfg.Clock's now. Without a root key (m.RootKeyPEM empty) it loads an
// intermediate-only CA (see Material). Errors wrap ErrInvalidMaterial or
// ErrExpired.
func LoadCA(cfg CAConfig, m Material) (*CA, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	roots, err := parseCerts("roots.pem", m.RootsPEM)
	if err != nil {
		return nil, err
	}
	for i, r := range roots {
		if !r.IsCA || r.CheckSignatureFrom(r) != nil {
			return nil, fmt.Errorf("certs: roots.pem: certificate %d (%q) is not a self-signed CA: %w", i, r.Subject, ErrInvalidMaterial)
		}
	}
	inters, err := parseCerts("intermediate.pem", m.IntermediatePEM)
	if err != nil {
		return nil, err
	}
	if len(inters) != 1 {
		return nil, fmt.Errorf("certs: intermediate.pem: holds %d certificates, want 1: %w", len(inters), ErrInvalidMaterial)
	}
	inter := inters[0]
	if !inter.IsCA {
		return nil, fmt.Errorf("certs: intermediate.pem: %q is not a CA certificate: %w", inter.Subject, ErrInvalidMaterial)
	}
	if want := cfg.TrustDomain.ID().String(); len(inter.URIs) > 0 && (len(inter.URIs) != 1 || inter.URIs[0].String() != want) {
		return nil, fmt.Errorf("certs: intermediate.pem: URI SANs %v, want %s: %w", inter.URIs, want, ErrInvalidMaterial)
	}
	var rootKeys []crypto.Signer
	if len(bytes.TrimSpace(m.RootKeyPEM)) > 0 {
		if rootKeys, err = parseKeys("root-key.pem", m.RootKeyPEM); err != nil {
			return nil, err
		}
	}
	interKeys, err := parseKeys("intermediate-key.pem", m.IntermediateKeyPEM)
	if err != nil {
		return nil, err
	}
	if len(interKeys) != 1 {
		return nil, fmt.Errorf("certs: intermediate-key.pem: holds %d keys, want 1: %w", len(interKeys), ErrInvalidMaterial)
	}
	if err := keyMatches("intermediate-key.pem", interKeys[0], inter); err != nil {
		return nil, err
	}
	ca := &CA{cfg: cfg, roots: roots, rootKeys: map[[32]byte]crypto.Signer{}, inter: inter, interKey: interKeys[0]}
	if len(rootKeys) > 0 {
		if err := keyMatches("root-key.pem", rootKeys[0], roots[0]); err != nil {
			return nil, err
		}
		ca.rootKeys[Fingerprint(roots[0])] = rootKeys[0]
	}
	for _, r := range roots {
		if inter.CheckSignatureFrom(r) == nil {
			ca.active = r
			break
		}
	}
	if ca.active == nil {
		return nil, fmt.Errorf("certs: intermediate.pem: %q (issuer %q) is not signed by any of the %d roots in roots.pem: %w", inter.Subject, inter.Issuer, len(roots), ErrInvalidMaterial)
	}
	for i, k := range rootKeys[min(1, len(rootKeys)):] {
		if err := keyMatches(fmt.Sprintf("root-key.pem block %d", i+2), k, ca.active); err != nil {
			return nil, err
		}
		ca.rootKeys[Fingerprint(ca.active)] = k
	}
	now := cfg.Clock.Now()
	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{{"intermediate", inter}, {"active root", ca.active}, {"signing root", roots[0]}} {
		if err := checkValidity(c.name, c.cert, now); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

func checkValidity(name string, c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certs: %s %q is not valid before %s (now %s): %w", name, c.Subject, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrInvalidMaterial)
	}
	if !now.Before(c.NotAfter) {
		return fmt.Errorf("certs: %s %q expired at %s (now %s): %w", name, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
	}
	return nil
}
