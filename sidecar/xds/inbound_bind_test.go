package xds

import (
	"net/netip"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// TestInboundClusterShapes: the inbound clusters of the contract, as the
// sidecar reads them. inbound|P to the original destination (the pod's
// own address) from 127.0.0.6 / ::6; inbound|P on 127.0.0.1 (the pod's
// weft.dev/inbound-loopback-ports) from 127.0.0.6; InboundPassthroughCluster
// to the original destination, with or without a source.
func TestInboundClusterShapes(t *testing.T) {
	v4, v6 := netip.MustParseAddr("127.0.0.6"), netip.MustParseAddr("::6")
	for _, tc := range []struct {
		name    string
		mutate  func(envoySet)
		cluster string
		kind    model.ClusterKind
		static  []model.Endpoint
		sources []netip.Addr
	}{
		{"original destination from 127.0.0.6 and ::6", func(r envoySet) {
			r[model.ClusterType]["inbound|8080"] = originalDstInbound("inbound|8080", inboundBind())
		}, "inbound|8080", model.KindOriginalDst, nil, []netip.Addr{v4, v6}},
		{"original destination, IPv6 first", func(r envoySet) {
			b := inboundBind()
			b.SourceAddress, b.ExtraSourceAddresses[0].Address = b.ExtraSourceAddresses[0].Address, b.SourceAddress
			r[model.ClusterType]["inbound|8080"] = originalDstInbound("inbound|8080", b)
		}, "inbound|8080", model.KindOriginalDst, nil, []netip.Addr{v6, v4}},
		{"original destination, kernel's source", func(r envoySet) {
			r[model.ClusterType]["inbound|8080"] = originalDstInbound("inbound|8080", nil)
		}, "inbound|8080", model.KindOriginalDst, nil, nil},
		{"loopback from 127.0.0.6", func(r envoySet) {
			c := staticCluster("inbound|8080", "127.0.0.1", 8080)
			c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: bindAddr("127.0.0.6")}
			r[model.ClusterType]["inbound|8080"] = c
		}, "inbound|8080", model.KindStatic, []model.Endpoint{{Addr: netip.MustParseAddrPort("127.0.0.1:8080")}}, []netip.Addr{v4}},
		{"loopback, kernel's source (before upstream_bind_config)", nil,
			"inbound|8080", model.KindStatic, []model.Endpoint{{Addr: netip.MustParseAddrPort("127.0.0.1:8080")}}, nil},
		{"passthrough from 127.0.0.6 and ::6", nil, model.InboundPassthroughCluster, model.KindOriginalDst, nil, []netip.Addr{v4, v6}},
		{"passthrough, kernel's source", func(r envoySet) {
			r[model.ClusterType][model.InboundPassthroughCluster].(*clusterv3.Cluster).UpstreamBindConfig = nil
		}, model.InboundPassthroughCluster, model.KindOriginalDst, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mesh{}.envoy(t)
			if tc.mutate != nil {
				tc.mutate(r)
			}
			cfg, err := buildEnvoy(r)
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Clusters[tc.cluster]
			if c.Kind != tc.kind || !slices.Equal(c.StaticEndpoints, tc.static) || !slices.Equal(c.SourceAddrs, tc.sources) {
				t.Errorf("%s = kind %s, static %v, sources %v; want %s, %v, %v", tc.cluster, c.Kind, c.StaticEndpoints, c.SourceAddrs,
					tc.kind, tc.static, tc.sources)
			}
		})
	}
}

// TestInboundBindRejects: a source the sidecar cannot honour as the
// contract means it (one the capture rules do not exempt, a fixed port,
// Envoy's other bind options) is NACKed, as is a source on a cluster that
// is not inbound.
func TestInboundBindRejects(t *testing.T) {
	set := func(name string, b *corev3.BindConfig) func(envoySet) {
		return func(r envoySet) {
			if name == "inbound|8080" {
				r[model.ClusterType][name] = originalDstInbound(name, b)
				return
			}
			r[model.ClusterType][name].(*clusterv3.Cluster).UpstreamBindConfig = b
		}
	}
	withPort := bindAddr("127.0.0.6")
	withPort.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 40000}
	checkRefusals(t, mesh{}.envoy, []refusal{
		{"pod address as source", set("inbound|8080", &corev3.BindConfig{SourceAddress: bindAddr("198.18.0.9")}),
			`xds: cluster "inbound|8080": upstream_bind_config: source_address: 198.18.0.9 is not 127.0.0.6 or ::6, the sources the capture rules exempt`},
		{"other loopback", set(model.InboundPassthroughCluster, &corev3.BindConfig{SourceAddress: bindAddr("127.0.0.1")}),
			`xds: cluster "InboundPassthroughCluster": upstream_bind_config: source_address: 127.0.0.1 is not 127.0.0.6 or ::6`},
		{"fixed port", set("inbound|8080", &corev3.BindConfig{SourceAddress: withPort}),
			`upstream_bind_config: source_address: port_value must be 0`},
		{"two of a version", set("inbound|8080", &corev3.BindConfig{SourceAddress: bindAddr("::6"),
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindAddr("::6")}}}),
			`upstream_bind_config: extra_source_addresses 0: address: a second source address of the same IP version (::6, ::6)`},
		{"no source_address", set("inbound|8080", &corev3.BindConfig{
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindAddr("::6")}}}),
			`upstream_bind_config: source_address is required`},
		{"freebind", set("inbound|8080", &corev3.BindConfig{SourceAddress: bindAddr("127.0.0.6"), Freebind: wrapperspb.Bool(true)}),
			`upstream_bind_config: field 2 of envoy.config.core.v3.BindConfig is not supported`},
		{"not an address", set("inbound|8080", &corev3.BindConfig{SourceAddress: bindAddr("localhost")}),
			`upstream_bind_config: source_address: address "localhost" is not an IP address`},
		{"outbound passthrough", set(model.PassthroughCluster, inboundBind()),
			`xds: cluster "PassthroughCluster": field upstream_bind_config is not supported`},
	})
}

func bindAddr(ip string) *corev3.SocketAddress {
	return &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{}}
}

func originalDstInbound(name string, b *corev3.BindConfig) *clusterv3.Cluster {
	c := staticCluster(name, "", 0)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	c.UpstreamBindConfig = b
	return c
}
