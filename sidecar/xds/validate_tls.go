package xds

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	tlsv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/weftmesh/weft/sidecar/internal/envoy/type/matcher/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

const tlsTransportSocket = "envoy.transport_sockets.tls"

func (b builder) trustBundle(m proto.Message) (*x509bundle.Bundle, error) {
	s, ok := m.(*tlsv3.Secret)
	if !ok {
		return nil, fmt.Errorf("resource is a %T", m)
	}
	if s.GetName() != model.TrustBundleSecret {
		return nil, fmt.Errorf("only secret %q is supported (the SVID is the sidecar's own)", model.TrustBundleSecret)
	}
	if err := only(s, "name", "validation_context"); err != nil {
		return nil, err
	}
	vc := s.GetValidationContext()
	if err := only(vc, "trusted_ca"); err != nil {
		return nil, fmt.Errorf("validation_context: %w", err)
	}
	pem, err := inlineData(vc.GetTrustedCa())
	if err != nil {
		return nil, fmt.Errorf("validation_context.trusted_ca: %w", err)
	}
	bundle, err := x509bundle.Parse(b.td, pem)
	if err != nil {
		return nil, fmt.Errorf("validation_context.trusted_ca: %w", err)
	}
	if len(bundle.X509Authorities()) == 0 {
		return nil, errors.New("validation_context.trusted_ca: no certificates")
	}
	return bundle, nil
}

// transportSocket unpacks a TLS transport socket's typed_config into m.
func transportSocket(ts *corev3.TransportSocket, m proto.Message) error {
	if err := only(ts, "name", "typed_config"); err != nil {
		return err
	}
	if ts.GetName() != tlsTransportSocket {
		return fmt.Errorf("transport socket %q is not supported", ts.GetName())
	}
	if ts.GetTypedConfig() == nil {
		return errors.New("typed_config is required")
	}
	return unpack(ts.GetTypedConfig(), m)
}

func (b builder) upstreamTLS(ts *corev3.TransportSocket) (*model.UpstreamTLS, error) {
	var u tlsv3.UpstreamTlsContext
	sans, alpn, err := b.tlsContext(ts, &u, true, "sni")
	if err != nil {
		return nil, err
	}
	return &model.UpstreamTLS{SANs: sans, SNI: u.GetSni(), ALPN: alpn}, nil
}

func (b builder) downstreamTLS(ts *corev3.TransportSocket) (*model.DownstreamTLS, error) {
	var d tlsv3.DownstreamTlsContext
	_, alpn, err := b.tlsContext(ts, &d, false, "require_client_certificate")
	if err != nil {
		return nil, err
	}
	return &model.DownstreamTLS{RequireClientCert: d.GetRequireClientCertificate().GetValue(), ALPN: alpn}, nil
}

// tlsContextMessage is an UpstreamTlsContext or a DownstreamTlsContext.
type tlsContextMessage interface {
	proto.Message
	GetCommonTlsContext() *tlsv3.CommonTlsContext
}

// tlsContext is what both directions check alike: a TLS transport socket
// unpacked into c, which may set common_tls_context and the fields named
// besides, and its common_tls_context (commonTLS).
func (b builder) tlsContext(ts *corev3.TransportSocket, c tlsContextMessage, upstream bool, fields ...string) (sans []spiffeid.ID, alpn []string, err error) {
	if err := transportSocket(ts, c); err != nil {
		return nil, nil, err
	}
	if err := only(c, append([]string{"common_tls_context"}, fields...)...); err != nil {
		return nil, nil, err
	}
	if sans, alpn, err = b.commonTLS(c.GetCommonTlsContext(), upstream); err != nil {
		return nil, nil, fmt.Errorf("common_tls_context: %w", err)
	}
	return sans, alpn, nil
}

