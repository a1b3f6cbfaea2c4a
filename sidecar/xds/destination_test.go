package xds

import (
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// toDestinations moves the outbound listener's in-mesh chains of r into
// one destination listener each, named by the chain's address and port,
// as the control plane sends them, and returns those addresses.
func toDestinations(t testing.TB, r envoySet) []netip.AddrPort {
	t.Helper()
	out := r[model.ListenerType][model.OutboundListener].(*listenerv3.Listener)
	var kept []*listenerv3.FilterChain
	var aps []netip.AddrPort
	for _, fc := range out.FilterChains {
		if !strings.HasPrefix(fc.GetName(), model.OnDemandPrefix) {
			kept = append(kept, fc)
			continue
		}
		m := fc.GetFilterChainMatch()
		ap := netip.AddrPortFrom(netip.MustParseAddr(m.GetPrefixRanges()[0].GetAddressPrefix()), uint16(m.GetDestinationPort().GetValue()))
		name := names.DestinationListener(ap)
		r[model.ListenerType][name] = &listenerv3.Listener{Name: name, Address: sockAddr(ap.Addr().String(), uint32(ap.Port())),
			BindToPort: wrapperspb.Bool(false), FilterChains: []*listenerv3.FilterChain{fc}}
		aps = append(aps, ap)
	}
	out.FilterChains = kept
	return aps
}

// TestDestinationListeners: a destination's listener (bind_to_port false,
// named by its address and port) holds its in-mesh chain; a connection to
// that address and port is matched in it (OutboundFor), any other in the
// outbound listener; its cluster is learnt on demand like one of the
// outbound listener's in-mesh chains.
func TestDestinationListeners(t *testing.T) {
	r := mesh{services: []string{"server.demo", "other.demo"}, httpEgress: true}.envoy(t)
	aps := toDestinations(t, r)
	if len(aps) != 2 {
		t.Fatalf("moved %d chains, want 2", len(aps))
	}
	res, err := r.subset()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Build(td, res)
	if err != nil {
		t.Fatalf("Build with destination listeners: %v", err)
	}
	if len(cfg.Destinations) != 2 {
		t.Fatalf("Destinations = %v, want 2", cfg.Destinations)
	}
	for i, ap := range aps {
		l := cfg.OutboundFor(ap)
		if l == nil || l == cfg.Outbound || l.Addr != ap || len(l.Chains) != 1 {
			t.Fatalf("OutboundFor(%s) = %+v, want its destination listener", ap, l)
		}
		want := []string{"outbound|80|server.demo", "outbound|80|other.demo"}[i]
		if fc := l.Match(ap, "raw_buffer", "", nil); fc == nil || fc.Target.Cluster != want {
			t.Errorf("a connection to %s matched %+v, want the chain to %s", ap, fc, want)
		}
		// The same address at another port is not the destination's.
		other := netip.AddrPortFrom(ap.Addr(), 8443)
		if l := cfg.OutboundFor(other); l != cfg.Outbound {
			t.Errorf("OutboundFor(%s) = %v, want the outbound listener", other, l.Name)
		}
	}
	for _, fc := range cfg.Outbound.Chains {
		if strings.HasPrefix(fc.Name, model.OnDemandPrefix) {
			t.Errorf("in-mesh chain %s left in the outbound listener", fc.Name)
		}
	}
	od := *cfg
	od.OnDemand = true
	if got := strings.Join(od.OnDemandClusters(), ","); got != "outbound|80|other.demo,outbound|80|server.demo" {
		t.Errorf("OnDemandClusters = %s, want both destinations' clusters", got)
	}
	if m := od.Missing(); len(m) != 0 {
		t.Errorf("on demand, Missing = %v", m)
	}
}

// TestDestinationListenerRefusals: what a destination's listener may not
// be is NACKed, each with its reason.
func TestDestinationListenerRefusals(t *testing.T) {
	const name = "198.19.96.1:80"
	valid := func(t testing.TB) envoySet {
		r := mesh{services: []string{"server.demo"}, httpEgress: true}.envoy(t)
		toDestinations(t, r)
		return r
	}
	dest := func(r envoySet) *listenerv3.Listener { return r[model.ListenerType][name].(*listenerv3.Listener) }
	rename := func(r envoySet, to string) {
		l := proto.Clone(dest(r)).(*listenerv3.Listener)
		delete(r[model.ListenerType], name)
		l.Name = to
		r[model.ListenerType][to] = l
	}
	checkRefusals(t, valid, []refusal{
		{"bind_to_port missing", func(r envoySet) { dest(r).BindToPort = nil }, "bind_to_port must be false"},
		{"bind_to_port true", func(r envoySet) { dest(r).BindToPort = wrapperspb.Bool(true) }, "bind_to_port must be false"},
		{"bind_to_port false on outbound", func(r envoySet) {
			r[model.ListenerType][model.OutboundListener].(*listenerv3.Listener).BindToPort = wrapperspb.Bool(false)
		}, "bind_to_port false is supported only on a destination's listener"},
		{"address not its name's", func(r envoySet) { dest(r).Address = sockAddr("198.19.96.2", 80) }, "address 198.19.96.2:80 is not supported (want 198.19.96.1:80)"},
		{"name not canonical", func(r envoySet) { rename(r, "198.19.96.01:80") }, "only listeners"},
		{"name without a port", func(r envoySet) { rename(r, "198.19.96.1") }, "only listeners"},
		{"use_original_dst", func(r envoySet) { dest(r).UseOriginalDst = wrapperspb.Bool(true) }, "field use_original_dst is not supported"},
		{"default chain", func(r envoySet) {
			dest(r).DefaultFilterChain = proto.Clone(dest(r).FilterChains[0]).(*listenerv3.FilterChain)
			dest(r).DefaultFilterChain.FilterChainMatch = nil
		}, "field default_filter_chain is not supported"},
		{"egress chain", func(r envoySet) {
			dest(r).FilterChains[0].Metadata = egressMetadata("allow")
		}, "a destination's listener holds in-mesh chains only"},
		{"transport socket", func(r envoySet) {
			dest(r).FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
		}, "transport_socket is not supported"},
	})
}
