package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Handshake failure reasons, the label of
// weft_sidecar_handshake_failures_total.
const (
	reasonNoClientCert = "no_client_cert"
	reasonUnknownCA    = "unknown_ca"
	reasonExpired      = "expired"
	reasonBadSPIFFEID  = "bad_spiffe_id"
	reasonAuthzDenied  = "authz_denied"
	reasonNotTLS       = admin.ReasonNotTLS
	reasonTLSVersion   = "tls_version"
	reasonBadCert      = "bad_certificate"
	reasonTimeout      = "timeout"
	reasonPeerClosed   = "peer_closed"
	reasonNoSVID       = "no_svid"
	reasonOther        = "other"
)

// authzError is an authorizer's refusal: reason says which kind.
type authzError struct {
	reason string // reasonBadSPIFFEID or reasonAuthzDenied
	policy string // the DENY policy that matched, for reasonAuthzDenied
	msg    string
}

func (e *authzError) Error() string { return e.msg }

// errNoSVID wraps a failure to get our own SVID for a handshake.
var errNoSVID = errors.New("proxy: no SVID")

// serverTLS returns the TLS configuration terminating one inbound
// connection on chain fc to port: TLS 1.3 only, the current SVID (fetched
// per handshake, so a renewed one applies to the next connection), the
// client's X.509-SVID verified against the trust bundle, then authorized by
// the trust domain and the chain's RBAC filters. Session tickets are off so
// every connection is fully authenticated and authorized.
func (p *Proxy) serverTLS(fc *model.FilterChain, port uint16, peer *spiffeid.ID) *tls.Config {
	authz := func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		*peer = id
		if !id.MemberOf(p.td) {
			return &authzError{reason: reasonBadSPIFFEID, msg: fmt.Sprintf("proxy: peer %s is not in trust domain %s", id, p.td)}
		}
		return p.authorize(inbound, fc, id.String(), port)
	}
	cfg := tlsconfig.MTLSServerConfig(p.svid, p.cfg.Bundle, authz)
	if !fc.TLS.RequireClientCert {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		verify := cfg.VerifyPeerCertificate
		cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return p.authorize(inbound, fc, "", port)
			}
			return verify(raw, chains)
		}
		// crypto/tls verifies a given certificate itself under
		// VerifyClientCertIfGiven; go-spiffe's callback does it instead.
		cfg.ClientAuth = tls.RequestClientCert
	}
	cfg.MinVersion = tls.VersionTLS13
	cfg.SessionTicketsDisabled = true
	cfg.DynamicRecordSizingDisabled = true
	cfg.NextProtos = fc.TLS.ALPN
	return cfg
}

// clientTLS returns the TLS configuration originating mTLS to a peer
// sidecar of cluster cl: TLS 1.3 only, our current SVID, the peer's
// X.509-SVID verified against the trust bundle and its SPIFFE ID one of the
// cluster's SANs.
func (p *Proxy) clientTLS(u *model.UpstreamTLS, peer *spiffeid.ID) *tls.Config {
	allowed := tlsconfig.AuthorizeOneOf(u.SANs...)
	authz := func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		*peer = id
		if err := allowed(id, chains); err != nil {
			return &authzError{reason: reasonBadSPIFFEID, msg: fmt.Sprintf("proxy: upstream peer %s is not one of %v: %v", id, u.SANs, err)}
		}
		return nil
	}
	cfg := tlsconfig.MTLSClientConfig(p.svid, p.cfg.Bundle, authz)
	cfg.MinVersion = tls.VersionTLS13
	cfg.ServerName = u.SNI
	cfg.NextProtos = u.ALPN
	cfg.DynamicRecordSizingDisabled = true
	return cfg
}

// failureReason classifies a failed handshake.
func failureReason(err error) string {
	var (
		az      *authzError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		ne      net.Error
		recErr  tls.RecordHeaderError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &az):
		return az.reason
	case errors.Is(err, errNoSVID):
		return reasonNoSVID
	case errors.As(err, &unknown):
		return reasonUnknownCA
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return reasonExpired
		}
		return reasonBadCert
	case strings.Contains(msg, "could not get X509 bundle"):
		return reasonUnknownCA // a trust domain we have no bundle for
	case strings.Contains(msg, "didn't provide a certificate"):
		return reasonNoClientCert
	case strings.Contains(msg, "x509svid:"):
		return reasonBadSPIFFEID // no or several URI SANs, a CA leaf, ...
	case errors.As(err, &recErr):
		return reasonNotTLS
	case strings.Contains(msg, "certificate required"):
		return reasonNoClientCert
	case strings.Contains(msg, "unknown certificate authority"):
		return reasonUnknownCA
	case strings.Contains(msg, "expired certificate"):
		return reasonExpired
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unsupported certificate"),
		strings.Contains(msg, "unknown certificate"):
		return reasonBadCert
	case strings.Contains(msg, "protocol version"), strings.Contains(msg, "unsupported versions"):
		return reasonTLSVersion
	case errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return reasonPeerClosed
	}
	return reasonOther
}
