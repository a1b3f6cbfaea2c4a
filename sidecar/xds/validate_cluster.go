package xds

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	clusterv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/cluster/v3"
	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	endpointv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/endpoint/v3"
	tlsv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/upstreams/http/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// defaultConnectTimeout is Envoy's default for connect_timeout.
const defaultConnectTimeout = 5 * time.Second

// clusterFields every cluster may set; alt_stat_name is cosmetic and ignored.
var clusterFields = []string{"name", "type", "connect_timeout", "lb_policy", "alt_stat_name"}

func (b builder) cluster(m proto.Message) (*model.Cluster, error) {
	c, ok := m.(*clusterv3.Cluster)
	if !ok {
		return nil, fmt.Errorf("resource is a %T", m)
	}
	out := &model.Cluster{Name: c.GetName(), ConnectTimeout: defaultConnectTimeout}
	if d := c.GetConnectTimeout(); d != nil {
		if out.ConnectTimeout = d.AsDuration(); out.ConnectTimeout <= 0 {
			return nil, errors.New("connect_timeout must be positive")
		}
	}
	typ := c.GetType()
	wantType := func(ts ...clusterv3.Cluster_DiscoveryType) error {
		for _, t := range ts {
			if typ == t {
				return nil
			}
		}
		return fmt.Errorf("type %s is not supported for this cluster (want %s)", typ, ts[0])
	}
	switch name := c.GetName(); {
	case name == model.BlackHoleCluster:
		out.Kind = model.KindBlackhole
		if err := only(c, append(clusterFields, "load_assignment")...); err != nil {
			return nil, err
		}
		if err := wantType(clusterv3.Cluster_STATIC); err != nil {
			return nil, err
		}
		if la := c.GetLoadAssignment(); la != nil {
			if eps, err := b.loadAssignment(la); err != nil {
				return nil, fmt.Errorf("load_assignment: %w", err)
			} else if len(eps) > 0 {
				return nil, errors.New("load_assignment: must have no endpoints")
			}
		}
		return out, lbPolicy(c, out, clusterv3.Cluster_ROUND_ROBIN)
	case name == model.PassthroughCluster:
		out.Kind = model.KindOriginalDst
		if err := only(c, clusterFields...); err != nil {
			return nil, err
		}
		if err := wantType(clusterv3.Cluster_ORIGINAL_DST); err != nil {
			return nil, err
		}
		return out, lbPolicy(c, out, clusterv3.Cluster_CLUSTER_PROVIDED, clusterv3.Cluster_ROUND_ROBIN)
	case name == model.InboundPassthroughCluster:
		out.Kind = model.KindOriginalDst
		if err := only(c, append(clusterFields, "upstream_bind_config")...); err != nil {
			return nil, err
		}
		if err := wantType(clusterv3.Cluster_ORIGINAL_DST); err != nil {
			return nil, err
		}
		if err := bindConfig(c, out); err != nil {
			return nil, err
		}
		return out, lbPolicy(c, out, clusterv3.Cluster_CLUSTER_PROVIDED, clusterv3.Cluster_ROUND_ROBIN)
	case name == model.ControlPlaneCluster:
		return b.controlPlaneCluster(c, out, wantType)
	case strings.HasPrefix(name, "inbound|"):
		out.Kind = model.KindStatic
		port, err := strconv.ParseUint(strings.TrimPrefix(name, "inbound|"), 10, 16)
		if err != nil || port == 0 {
			return nil, errors.New(`name must be "inbound|<port>"`)
		}
		if c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
			// The app's port on the pod's own address: the original
			// destination, which the inbound chain matched on port.
			out.Kind = model.KindOriginalDst
			if err := only(c, append(clusterFields, "upstream_bind_config", "typed_extension_protocol_options")...); err != nil {
				return nil, err
			}
			if err := bindConfig(c, out); err != nil {
				return nil, err
			}
			if out.HTTP, err = httpProtocol(c, model.HTTP1, model.HTTP2); err != nil {
				return nil, err
			}
			return out, lbPolicy(c, out, clusterv3.Cluster_CLUSTER_PROVIDED, clusterv3.Cluster_ROUND_ROBIN)
		}
		if err := only(c, append(clusterFields, "load_assignment", "upstream_bind_config", "typed_extension_protocol_options")...); err != nil {
			return nil, err
		}
		if out.HTTP, err = httpProtocol(c, model.HTTP1, model.HTTP2); err != nil {
			return nil, err
		}
		if err := wantType(clusterv3.Cluster_STATIC); err != nil {
			return nil, err
		}
		if out.StaticEndpoints, err = b.loadAssignment(c.GetLoadAssignment()); err != nil {
			return nil, fmt.Errorf("load_assignment: %w", err)
		}
		want := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
		if len(out.StaticEndpoints) != 1 || out.StaticEndpoints[0].Addr != want {
			return nil, fmt.Errorf("load_assignment: must be the one endpoint %s", want)
		}
		if err := bindConfig(c, out); err != nil {
			return nil, err
		}
		return out, lbPolicy(c, out, clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST)
	case strings.HasPrefix(name, "outbound|"):
		return b.edsCluster(c, out, wantType)
	default:
		return nil, errors.New(`name is not in the contract (inbound|<port>, outbound|<port>|<service>.<namespace>, ` +
			`PassthroughCluster, InboundPassthroughCluster, BlackHoleCluster, weft-controlplane)`)
	}
}