// commonTLS checks the shape both directions share: TLS 1.3, the SVID as
// SDS secret "default" resolved by the sidecar, the trust bundle over ADS
// and, upstream only, the peer's SPIFFE IDs as URI SAN matchers.
func (b builder) commonTLS(c *tlsv3.CommonTlsContext, upstream bool) (sans []spiffeid.ID, alpn []string, err error) {
	if c == nil {
		return nil, nil, errors.New("is required")
	}
	if err := only(c, "tls_params", "tls_certificate_sds_secret_configs", "validation_context_sds_secret_config",
		"combined_validation_context", "alpn_protocols"); err != nil {
		return nil, nil, err
	}
	if p := c.GetTlsParams(); p != nil {
		if err := only(p, "tls_minimum_protocol_version", "tls_maximum_protocol_version"); err != nil {
			return nil, nil, fmt.Errorf("tls_params: %w", err)
		}
		if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLSv1_3 && v != tlsv3.TlsParameters_TLS_AUTO {
			return nil, nil, fmt.Errorf("tls_params.tls_minimum_protocol_version %s is not supported (the sidecar speaks TLSv1_3 only)", v)
		}
		if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLSv1_3 && v != tlsv3.TlsParameters_TLS_AUTO {
			return nil, nil, fmt.Errorf("tls_params.tls_maximum_protocol_version %s is not supported (the sidecar speaks TLSv1_3 only)", v)
		}
	}
	certs := c.GetTlsCertificateSdsSecretConfigs()
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("tls_certificate_sds_secret_configs: want exactly one, {name: %q}", model.SVIDSecret)
	}
	if err := only(certs[0], "name"); err != nil || certs[0].GetName() != model.SVIDSecret {
		return nil, nil, fmt.Errorf("tls_certificate_sds_secret_configs: only {name: %q} without sds_config is supported", model.SVIDSecret)
	}
	switch vc := c.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		if err := trustBundleRef(vc.ValidationContextSdsSecretConfig); err != nil {
			return nil, nil, fmt.Errorf("validation_context_sds_secret_config: %w", err)
		}
		if upstream {
			return nil, nil, errors.New("combined_validation_context with the peer's SPIFFE IDs is required")
		}
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cv := vc.CombinedValidationContext
		if err := only(cv, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return nil, nil, fmt.Errorf("combined_validation_context: %w", err)
		}
		if err := trustBundleRef(cv.GetValidationContextSdsSecretConfig()); err != nil {
			return nil, nil, fmt.Errorf("combined_validation_context.validation_context_sds_secret_config: %w", err)
		}
		if sans, err = b.sanMatchers(cv.GetDefaultValidationContext(), upstream); err != nil {
			return nil, nil, fmt.Errorf("combined_validation_context.default_validation_context: %w", err)
		}
	default:
		return nil, nil, fmt.Errorf("validation_context_sds_secret_config {name: %q} is required", model.TrustBundleSecret)
	}
	return sans, c.GetAlpnProtocols(), nil
}

func trustBundleRef(s *tlsv3.SdsSecretConfig) error {
	if err := only(s, "name", "sds_config"); err != nil {
		return err
	}
	if s.GetName() != model.TrustBundleSecret {
		return fmt.Errorf("secret %q is not supported (only %q)", s.GetName(), model.TrustBundleSecret)
	}
	if s.GetSdsConfig() == nil {
		return errors.New("sds_config {ads: {}} is required")
	}
	if err := adsSource(s.GetSdsConfig()); err != nil {
		return fmt.Errorf("sds_config: %w", err)
	}
	return nil
}

// sanMatchers reads the peer SPIFFE IDs an upstream context accepts.
func (b builder) sanMatchers(dv *tlsv3.CertificateValidationContext, upstream bool) ([]spiffeid.ID, error) {
	if err := only(dv, "match_typed_subject_alt_names"); err != nil {
		return nil, err
	}
	ms := dv.GetMatchTypedSubjectAltNames()
	if !upstream && len(ms) > 0 {
		return nil, errors.New("match_typed_subject_alt_names is not supported inbound (authorization is the rbac filter's)")
	}
	if upstream && len(ms) == 0 {
		return nil, errors.New("match_typed_subject_alt_names: at least one SPIFFE ID is required")
	}
	var ids []spiffeid.ID
	for i, m := range ms {
		if err := only(m, "san_type", "matcher"); err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names %d: %w", i, err)
		}
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			return nil, fmt.Errorf("match_typed_subject_alt_names %d: san_type %s is not supported (only URI)", i, m.GetSanType())
		}
		exact, ok := m.GetMatcher().GetMatchPattern().(*matcherv3.StringMatcher_Exact)
		if err := only(m.GetMatcher(), "exact"); err != nil || !ok {
			return nil, fmt.Errorf("match_typed_subject_alt_names %d: only matcher {exact: <SPIFFE ID>} is supported", i)
		}
		id, err := b.memberID(exact.Exact)
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names %d: %w", i, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// memberID parses a SPIFFE ID of the mesh's trust domain.
func (b builder) memberID(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%q is not a SPIFFE ID: %w", s, err)
	}
	if !id.MemberOf(b.td) {
		return spiffeid.ID{}, fmt.Errorf("%q is not in trust domain %q", s, b.td)
	}
	return id, nil
}

// memberPrefix checks an ID prefix lies inside the mesh's trust domain.
func (b builder) memberPrefix(s string) error {
	if !strings.HasPrefix(s, b.td.IDString()+"/") {
		return fmt.Errorf("prefix %q is not inside trust domain %q", s, b.td)
	}
	return nil
}
