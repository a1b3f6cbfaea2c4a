package certs

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"math"
	"time"
)

// PrepareRoot is rotation step 1: it generates a new root and publishes it
// in the bundle (first, as the signing root). SVIDs are still signed by the
// old intermediate under the old root until ActivateRoot. Only one root can
// be prepared at a time.
func (ca *CA) PrepareRoot() error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if len(ca.rootKeys) == 0 {
		return fmt.Errorf("certs: PrepareRoot: this CA is intermediate-only (no root key): rotate roots where the root key lives and load the new material: %w", ErrRotation)
	}
	if ca.roots[0] != ca.active {
		return fmt.Errorf("certs: PrepareRoot: root %s is already prepared and not yet active; call ActivateRoot first: %w", fpString(Fingerprint(ca.roots[0])), ErrRotation)
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	root, err := newCACert(ca.cfg.TrustDomain, ca.cfg.Clock.Now(), ca.cfg.RootTTL, key, nil, nil)
	if err != nil {
		return err
	}
	ca.roots = append([]*x509.Certificate{root}, ca.roots...)
	ca.rootKeys[Fingerprint(root)] = key
	return nil
}

// ActivateRoot is rotation step 2: it signs a new intermediate under the
// prepared root, so SVIDs signed from now on chain to it. Call it only once
// every workload's bundle holds the prepared root.
func (ca *CA) ActivateRoot() error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.roots[0] == ca.active {
		return fmt.Errorf("certs: ActivateRoot: no prepared root (active root %s is the newest); call PrepareRoot first: %w", fpString(Fingerprint(ca.active)), ErrRotation)
	}
	return ca.renewIntermediateLocked(ca.roots[0], ca.cfg.Clock.Now())
}

// RetireRoot is rotation step 3: it drops the root whose DER has SHA-256 fp
// from the bundle. It refuses the active root and a prepared root. Call it
// only once every SVID chaining to that root has expired.
func (ca *CA) RetireRoot(fp [32]byte) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	i := -1
	for j, r := range ca.roots {
		if Fingerprint(r) == fp {
			i = j
		}
	}
	switch {
	case i < 0:
		return fmt.Errorf("certs: RetireRoot: root %s is not in the bundle (%d roots): %w", fpString(fp), len(ca.roots), ErrRotation)
	case ca.roots[i] == ca.active:
		return fmt.Errorf("certs: RetireRoot: root %s is the active root; activate another root first: %w", fpString(fp), ErrRotation)
	case i == 0:
		return fmt.Errorf("certs: RetireRoot: root %s is prepared and not yet active; activate it, then retire the old one: %w", fpString(fp), ErrRotation)
	}
	ca.roots = append(ca.roots[:i:i], ca.roots[i+1:]...)
	delete(ca.rootKeys, fp)
	return nil
}

// RenewIntermediate signs a new intermediate under the active root, e.g.
// before the current one expires. SVIDs already issued stay valid: they
// chain to the same root.
func (ca *CA) RenewIntermediate() error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.renewIntermediateLocked(ca.active, ca.cfg.Clock.Now())
}

// renewIntermediateLocked makes root the active root with a fresh
// intermediate under it, and forgets the keys no longer needed.
func (ca *CA) renewIntermediateLocked(root *x509.Certificate, now time.Time) error {
	fp := Fingerprint(root)
	rootKey := ca.rootKeys[fp]
	if rootKey == nil && len(ca.rootKeys) == 0 {
		return fmt.Errorf("certs: renew intermediate: this CA is intermediate-only (no root key): sign a new intermediate under root %s where its key lives and load it: %w", fpString(fp), ErrRotation)
	}
	if rootKey == nil {
		return fmt.Errorf("certs: renew intermediate: no key for root %s (the stored root-key.pem holds only the signing root's key); call ActivateRoot: %w", fpString(fp), ErrRotation)
	}
	if !now.Before(root.NotAfter) {
		return fmt.Errorf("certs: renew intermediate: root %s expired at %s (now %s): %w", fpString(fp), root.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	inter, err := newCACert(ca.cfg.TrustDomain, now, ca.cfg.IntermediateTTL, key, root, rootKey)
	if err != nil {
		return err
	}
	ca.active, ca.inter, ca.interKey = root, inter, key
	keep := map[[32]byte]crypto.Signer{}
	for _, r := range []*x509.Certificate{ca.roots[0], root} {
		if k := ca.rootKeys[Fingerprint(r)]; k != nil {
			keep[Fingerprint(r)] = k
		}
	}
	ca.rootKeys = keep
	return nil
}

// RenewalTime says when a certificate valid from notBefore to notAfter
// should be renewed: at half its lifetime, moved by up to a tenth of the
// lifetime either way. jitter is a random value in [0, 1] (e.g.
// rand.Float64()): 0 renews at 40% of the lifetime, 0.5 at exactly half,
// 1 at 60%. Values outside [0, 1] are clamped; NaN counts as 0.5. An empty
// or inverted lifetime renews at notBefore.
func RenewalTime(notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	if math.IsNaN(jitter) {
		jitter = 0.5
	}
	jitter = min(max(jitter, 0), 1)
	offset := time.Duration((2*jitter - 1) * float64(life/10))
	return notBefore.Add(life/2 + offset)
}