func (b builder) edsCluster(c *clusterv3.Cluster, out *model.Cluster, wantType func(...clusterv3.Cluster_DiscoveryType) error) (*model.Cluster, error) {
	out.Kind = model.KindEDS
	if parts := strings.Split(c.GetName(), "|"); len(parts) != 3 || !validPort(parts[1]) || !strings.Contains(parts[2], ".") {
		return nil, errors.New(`name must be "outbound|<port>|<service>.<namespace>"`)
	}
	if err := only(c, append(clusterFields, "eds_cluster_config", "transport_socket",
		"typed_extension_protocol_options", "outlier_detection", "circuit_breakers")...); err != nil {
		return nil, err
	}
	if err := wantType(clusterv3.Cluster_EDS); err != nil {
		return nil, err
	}
	eds := c.GetEdsClusterConfig()
	if err := only(eds, "eds_config", "service_name"); err != nil {
		return nil, fmt.Errorf("eds_cluster_config: %w", err)
	}
	if sn := eds.GetServiceName(); sn != "" && sn != c.GetName() {
		return nil, fmt.Errorf("eds_cluster_config.service_name %q must be empty or the cluster name", sn)
	}
	if eds.GetEdsConfig() == nil {
		return nil, errors.New("eds_cluster_config.eds_config is required")
	}
	if err := adsSource(eds.GetEdsConfig()); err != nil {
		return nil, fmt.Errorf("eds_cluster_config.eds_config: %w", err)
	}
	if c.GetTransportSocket() == nil {
		return nil, errors.New("transport_socket is required: mesh traffic is mTLS")
	}
	var err error
	if out.UpstreamTLS, err = b.upstreamTLS(c.GetTransportSocket()); err != nil {
		return nil, fmt.Errorf("transport_socket: %w", err)
	}
	if out.HTTP, err = httpProtocol(c, model.HTTP2); err != nil {
		return nil, err
	}
	// The peer's inbound listener tells its h2 chain from its L4 chain by
	// ALPN: requests must offer h2, connections must not.
	h2 := slices.Contains(out.UpstreamTLS.ALPN, alpnH2)
	switch {
	case out.HTTP == model.HTTP2 && !slices.Equal(out.UpstreamTLS.ALPN, []string{alpnH2}):
		return nil, fmt.Errorf("transport_socket: common_tls_context.alpn_protocols %q: an HTTP/2 cluster must offer exactly [%q]", out.UpstreamTLS.ALPN, alpnH2)
	case out.HTTP == model.HTTPNone && h2:
		return nil, fmt.Errorf("transport_socket: common_tls_context.alpn_protocols %q: %q needs typed_extension_protocol_options explicit http2_protocol_options", out.UpstreamTLS.ALPN, alpnH2)
	}
	if od := c.GetOutlierDetection(); od != nil {
		if out.HTTP == model.HTTPNone {
			return nil, errors.New("outlier_detection is supported on HTTP clusters only (typed_extension_protocol_options)")
		}
		if out.Outlier, err = outlierDetection(od); err != nil {
			return nil, fmt.Errorf("outlier_detection: %w", err)
		}
	}
	if cb := c.GetCircuitBreakers(); cb != nil {
		if out.HTTP == model.HTTPNone {
			return nil, errors.New("circuit_breakers is supported on HTTP clusters only (typed_extension_protocol_options)")
		}
		if out.RetryBudget, err = retryBudget(cb); err != nil {
			return nil, fmt.Errorf("circuit_breakers: %w", err)
		}
	}
	return out, lbPolicy(c, out, clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST)
}

// alpnH2 is the ALPN protocol of requests between sidecars.
const alpnH2 = "h2"

