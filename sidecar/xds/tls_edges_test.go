package xds

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Edges of the TLS contexts' validation that the mutation run of
// sidecar/xds (docs/mutation.md) showed no test checked: the protocol
// versions tls_params may name, the trust bundle reference, and SAN
// matchers on an inbound context.

const serverSAN = "spiffe://cluster.local/ns/demo/sa/server"

// withUpstreamTLS sets cluster outbound|80|server.demo's upstream context
// to one with common context c.
func withUpstreamTLS(t testing.TB, r envoySet, c *tlsv3.CommonTlsContext) {
	cl := r[model.ClusterType]["outbound|80|server.demo"].(*clusterv3.Cluster)
	cl.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: c})}
}

// withInboundTLS sets the inbound listener's first filter chain's
// downstream context to one with common context c.
func withInboundTLS(t testing.TB, r envoySet, c *tlsv3.CommonTlsContext) {
	l := r[model.ListenerType]["inbound"].(*listenerv3.Listener)
	l.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t,
		&tlsv3.DownstreamTlsContext{CommonTlsContext: c, RequireClientCertificate: wrapperspb.Bool(true)})}
}

// tls_params may leave either version to Envoy (TLS_AUTO, which is 1.3 at
// most and, for the sidecar, 1.3) or name TLSv1_3; any other is refused,
// whichever bound it is. Without tls_params, the context is accepted.
func TestTLSParamsVersions(t *testing.T) {
	v := func(p *tlsv3.TlsParameters) *tlsv3.CommonTlsContext {
		c := commonTLS(serverSAN)
		c.TlsParams = p
		return c
	}
	accepted := map[string]*tlsv3.CommonTlsContext{
		"no tls_params":    v(nil),
		"empty":            v(&tlsv3.TlsParameters{}),
		"min TLS_AUTO":     v(&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLS_AUTO, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}),
		"max TLS_AUTO":     v(&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLS_AUTO}),
		"both TLSv1_3":     v(&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}),
		"max TLSv1_3 only": v(&tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}),
	}
	for name, c := range accepted {
		r := mesh{services: []string{"server.demo"}}.envoy(t)
		withUpstreamTLS(t, r, c)
		if _, err := buildEnvoy(r); err != nil {
			t.Errorf("%s: Build() = %v, want it accepted", name, err)
		}
	}
	refused := map[string]struct {
		c    *tlsv3.CommonTlsContext
		want string
	}{
		"min TLSv1_2": {v(&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}),
			"tls_params.tls_minimum_protocol_version TLSv1_2 is not supported"},
		"max TLSv1_2": {v(&tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLS_AUTO, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}),
			"tls_params.tls_maximum_protocol_version TLSv1_2 is not supported"},
	}
	for name, tc := range refused {
		r := mesh{services: []string{"server.demo"}}.envoy(t)
		withUpstreamTLS(t, r, tc.c)
		if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Build() error = %v, want %q", name, err, tc.want)
		}
	}
}

// The trust bundle reference is checked for its name and its source, both
// as validation_context_sds_secret_config and inside
// combined_validation_context.
func TestTrustBundleRefChecked(t *testing.T) {
	for _, sans := range [][]string{nil, {serverSAN}} {
		for name, tc := range map[string]struct {
			mutate func(*tlsv3.SdsSecretConfig)
			want   string
		}{
			"other secret":  {func(s *tlsv3.SdsSecretConfig) { s.Name = "other" }, `secret "other" is not supported (only "trust_bundle")`},
			"no sds_config": {func(s *tlsv3.SdsSecretConfig) { s.SdsConfig = nil }, "sds_config {ads: {}} is required"},
			"not over ads":  {func(s *tlsv3.SdsSecretConfig) { s.SdsConfig = &corev3.ConfigSource{} }, "sds_config: "},
		} {
			c := commonTLS(sans...)
			bundle := c.GetValidationContextSdsSecretConfig()
			if len(sans) > 0 {
				bundle = c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()
			}
			tc.mutate(bundle)
			r := mesh{services: []string{"server.demo"}}.envoy(t)
			if len(sans) > 0 {
				withUpstreamTLS(t, r, c)
			} else {
				withInboundTLS(t, r, c)
			}
			if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s (SANs %v): Build() error = %v, want %q", name, sans, err, tc.want)
			}
		}
	}
}

// Inbound, combined_validation_context is accepted without SAN matchers
// (authorization is the rbac filter's) and refused with one.
func TestInboundCombinedValidationContext(t *testing.T) {
	c := commonTLS(serverSAN)
	c.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames = nil
	r := mesh{}.envoy(t)
	withInboundTLS(t, r, c)
	if _, err := buildEnvoy(r); err != nil {
		t.Errorf("inbound combined_validation_context without SAN matchers: Build() = %v, want it accepted", err)
	}
	r = mesh{}.envoy(t)
	withInboundTLS(t, r, commonTLS(serverSAN))
	if _, err := buildEnvoy(r); err == nil || !strings.Contains(err.Error(), "match_typed_subject_alt_names is not supported inbound") {
		t.Errorf("inbound combined_validation_context with a SAN matcher: Build() error = %v, want it refused", err)
	}
}
