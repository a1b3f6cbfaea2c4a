package xds

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/api/names"
	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	httpinspectorv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/listener/tls_inspector/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// The contract's listener addresses.
var (
	InboundAddr  = netip.MustParseAddrPort("0.0.0.0:15006")
	OutboundAddr = netip.MustParseAddrPort("127.0.0.1:15001")
)

// filter_metadata namespaces: which egress rule a chain or route is, and an
// inbound chain's mTLS mode (and why it denies everything, if it does).
const (
	EgressMetadataKey  = names.EgressMetadataKey
	InboundMetadataKey = names.InboundMetadataKey
)

func (b builder) listener(m proto.Message) (*model.Listener, error) {
	l, ok := m.(*listenerv3.Listener)
	if !ok {
		return nil, fmt.Errorf("resource is a %T", m)
	}
	out := &model.Listener{Name: l.GetName(), UseOriginalDst: l.GetUseOriginalDst().GetValue()}
	var want netip.AddrPort
	destination := false
	switch l.GetName() {
	case model.InboundListener:
		want = InboundAddr
	case model.OutboundListener:
		want = OutboundAddr
	default:
		var ok bool
		if want, ok = names.ParseDestinationListener(l.GetName()); !ok {
			return nil, fmt.Errorf("only listeners %q, %q and those of destinations (named by their address and port, as \"198.19.0.10:80\") are supported",
				model.InboundListener, model.OutboundListener)
		}
		destination = true
	}
	// stat_prefix and traffic_direction are cosmetic: accepted, ignored.
	fields := []string{"name", "address", "filter_chains", "default_filter_chain", "use_original_dst",
		"listener_filters", "stat_prefix", "traffic_direction", "bind_to_port"}
	if destination {
		// A destination's listener holds its in-mesh chains, nothing else:
		// what matches none of them is closed; it is handed connections, so
		// it does not hand them on (use_original_dst).
		fields = []string{"name", "address", "filter_chains", "listener_filters", "stat_prefix", "traffic_direction", "bind_to_port"}
	}
	if err := only(l, fields...); err != nil {
		return nil, err
	}
	if bind := l.GetBindToPort(); destination != (bind != nil && !bind.GetValue()) {
		if destination {
			return nil, errors.New("bind_to_port must be false: a destination's listener is handed connections by the outbound listener")
		}
		return nil, errors.New("bind_to_port false is supported only on a destination's listener")
	}
	var err error
	if out.Addr, err = socketAddress(l.GetAddress()); err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	if out.Addr != want {
		return nil, fmt.Errorf("address %s is not supported (want %s)", out.Addr, want)
	}
	for i, f := range l.GetListenerFilters() {
		if err := listenerFilter(f, out); err != nil {
			return nil, fmt.Errorf("listener filter %d: %w", i, err)
		}
	}
	if l.GetName() == model.OutboundListener && !out.UseOriginalDst {
		return nil, errors.New("use_original_dst must be true")
	}
	for i, fc := range l.GetFilterChains() {
		chain, err := b.filterChain(fc, out)
		if err == nil && destination && (chain.Egress != nil || chain.AccessLog) {
			err = errors.New("a destination's listener holds in-mesh chains only: no weft.egress metadata, no access log")
		}
		if err != nil {
			return nil, fmt.Errorf("filter chain %d%s: %w", i, quoted(fc.GetName()), err)
		}
		out.Chains = append(out.Chains, chain)
	}
	if dc := l.GetDefaultFilterChain(); dc != nil {
		if dc.GetFilterChainMatch() != nil {
			return nil, errors.New("default filter chain: filter_chain_match is not supported")
		}
		if out.Default, err = b.filterChain(dc, out); err != nil {
			return nil, fmt.Errorf("default filter chain%s: %w", quoted(dc.GetName()), err)
		}
	}
	if err := distinctMatches(out.Chains); err != nil {
		return nil, err
	}
	return out, nil
}

func quoted(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(" %q", s)
}