// httpProtocolOptionsName is the typed_extension_protocol_options key of
// the one extension the sidecar reads.
const httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// httpProtocol reads typed_extension_protocol_options: nothing (HTTPNone),
// or HttpProtocolOptions with explicit_http_config of one of allowed, no
// settings.
func httpProtocol(c *clusterv3.Cluster, allowed ...model.HTTPProtocol) (model.HTTPProtocol, error) {
	opts := c.GetTypedExtensionProtocolOptions()
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		if k != httpProtocolOptionsName {
			return model.HTTPNone, fmt.Errorf("typed_extension_protocol_options %q is not supported", k)
		}
	}
	a, ok := opts[httpProtocolOptionsName]
	if !ok {
		return model.HTTPNone, nil
	}
	p, err := explicitHTTP(a)
	if err != nil {
		return model.HTTPNone, fmt.Errorf("typed_extension_protocol_options %q: %w", httpProtocolOptionsName, err)
	}
	if !slices.Contains(allowed, p) {
		return model.HTTPNone, fmt.Errorf("typed_extension_protocol_options %q: %s is not supported for this cluster", httpProtocolOptionsName, p)
	}
	return p, nil
}

func explicitHTTP(a *anypb.Any) (model.HTTPProtocol, error) {
	var hpo upstreamhttpv3.HttpProtocolOptions
	if err := unpack(a, &hpo); err != nil {
		return model.HTTPNone, err
	}
	if err := only(&hpo, "explicit_http_config"); err != nil {
		return model.HTTPNone, err
	}
	switch pc := hpo.GetExplicitHttpConfig().GetProtocolConfig().(type) {
	case *upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
		if err := only(pc.HttpProtocolOptions); err != nil {
			return model.HTTPNone, fmt.Errorf("explicit_http_config.http_protocol_options: %w", err)
		}
		return model.HTTP1, nil
	case *upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
		if err := only(pc.Http2ProtocolOptions); err != nil {
			return model.HTTPNone, fmt.Errorf("explicit_http_config.http2_protocol_options: %w", err)
		}
		return model.HTTP2, nil
	}
	return model.HTTPNone, errors.New("explicit_http_config: http_protocol_options or http2_protocol_options is required")
}

// Envoy's defaults of outlier detection and of a retry budget.
const (
	defaultConsecutive5xx      = 5
	defaultOutlierInterval     = 10 * time.Second
	defaultBaseEjectionTime    = 30 * time.Second
	defaultMaxEjectionTime     = 300 * time.Second
	defaultMaxEjectionPercent  = 10
	defaultBudgetPercent       = 20.0
	defaultMinRetryConcurrency = 3
)

// outlierDetection: consecutive 5xx ejection only, Envoy's defaults for
// what is unset.
func outlierDetection(od *clusterv3.OutlierDetection) (*model.OutlierDetection, error) {
	if err := only(od, "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent"); err != nil {
		return nil, err
	}
	out := &model.OutlierDetection{
		Consecutive5xx:     defaultConsecutive5xx,
		Interval:           defaultOutlierInterval,
		BaseEjectionTime:   defaultBaseEjectionTime,
		MaxEjectionTime:    defaultMaxEjectionTime,
		MaxEjectionPercent: defaultMaxEjectionPercent,
	}
	if v := od.GetConsecutive_5Xx(); v != nil {
		if out.Consecutive5xx = v.GetValue(); out.Consecutive5xx == 0 {
			return nil, errors.New("consecutive_5xx must be at least 1")
		}
	}
	// conform checked the durations are valid and positive.
	if d := od.GetInterval(); d != nil {
		out.Interval = d.AsDuration()
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		out.BaseEjectionTime = d.AsDuration()
	}
	if d := od.GetMaxEjectionTime(); d != nil {
		out.MaxEjectionTime = d.AsDuration()
	}
	if v := od.GetMaxEjectionPercent(); v != nil {
		out.MaxEjectionPercent = v.GetValue() // conform: at most 100
	}
	if out.MaxEjectionTime < out.BaseEjectionTime {
		return nil, fmt.Errorf("max_ejection_time %s is less than base_ejection_time %s", out.MaxEjectionTime, out.BaseEjectionTime)
	}
	return out, nil
}

