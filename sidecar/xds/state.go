package xds

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	clusterv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/cluster/v3"
	listenerv3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/listener/v3"
	hcmv3 "github.com/weftmesh/weft/sidecar/internal/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// subscribeOrder is the order of the first requests on a stream, Envoy's:
// clusters before their endpoints, listeners before their routes.
var subscribeOrder = []string{model.ClusterType, model.EndpointType, model.ListenerType, model.RouteType, model.SecretType}

// subscriptions is what one stream (SotW or delta) asked for, by type URL:
// the names last requested and every name ever requested, which tells a
// late answer to an earlier request from a resource never asked for.
type subscriptions struct {
	names map[string][]string // nil: never requested
	ever  map[string]map[string]bool
}

func newSubscriptions() subscriptions {
	return subscriptions{names: map[string][]string{}, ever: map[string]map[string]bool{}}
}

// set records names as what is now requested of type t.
func (s subscriptions) set(t string, names []string) {
	s.names[t] = names
	if s.ever[t] == nil {
		s.ever[t] = map[string]bool{}
	}
	for _, n := range names {
		s.ever[t][n] = true
	}
}

// late reports whether resource name of type t answers an earlier request:
// endpoints, routes and (on demand) clusters asked for once by name and no
// longer. Such a resource is dropped, not applied.
func (s subscriptions) late(t, name string) bool {
	return s.ever[t][name] && !slices.Contains(s.names[t], name)
}

// entry is one accepted resource and its version (delta; SotW leaves it empty).
type entry struct {
	msg     proto.Message
	version string
}

// state is the accepted resources, by type URL and name. Never modified in
// place: apply builds a new one.
type state map[string]map[string]entry

func (s state) resources() Resources {
	r := make(Resources, len(s))
	for t, byName := range s {
		r[t] = make(map[string]proto.Message, len(byName))
		for n, e := range byName {
			r[t][n] = e.msg
		}
	}
	return r
}

func (s state) versions(t string) map[string]string {
	v := make(map[string]string, len(s[t]))
	for n, e := range s[t] {
		v[n] = e.version
	}
	return v
}

// equal reports whether s and o hold the same resources at the same versions.
func (s state) equal(o state) bool {
	for _, t := range subscribeOrder {
		if len(s[t]) != len(o[t]) {
			return false
		}
		for n, e := range s[t] {
			f, ok := o[t][n]
			if !ok || e.version != f.version || !proto.Equal(e.msg, f.msg) {
				return false
			}
		}
	}
	return true
}

// update is one response: resources to add or replace, names to remove,
// or (full) the whole state of the type.
type update struct {
	typeURL string
	version string
	upsert  map[string]entry
	removed []string
	full    bool
}

// with returns s with u applied. Endpoints and routes nothing references
// any more after a cluster or listener update are dropped, as Envoy drops
// them with their cluster or listener.
func (s state) with(u update) state {
	next := maps.Clone(s)
	if next == nil {
		next = state{}
	}
	byName := map[string]entry{}
	if !u.full {
		byName = maps.Clone(s[u.typeURL])
		if byName == nil {
			byName = map[string]entry{}
		}
	}
	for _, n := range u.removed {
		delete(byName, n)
	}
	maps.Copy(byName, u.upsert)
	next[u.typeURL] = byName
	if u.typeURL == model.ClusterType || u.typeURL == model.ListenerType {
		eds, rds := next.references()
		next[model.EndpointType] = keep(next[model.EndpointType], eds)
		next[model.RouteType] = keep(next[model.RouteType], rds)
	}
	return next
}

func keep(byName map[string]entry, names map[string]bool) map[string]entry {
	out := make(map[string]entry, len(byName))
	for n, e := range byName {
		if names[n] {
			out[n] = e
		}
	}
	return out
}

// references returns the EDS cluster names and the RDS names the clusters
// and listeners of s refer to. Malformed filters are skipped: Build reports
// them.
func (s state) references() (eds, rds map[string]bool) {
	eds, rds = map[string]bool{}, map[string]bool{}
	for n, e := range s[model.ClusterType] {
		if c, ok := e.msg.(*clusterv3.Cluster); ok && c.GetType() == clusterv3.Cluster_EDS {
			eds[n] = true
		}
	}
	for _, e := range s[model.ListenerType] {
		l, ok := e.msg.(*listenerv3.Listener)
		if !ok {
			continue
		}
		chains := append([]*listenerv3.FilterChain{l.GetDefaultFilterChain()}, l.GetFilterChains()...)
		for _, fc := range chains {
			for _, f := range fc.GetFilters() {
				var h hcmv3.HttpConnectionManager
				if a := f.GetTypedConfig(); typeName(a) == envoyName(h.ProtoReflect().Descriptor()) {
					// Not a.UnmarshalTo: the Any names Envoy's type, h is the subset's.
					if proto.Unmarshal(a.GetValue(), &h) == nil && h.GetRds() != nil {
						rds[h.GetRds().GetRouteConfigName()] = true
					}
				}
			}
		}
	}
	return eds, rds
}
