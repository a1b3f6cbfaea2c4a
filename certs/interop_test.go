package certs_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/certs"
)

// OpenSSL agrees with go-spiffe: the chain verifies, for TLS clients and
// servers alike.
func TestOpenSSLVerifies(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	ca := newTestCA(t, nil) // openssl checks validity against the real time
	for _, key := range []struct {
		name string
		key  crypto.Signer
	}{{"P-256", p256Key(t)}, {"RSA", rsaKey(t, 2048)}, {"Ed25519", ed25519Key(t)}} {
		t.Run(key.name, func(t *testing.T) {
			chain, err := ca.Sign(certs.SignRequest{CSR: makeCSR(t, key.key), ID: idA, DNSNames: []string{"weft-controlplane.weft-system.svc"}})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			m := material(t, ca)
			write := func(name string, data []byte) {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write("roots.pem", m.RootsPEM)
			write("intermediate.pem", m.IntermediatePEM)
			write("leaf.pem", pemCerts(chain[0]))
			for _, purpose := range []string{"", "sslserver", "sslclient"} {
				args := []string{"verify", "-CAfile", "roots.pem", "-untrusted", "intermediate.pem"}
				if purpose != "" {
					args = append(args, "-purpose", purpose)
				}
				cmd := exec.Command(openssl, append(args, "leaf.pem")...)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if err != nil || string(out) != "leaf.pem: OK\n" {
					t.Errorf("openssl %v: %v\n%s", args, err, out)
				}
			}
		})
	}
}

func pemCerts(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Two SVIDs from the CA complete a go-spiffe mTLS handshake, each side
// authorizing the other's ID: the key usages suit TLS for every key type.
func TestMTLSHandshake(t *testing.T) {
	ca := newTestCA(t, nil)
	for _, key := range []struct {
		name string
		key  crypto.Signer
	}{{"P-256", p256Key(t)}, {"RSA", rsaKey(t, 2048)}, {"Ed25519", ed25519Key(t)}} {
		t.Run(key.name, func(t *testing.T) {
			client, server := svidFor(t, ca, idA, key.key), svidFor(t, ca, idB, p256Key(t))
			c, s := net.Pipe()
			defer c.Close()
			defer s.Close()
			bundle := ca.Bundle()
			tc := tls.Client(c, tlsconfig.MTLSClientConfig(client, bundle, tlsconfig.AuthorizeID(idB)))
			ts := tls.Server(s, tlsconfig.MTLSServerConfig(server, bundle, tlsconfig.AuthorizeID(idA)))
			errc := make(chan error, 1)
			go func() { errc <- ts.HandshakeContext(context.Background()) }()
			if err := tc.HandshakeContext(context.Background()); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("server handshake: %v", err)
			}
			peer, err := x509svid.IDFromCert(ts.ConnectionState().PeerCertificates[0])
			if err != nil || peer != idA {
				t.Fatalf("server saw peer %v (%v), want %s", peer, err, idA)
			}
		})
	}
}

func svidFor(t *testing.T, ca *certs.CA, id spiffeid.ID, key crypto.Signer) *x509svid.SVID {
	t.Helper()
	chain, err := ca.Sign(certs.SignRequest{CSR: makeCSR(t, key), ID: id})
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.ParseRaw(slices.Concat(chain[0].Raw, chain[1].Raw), keyDER)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}
