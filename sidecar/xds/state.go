package xds

import (
	"crypto/sha256"
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
	msg     proto.Message // nil for a listener once built (built)
	version string
	built   *builtListener
}

// builtListener is what the client keeps of an accepted listener instead
// of its decoded resource, which (a chain per Service address and port) is
// most of what a sidecar holds: the model it built, which the next
// configurations reuse, the route configurations it names (references),
// and a digest of its encoding (equal).
type builtListener struct {
	l   *model.Listener
	rds []string
	sum [sha256.Size]byte
}

// state is the accepted resources, by type URL and name. Never modified in
// place: apply builds a new one.
type state map[string]map[string]entry

// resources returns the decoded resources of s: all but the listeners
// already built (builtListeners).
func (s state) resources() Resources {
	r := make(Resources, len(s))
	for t, byName := range s {
		r[t] = make(map[string]proto.Message, len(byName))
		for n, e := range byName {
			if e.msg != nil {
				r[t][n] = e.msg
			}
		}
	}
	return r
}

// builtListeners returns the listeners of s already built, by name.
func (s state) builtListeners() map[string]*model.Listener {
	out := map[string]*model.Listener{}
	for n, e := range s[model.ListenerType] {
		if e.built != nil {
			out[n] = e.built.l
		}
	}
	return out
}

// compact returns s with each listener that cfg (built from s) holds
// kept as built instead of decoded. s is not modified.
func (s state) compact(cfg *model.Config) state {
	var fresh []string
	for n, e := range s[model.ListenerType] {
		if e.msg != nil {
			fresh = append(fresh, n)
		}
	}
	if len(fresh) == 0 {
		return s
	}
	out := maps.Clone(s)
	out[model.ListenerType] = maps.Clone(s[model.ListenerType])
	for _, n := range fresh {
		e := s[model.ListenerType][n]
		l := cfg.Listener(n)
		if l == nil {
			continue // cannot be: Build put every listener in cfg by its name
		}
		out[model.ListenerType][n] = entry{version: e.version,
			built: &builtListener{l: l, rds: listenerRDS(e.msg), sum: digest(e.msg)}}
	}
	return out
}

// digest is the SHA-256 of m's deterministic encoding.
func digest(m proto.Message) [sha256.Size]byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return sha256.Sum256(b)
}

// same reports whether e and f hold the same resource at the same version.
func (e entry) same(f entry) bool {
	if e.version != f.version {
		return false
	}
	if e.msg != nil && f.msg != nil {
		return proto.Equal(e.msg, f.msg)
	}
	return e.sum() == f.sum()
}

func (e entry) sum() [sha256.Size]byte {
	if e.built != nil {
		return e.built.sum
	}
	return digest(e.msg)
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
			if f, ok := o[t][n]; !ok || !e.same(f) {
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
		names := listenerRDS(e.msg) // nil once built
		if e.built != nil {
			names = e.built.rds
		}
		for _, n := range names {
			rds[n] = true
		}
	}
	return eds, rds
}

// listenerRDS returns the route configurations m's HTTP connection
// managers name; nil if m is not a listener. Malformed filters are
// skipped: Build reports them.
func listenerRDS(m proto.Message) []string {
	l, ok := m.(*listenerv3.Listener)
	if !ok {
		return nil
	}
	var names []string
	chains := append([]*listenerv3.FilterChain{l.GetDefaultFilterChain()}, l.GetFilterChains()...)
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			var h hcmv3.HttpConnectionManager
			if a := f.GetTypedConfig(); typeName(a) == envoyName(h.ProtoReflect().Descriptor()) {
				// Not a.UnmarshalTo: the Any names Envoy's type, h is the subset's.
				if proto.Unmarshal(a.GetValue(), &h) == nil && h.GetRds() != nil {
					names = append(names, h.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	return names
}