// retryBudget: at most one threshold (the default priority's), holding at
// most a retry budget, Envoy's defaults for what is unset. No threshold, or
// one without a budget: nil (Envoy's default max_retries applies).
func retryBudget(cb *clusterv3.CircuitBreakers) (*model.RetryBudget, error) {
	if err := only(cb, "thresholds"); err != nil {
		return nil, err
	}
	th := cb.GetThresholds()
	if len(th) > 1 {
		return nil, fmt.Errorf("thresholds: %d thresholds, at most one (the default priority's) is supported", len(th))
	}
	if len(th) == 0 {
		return nil, nil
	}
	if err := only(th[0], "retry_budget"); err != nil {
		return nil, fmt.Errorf("thresholds 0: %w", err)
	}
	rb := th[0].GetRetryBudget()
	if rb == nil {
		return nil, nil
	}
	if err := only(rb, "budget_percent", "min_retry_concurrency"); err != nil {
		return nil, fmt.Errorf("thresholds 0: retry_budget: %w", err)
	}
	out := &model.RetryBudget{BudgetPercent: defaultBudgetPercent, MinRetryConcurrency: defaultMinRetryConcurrency}
	if p := rb.GetBudgetPercent(); p != nil {
		if err := only(p, "value"); err != nil {
			return nil, fmt.Errorf("thresholds 0: retry_budget.budget_percent: %w", err)
		}
		out.BudgetPercent = p.GetValue() // conform: in [0, 100]
	}
	if v := rb.GetMinRetryConcurrency(); v != nil {
		out.MinRetryConcurrency = v.GetValue()
	}
	return out, nil
}

// controlPlaneCluster accepts the access-log target. The sidecar sends on
// its existing control-plane connection, so address, DNS, HTTP/2 and TLS
// settings are checked for shape (within the subset, valid for Envoy) and
// otherwise ignored.
func (b builder) controlPlaneCluster(c *clusterv3.Cluster, out *model.Cluster, wantType func(...clusterv3.Cluster_DiscoveryType) error) (*model.Cluster, error) {
	out.Kind = model.KindControlPlane
	if err := only(c, append(clusterFields, "load_assignment", "http2_protocol_options",
		"typed_extension_protocol_options", "dns_lookup_family", "transport_socket")...); err != nil {
		return nil, err
	}
	if err := wantType(clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS); err != nil {
		return nil, err
	}
	// HTTP/2 to the control plane is the sidecar's own connection: the
	// cluster's HTTP stays HTTPNone (it carries no routed requests).
	if _, err := httpProtocol(c, model.HTTP2); err != nil {
		return nil, err
	}
	if ts := c.GetTransportSocket(); ts != nil {
		// Ignored, but it must be one the sidecar could read: a TLS context
		// of the subset, which conform has checked as Envoy would.
		if err := transportSocket(ts, &tlsv3.UpstreamTlsContext{}); err != nil {
			return nil, fmt.Errorf("transport_socket: %w", err)
		}
	}
	la := c.GetLoadAssignment()
	if err := only(la, "cluster_name", "endpoints"); err != nil {
		return nil, fmt.Errorf("load_assignment: %w", err)
	}
	for _, lle := range la.GetEndpoints() {
		for _, lbe := range lle.GetLbEndpoints() {
			if sa := lbe.GetEndpoint().GetAddress().GetSocketAddress(); sa == nil || sa.GetAddress() == "" || sa.GetPortValue() == 0 {
				return nil, errors.New("load_assignment: endpoints need a socket address with host and port")
			}
		}
	}
	return out, lbPolicy(c, out, clusterv3.Cluster_ROUND_ROBIN)
}

func lbPolicy(c *clusterv3.Cluster, out *model.Cluster, allowed ...clusterv3.Cluster_LbPolicy) error {
	p := c.GetLbPolicy()
	for _, a := range allowed {
		if p == a {
			if p == clusterv3.Cluster_LEAST_REQUEST {
				out.LB = model.LeastRequest
			}
			return nil
		}
	}
	return fmt.Errorf("lb_policy %s is not supported for this cluster", p)
}

func validPort(s string) bool {
	p, err := strconv.ParseUint(s, 10, 16)
	return err == nil && p > 0
}

// loadAssignment reads a ClusterLoadAssignment (EDS, or a STATIC cluster's).
func (b builder) loadAssignment(m proto.Message) ([]model.Endpoint, error) {
	cla, ok := m.(*endpointv3.ClusterLoadAssignment)
	if !ok {
		return nil, fmt.Errorf("resource is a %T", m)
	}
	if err := only(cla, "cluster_name", "endpoints"); err != nil {
		return nil, err
	}
	eps := []model.Endpoint{}
	for i, lle := range cla.GetEndpoints() {
		if err := only(lle, "locality", "lb_endpoints"); err != nil {
			return nil, fmt.Errorf("endpoints %d: %w", i, err)
		}
		for j, lbe := range lle.GetLbEndpoints() {
			ep, err := lbEndpoint(lbe)
			if err != nil {
				return nil, fmt.Errorf("endpoints %d lb_endpoints %d: %w", i, j, err)
			}
			eps = append(eps, ep)
		}
	}
	return eps, nil
}