func listenerFilter(f *listenerv3.ListenerFilter, l *model.Listener) error {
	if err := only(f, "name", "typed_config"); err != nil {
		return err
	}
	kinds := map[string]proto.Message{
		"envoy.filters.listener.original_dst":   &origdstv3.OriginalDst{},
		"envoy.filters.listener.tls_inspector":  &tlsinspectorv3.TlsInspector{},
		"envoy.filters.listener.http_inspector": &httpinspectorv3.HttpInspector{},
	}
	name := f.GetName()
	if a := f.GetTypedConfig(); a != nil {
		for n, m := range kinds {
			if envoyName(m.ProtoReflect().Descriptor()) == typeName(a) {
				name = n
			}
		}
	}
	m, ok := kinds[name]
	if !ok {
		return fmt.Errorf("listener filter %q is not supported", f.GetName())
	}
	if a := f.GetTypedConfig(); a != nil {
		if err := unpack(a, m); err != nil {
			return err
		}
		if err := only(m); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	switch name {
	case "envoy.filters.listener.original_dst":
		l.UseOriginalDst = true
	case "envoy.filters.listener.tls_inspector":
		l.InspectTLS = true
	case "envoy.filters.listener.http_inspector":
		l.InspectHTTP = true
	}
	return nil
}

func (b builder) filterChain(fc *listenerv3.FilterChain, l *model.Listener) (*model.FilterChain, error) {
	if err := only(fc, "name", "filter_chain_match", "filters", "transport_socket", "metadata"); err != nil {
		return nil, err
	}
	out := &model.FilterChain{Name: fc.GetName()}
	var err error
	if out.Match, err = chainMatch(fc.GetFilterChainMatch(), l); err != nil {
		return nil, fmt.Errorf("filter_chain_match: %w", err)
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		if l.Name != model.InboundListener {
			return nil, errors.New("transport_socket is not supported on the outbound listener")
		}
		if out.TLS, err = b.downstreamTLS(ts); err != nil {
			return nil, fmt.Errorf("transport_socket: %w", err)
		}
	}
	if err := chainMeta(fc.GetMetadata(), out); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	if err := b.networkFilters(fc.GetFilters(), out, l.Name == model.InboundListener); err != nil {
		return nil, err
	}
	if l.Name == model.InboundListener {
		if err := inboundProtocol(out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// inboundProtocol: the sidecar serves peers' requests over HTTP/2 on mTLS
// only, on a chain that a client offering h2 (ALPN) reaches and that
// negotiates h2; and a chain that proxies connections must not negotiate
// h2, or a peer's requests would reach the app as raw HTTP/2 frames.
func inboundProtocol(fc *model.FilterChain) error {
	h2 := []string{alpnH2}
	if fc.Target.RouteConfig != "" {
		if fc.TLS == nil || !slices.Equal(fc.TLS.ALPN, h2) || fc.Match.TransportProtocol != "tls" || !slices.Equal(fc.Match.AppProtocols, h2) {
			return fmt.Errorf(`http_connection_manager on the %s listener needs filter_chain_match {transport_protocol: "tls", `+
				`application_protocols: ["h2"]} and a transport_socket with alpn_protocols ["h2"] (requests from peers are HTTP/2 on mTLS)`, model.InboundListener)
		}
		return nil
	}
	if fc.TLS != nil && slices.Contains(fc.TLS.ALPN, alpnH2) {
		return fmt.Errorf("transport_socket: alpn_protocols %q: %q is only for an http_connection_manager chain", fc.TLS.ALPN, alpnH2)
	}
	return nil
}

func chainMatch(m *listenerv3.FilterChainMatch, l *model.Listener) (model.ChainMatch, error) {
	var out model.ChainMatch
	if m == nil {
		return out, nil
	}
	if err := only(m, "destination_port", "prefix_ranges", "transport_protocol", "server_names", "application_protocols"); err != nil {
		return out, err
	}
	if p := m.GetDestinationPort(); p != nil {
		if p.GetValue() == 0 || p.GetValue() > 65535 {
			return out, fmt.Errorf("destination_port %d is not a port", p.GetValue())
		}
		out.DestPort = uint16(p.GetValue())
	}
	for i, r := range m.GetPrefixRanges() {
		p, err := cidr(r)
		if err != nil {
			return out, fmt.Errorf("prefix_ranges %d: %w", i, err)
		}
		out.Prefixes = append(out.Prefixes, p)
	}
	switch out.TransportProtocol = m.GetTransportProtocol(); out.TransportProtocol {
	case "", "raw_buffer":
	case "tls":
	default:
		return out, fmt.Errorf("transport_protocol %q is not supported", out.TransportProtocol)
	}
	for _, n := range m.GetServerNames() {
		if !validServerName(n) {
			return out, fmt.Errorf("server_names: %q is not a host name or *.suffix wildcard", n)
		}
		out.ServerNames = append(out.ServerNames, strings.ToLower(n))
	}
	out.AppProtocols = m.GetApplicationProtocols()
	if (out.TransportProtocol != "" || len(out.ServerNames) > 0) && !l.InspectTLS {
		return out, errors.New("transport_protocol and server_names need listener filter envoy.filters.listener.tls_inspector")
	}
	if len(out.AppProtocols) > 0 && !l.InspectTLS && !l.InspectHTTP {
		return out, errors.New("application_protocols need listener filter tls_inspector or http_inspector")
	}
	return out, nil
}

func cidr(r *corev3.CidrRange) (netip.Prefix, error) {
	if err := only(r, "address_prefix", "prefix_len"); err != nil {
		return netip.Prefix{}, err
	}
	ip, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q is not an IP address", r.GetAddressPrefix())
	}
	ip = ip.Unmap()
	bits := int(r.GetPrefixLen().GetValue()) // unset is 0, as in Envoy
	if bits > ip.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d is too long for %s", bits, ip)
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

func validServerName(n string) bool {
	n = strings.TrimPrefix(n, "*.")
	if n == "" || strings.ContainsAny(n, "*/: ") {
		return false
	}
	return !slices.Contains(strings.Split(n, "."), "")
}

// distinctMatches refuses two chains that would match the same connection,
// as Envoy does: the expansion of every match rule must be unique.
func distinctMatches(chains []*model.FilterChain) error {
	seen := map[string]int{}
	for i, fc := range chains {
		m := fc.Match
		prefixes := m.Prefixes
		if len(prefixes) == 0 {
			prefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
		}
		names, alpns := orEmpty(m.ServerNames), orEmpty(m.AppProtocols)
		for _, p := range prefixes {
			for _, n := range names {
				for _, a := range alpns {
					k := fmt.Sprintf("port %d, prefix %s, server name %q, transport %q, application protocol %q",
						m.DestPort, p, n, m.TransportProtocol, a)
					if j, dup := seen[k]; dup && j != i {
						return fmt.Errorf("filter chains %d and %d have the same match (%s)", j, i, k)
					}
					seen[k] = i
				}
			}
		}
	}
	return nil
}

func orEmpty(s []string) []string {
	if len(s) == 0 {
		return []string{""}
	}
	return s
}

// chainMeta reads a chain's filter_metadata: "weft.egress" {policy, rule,
// decision, outbound} and "weft.inbound" {mode, rejected}.
func chainMeta(md *corev3.Metadata, out *model.FilterChain) error {
	if md == nil {
		return nil
	}
	if err := only(md, "filter_metadata"); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(md.GetFilterMetadata())) {
		s := md.GetFilterMetadata()[k]
		var err error
		switch k {
		case EgressMetadataKey:
			out.Egress, err = egressMeta(s)
		case InboundMetadataKey:
			out.Inbound = &model.InboundMeta{}
			err = stringFields(s, map[string]*string{"mode": &out.Inbound.Mode, "rejected": &out.Inbound.Rejected})
			if err == nil && out.Inbound.Mode != "STRICT" && out.Inbound.Mode != "PERMISSIVE" {
				err = fmt.Errorf("mode %q is not STRICT or PERMISSIVE", out.Inbound.Mode)
			}
		default:
			err = errors.New("is not supported")
		}
		if err != nil {
			return fmt.Errorf("filter_metadata %q: %w", k, err)
		}
	}
	return nil
}

// egressMeta reads {"policy", "rule", "decision", "mode", "outbound",
// "service", "host"}.
func egressMeta(s *structpb.Struct) (*model.EgressMeta, error) {
	out := &model.EgressMeta{}
	if err := stringFields(s, map[string]*string{"policy": &out.Policy, "rule": &out.Rule,
		"decision": &out.Decision, "mode": &out.Mode, "outbound": &out.Outbound,
		"service": &out.Service, "host": &out.Host}); err != nil {
		return nil, err
	}
	if err := externalNameMeta(out.Service, out.Host); err != nil {
		return nil, err
	}
	if !slices.Contains([]string{"allow", "deny", "audit"}, out.Decision) {
		return nil, fmt.Errorf("decision %q is not allow, deny or audit", out.Decision)
	}
	if !slices.Contains([]string{"", "Enforce", "Audit"}, out.Mode) {
		return nil, fmt.Errorf("mode %q is not Enforce or Audit", out.Mode)
	}
	return out, nil
}

// externalNameMeta checks the "service" and "host" of egress metadata:
// both or neither; a Service "<ns>/<name>" and a host name (what the
// audit record carries as the Service and the destination's name).
func externalNameMeta(service, host string) error {
	if service == "" && host == "" {
		return nil
	}
	ns, name, ok := strings.Cut(service, "/")
	switch {
	case !ok || ns == "" || name == "" || strings.ContainsAny(name, "/ ") || strings.ContainsAny(ns, " "):
		return fmt.Errorf("service %q is not <namespace>/<name>", service)
	case strings.HasPrefix(host, "*.") || !validServerName(host):
		return fmt.Errorf("host %q (of service %q) is not a host name", host, service)
	}
	return nil
}

// stringFields copies a Struct's string fields into dst; other fields or
// kinds are errors.
func stringFields(s *structpb.Struct, dst map[string]*string) error {
	for _, k := range slices.Sorted(maps.Keys(s.GetFields())) {
		d, known := dst[k]
		sv, isString := s.GetFields()[k].GetKind().(*structpb.Value_StringValue)
		if !known || !isString {
			return fmt.Errorf("field %q is not supported (want string %s)", k, strings.Join(slices.Sorted(maps.Keys(dst)), ", "))
		}
		*d = sv.StringValue
	}
	return nil
}
