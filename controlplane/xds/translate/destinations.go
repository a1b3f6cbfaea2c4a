package translate

import (
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/api/names"
)

// destSet is a shared set's in-mesh chains as destination listeners, one
// per (address, port) leaf (names.DestinationListener; bind_to_port
// false), sorted by name, and their membership (SharedResources). A
// sidecar that looks destinations up (xds.Node.DestinationListeners) is
// sent these instead of the chains in listener "outbound": Envoy's
// original-destination hand-off, each listener holding the one chain of
// its leaf, matched by that address alone.
type destSet struct {
	listeners []types.Resource
	all       map[types.Resource]struct{}
	byName    map[string]types.Resource
	// routes are the route configurations each listener's chain names
	// (by listener name), meshRoutes all of them: a node generated only
	// some destination listeners gets only their route configurations of
	// these (a snapshot's routes are exactly those its listeners name).
	routes     map[string][]string
	meshRoutes map[string]struct{}
}

// destinations returns sh's destination listeners, built on first use:
// most meshes have no sidecar that asks for them, and they are a listener
// per leaf (the ClusterIP's and every injected endpoint's).
func (sh *sharedSet) destinations() *destSet {
	sh.destOnce.Do(func() { sh.dest.Store(destinationsOf(sh.chains)) })
	return sh.dest.Load()
}

func destinationsOf(chains []*listenerv3.FilterChain) *destSet {
	d := &destSet{all: map[types.Resource]struct{}{}, byName: map[string]types.Resource{},
		routes: map[string][]string{}, meshRoutes: map[string]struct{}{}}
	for _, fc := range chains {
		rds := chainRoutes(fc)
		for _, r := range rds {
			d.meshRoutes[r] = struct{}{}
		}
		m := fc.GetFilterChainMatch()
		port := m.GetDestinationPort().GetValue()
		for _, r := range m.GetPrefixRanges() {
			ip, err := netip.ParseAddr(r.GetAddressPrefix())
			if err != nil || port == 0 || port > 0xffff {
				continue // cannot be: meshChain writes one address and a port
			}
			ap := netip.AddrPortFrom(ip, uint16(port))
			// The chain's filters are shared (never modified); its match
			// names the leaf alone.
			leaf := &listenerv3.FilterChain{Name: fc.GetName(), Filters: fc.GetFilters(),
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: m.GetDestinationPort(), PrefixRanges: []*corev3.CidrRange{r}}}
			l := &listenerv3.Listener{
				Name:             names.DestinationListener(ap),
				Address:          socketAddress(ip.String(), port),
				BindToPort:       wrapperspb.Bool(false),
				TrafficDirection: corev3.TrafficDirection_OUTBOUND,
				FilterChains:     []*listenerv3.FilterChain{leaf},
			}
			d.listeners = append(d.listeners, l)
			d.all[l] = struct{}{}
			d.byName[l.Name] = l
			if len(rds) > 0 {
				d.routes[l.Name] = rds
			}
		}
	}
	slices.SortFunc(d.listeners, func(a, b types.Resource) int {
		return strings.Compare(a.(*listenerv3.Listener).GetName(), b.(*listenerv3.Listener).GetName())
	})
	return d
}

// chainRoutes names the route configurations fc's http_connection_manager
// filters take from RDS.
func chainRoutes(fc *listenerv3.FilterChain) []string {
	var out []string
	for _, f := range fc.GetFilters() {
		tc := f.GetTypedConfig()
		if tc == nil || !strings.HasSuffix(tc.GetTypeUrl(), "/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager") {
			continue
		}
		var hcm hcmv3.HttpConnectionManager
		if err := tc.UnmarshalTo(&hcm); err == nil && hcm.GetRds().GetRouteConfigName() != "" {
			out = append(out, hcm.GetRds().GetRouteConfigName())
		}
	}
	return out
}
