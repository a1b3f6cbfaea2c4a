package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/metadata"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
)

// renew makes a new key, asks the certificate service to sign it, and
// installs the result if it passes validation.
func (m *Manager) renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("identity: generate key: %w", err)
	}
	// Subject and SANs are left empty: the server derives the identity from
	// the token and uses only the CSR's public key.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return fmt.Errorf("identity: create CSR: %w", err)
	}
	token, err := m.readToken()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, signTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := m.client.Sign(ctx, &certificatev1.SignRequest{
		Csr:        csr,
		TtlSeconds: int64((m.ttl + time.Second - 1) / time.Second),
	})
	if err != nil {
		return fmt.Errorf("identity: sign: %w", err)
	}
	svid, bundle, err := m.validate(resp, key)
	if err != nil {
		return err
	}
	m.install(svid, bundle)
	return nil
}

// readToken reads the projected ServiceAccount token afresh.
func (m *Manager) readToken() (string, error) { return readToken(m.tokenPath) }

// validate turns a SignResponse into an SVID for key and its bundle, or
// says why it cannot be trusted.
func (m *Manager) validate(resp *certificatev1.SignResponse, key *ecdsa.PrivateKey) (*x509svid.SVID, *x509bundle.Bundle, error) {
	id, err := spiffeid.FromString(resp.GetSpiffeId())
	if err != nil {
		return nil, nil, fmt.Errorf("identity: invalid response: spiffe_id %q: %w", resp.GetSpiffeId(), err)
	}
	chain, err := parseCerts(resp.GetCertChain())
	if err != nil {
		return nil, nil, fmt.Errorf("identity: invalid response: cert_chain: %w", err)
	}
	roots, err := parseCerts(resp.GetTrustBundle())
	if err != nil {
		return nil, nil, fmt.Errorf("identity: invalid response: trust_bundle: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	leafID, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(m.clock.Now()))
	if err != nil {
		return nil, nil, fmt.Errorf("identity: invalid response for %s: %w", id, err)
	}
	if leafID != id {
		return nil, nil, fmt.Errorf("identity: invalid response: spiffe_id is %s but the certificate says %s", id, leafID)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		return nil, nil, fmt.Errorf("identity: invalid response for %s: the certificate is not for our key", id)
	}
	m.mu.RLock()
	cur := m.svid
	m.mu.RUnlock()
	if cur != nil && cur.ID != id {
		// A pod's service account cannot change, so neither can its ID.
		return nil, nil, fmt.Errorf("identity: invalid response: identity changed from %s to %s", cur.ID, id)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, bundle, nil
}

func parseCerts(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("empty")
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