func lbEndpoint(lbe *endpointv3.LbEndpoint) (model.Endpoint, error) {
	if err := only(lbe, "endpoint", "health_status"); err != nil {
		return model.Endpoint{}, err
	}
	var ep model.Endpoint
	switch h := lbe.GetHealthStatus(); h {
	case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
		ep.Health = model.Healthy
	case corev3.HealthStatus_DRAINING:
		ep.Health = model.Draining
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_TIMEOUT:
		ep.Health = model.Unhealthy
	default:
		return model.Endpoint{}, fmt.Errorf("health_status %s is not supported", h)
	}
	if err := only(lbe.GetEndpoint(), "address"); err != nil {
		return model.Endpoint{}, fmt.Errorf("endpoint: %w", err)
	}
	var err error
	ep.Addr, err = socketAddress(lbe.GetEndpoint().GetAddress())
	if err != nil {
		return model.Endpoint{}, fmt.Errorf("endpoint.address: %w", err)
	}
	return ep, nil
}

// socketAddress reads a TCP socket address with an IP literal.
func socketAddress(a *corev3.Address) (netip.AddrPort, error) {
	if err := only(a, "socket_address"); err != nil {
		return netip.AddrPort{}, err
	}
	sa := a.GetSocketAddress()
	if err := only(sa, "address", "port_value", "protocol"); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socket_address: %w", err)
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return netip.AddrPort{}, fmt.Errorf("socket_address: protocol %s is not supported", sa.GetProtocol())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("socket_address: address %q is not an IP address", sa.GetAddress())
	}
	if sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, fmt.Errorf("socket_address: port_value %d is not supported", sa.GetPortValue())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}

// bindConfig reads an inbound cluster's upstream_bind_config into
// out.SourceAddrs: source_address and at most one extra_source_addresses
// entry of the other IP version, each 127.0.0.6 or ::6 with port 0.
func bindConfig(c *clusterv3.Cluster, out *model.Cluster) error {
	bc := c.GetUpstreamBindConfig()
	if bc == nil {
		return nil
	}
	if err := only(bc, "source_address", "extra_source_addresses"); err != nil {
		return fmt.Errorf("upstream_bind_config: %w", err)
	}
	if bc.GetSourceAddress() == nil {
		return errors.New("upstream_bind_config: source_address is required")
	}
	addrs := []*corev3.SocketAddress{bc.GetSourceAddress()}
	for i, e := range bc.GetExtraSourceAddresses() {
		if err := only(e, "address"); err != nil {
			return fmt.Errorf("upstream_bind_config: extra_source_addresses %d: %w", i, err)
		}
		if e.GetAddress() == nil {
			return fmt.Errorf("upstream_bind_config: extra_source_addresses %d: address is required", i)
		}
		addrs = append(addrs, e.GetAddress())
	}
	for i, sa := range addrs {
		where := "source_address"
		if i > 0 {
			where = fmt.Sprintf("extra_source_addresses %d: address", i-1)
		}
		if err := only(sa, "address", "port_value", "protocol"); err != nil {
			return fmt.Errorf("upstream_bind_config: %s: %w", where, err)
		}
		ip, err := netip.ParseAddr(sa.GetAddress())
		switch {
		case sa.GetProtocol() != corev3.SocketAddress_TCP:
			return fmt.Errorf("upstream_bind_config: %s: protocol %s is not supported", where, sa.GetProtocol())
		case err != nil || ip.Zone() != "":
			return fmt.Errorf("upstream_bind_config: %s: address %q is not an IP address", where, sa.GetAddress())
		case sa.GetPortValue() != 0:
			return fmt.Errorf("upstream_bind_config: %s: port_value must be 0", where)
		case ip != model.InboundSourceIPv4 && ip != model.InboundSourceIPv6:
			return fmt.Errorf("upstream_bind_config: %s: %s is not %s or %s, the sources the capture rules exempt",
				where, ip, model.InboundSourceIPv4, model.InboundSourceIPv6)
		}
		for _, have := range out.SourceAddrs {
			if have.Is4() == ip.Is4() {
				return fmt.Errorf("upstream_bind_config: %s: a second source address of the same IP version (%s, %s)", where, have, ip)
			}
		}
		out.SourceAddrs = append(out.SourceAddrs, ip)
	}
	return nil
}
