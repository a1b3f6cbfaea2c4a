package mesh

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Snapshot is the mesh model at one point in time. It is immutable: neither
// its maker nor its readers may modify it or anything it points to, so
// readers share it without locks. Make one with NewSnapshot or Next; a
// Snapshot made otherwise has no index, and its lookups panic.
type Snapshot struct {
	// Version increases by one with every published change; equal content
	// keeps the Version (Next).
	Version uint64

	Contents

	idx *index // lookups; derived from Contents by NewSnapshot
}

// Contents is what a Snapshot holds. NewSnapshot sorts each list as its
// comment says.
type Contents struct {
	Mesh            MeshConfig
	Namespaces      []Namespace      // by name
	ServiceAccounts []ServiceAccount // by namespace, name
	Services        []*Service       // by namespace, name
	Workloads       []*Workload      // by namespace, name

	// Policies that passed validation, by namespace and name (MTLSPolicies:
	// by namespace, then oldest first, as precedence needs).
	MTLSPolicies          []*MTLSPolicy
	AuthorizationPolicies []*AuthorizationPolicy
	EgressPolicies        []*EgressPolicy

	// Routes are the Gateway API routes attached to Services (GAMMA,
	// routes.go) with the rules weft serves, by namespace, name, kind.
	Routes []*Route

	// Rejected lists the weft objects left out, by kind, namespace, name.
	Rejected []Rejected
}

// Key names a namespaced object.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Rejected is a weft object left out of the model, and why.
type Rejected struct {
	Kind            string // MeshConfig, MTLSPolicy, AuthorizationPolicy, EgressPolicy
	Namespace, Name string
	Generation      int64
	Reason, Message string // the Accepted condition's
}

// NewSnapshot returns the snapshot of c at version: c's lists copied and
// sorted, and indexed, so the lookups work. What the lists point to is
// shared and must not be modified afterwards.
func NewSnapshot(version uint64, c Contents) *Snapshot {
	return newSnapshot(version, c.sorted())
}

// Next returns the snapshot that follows s with contents c: s itself when c
// holds what s holds (compared after sorting, so the order c's lists come
// in does not matter), otherwise a new snapshot of c (as NewSnapshot makes
// it) with Version s.Version+1. A nil s is followed by Version 1.
func (s *Snapshot) Next(c Contents) *Snapshot {
	c = c.sorted()
	if s == nil {
		return newSnapshot(1, c)
	}
	if reflect.DeepEqual(s.Contents, c) {
		return s
	}
	return newSnapshot(s.Version+1, c)
}

func newSnapshot(version uint64, sorted Contents) *Snapshot {
	s := &Snapshot{Version: version, Contents: sorted}
	s.idx = newIndex(&s.Contents)
	return s
}

// sorted returns c with its lists copied and sorted.
func (c Contents) sorted() Contents {
	c.Namespaces = slices.Clone(c.Namespaces)
	c.ServiceAccounts = slices.Clone(c.ServiceAccounts)
	c.Services = slices.Clone(c.Services)
	c.Workloads = slices.Clone(c.Workloads)
	c.MTLSPolicies = slices.Clone(c.MTLSPolicies)
	c.AuthorizationPolicies = slices.Clone(c.AuthorizationPolicies)
	c.EgressPolicies = slices.Clone(c.EgressPolicies)
	c.Routes = slices.Clone(c.Routes)
	c.Rejected = slices.Clone(c.Rejected)

	byKey := func(ns1, n1, ns2, n2 string) int { return cmp.Or(cmp.Compare(ns1, ns2), cmp.Compare(n1, n2)) }
	slices.SortFunc(c.Namespaces, func(a, b Namespace) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(c.ServiceAccounts, func(a, b ServiceAccount) int { return byKey(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(c.Services, func(a, b *Service) int { return byKey(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(c.Workloads, func(a, b *Workload) int { return byKey(a.Namespace, a.Name, b.Namespace, b.Name) })
	// Oldest first within a namespace: the oldest matching MTLSPolicy wins.
	slices.SortFunc(c.MTLSPolicies, func(a, b *MTLSPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(c.AuthorizationPolicies, func(a, b *AuthorizationPolicy) int { return byKey(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(c.EgressPolicies, func(a, b *EgressPolicy) int { return byKey(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(c.Routes, func(a, b *Route) int {
		return cmp.Or(byKey(a.Namespace, a.Name, b.Namespace, b.Name), cmp.Compare(a.Kind, b.Kind))
	})
	slices.SortFunc(c.Rejected, func(a, b Rejected) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), byKey(a.Namespace, a.Name, b.Namespace, b.Name))
	})
	return c
}

// index holds a Snapshot's lookups.
type index struct {
	services   map[Key]*Service
	byNS       map[string][]*Service // services per namespace
	workloads  map[Key]*Workload
	podIPs     map[netip.Addr]*Workload // workloads not on the host network
	clusterIPs map[netip.AddrPort]serviceAddr
	namespaces map[string]*Namespace
	routes     map[Key][]*Route // by parent Service, each route once
}

type serviceAddr struct {
	svc  *Service
	port int // index into svc.Ports
}

func newIndex(c *Contents) *index {
	idx := &index{
		services:   make(map[Key]*Service, len(c.Services)),
		byNS:       map[string][]*Service{},
		workloads:  make(map[Key]*Workload, len(c.Workloads)),
		podIPs:     make(map[netip.Addr]*Workload, len(c.Workloads)),
		clusterIPs: map[netip.AddrPort]serviceAddr{},
		namespaces: make(map[string]*Namespace, len(c.Namespaces)),
		routes:     map[Key][]*Route{},
	}
	for _, r := range c.Routes {
		for i, p := range r.Parents {
			if !slices.ContainsFunc(r.Parents[:i], func(q RouteParent) bool { return q.Service == p.Service }) {
				idx.routes[p.Service] = append(idx.routes[p.Service], r)
			}
		}
	}
	for i := range c.Namespaces {
		idx.namespaces[c.Namespaces[i].Name] = &c.Namespaces[i]
	}
	for _, svc := range c.Services {
		idx.services[Key{svc.Namespace, svc.Name}] = svc
		idx.byNS[svc.Namespace] = append(idx.byNS[svc.Namespace], svc)
		for _, ip := range svc.ClusterIPs {
			for i, p := range svc.Ports {
				if p.Protocol == "TCP" {
					idx.clusterIPs[netip.AddrPortFrom(ip, p.Port)] = serviceAddr{svc, i}
				}
			}
		}
	}
	for _, w := range c.Workloads {
		idx.workloads[w.Key()] = w
		if w.HostNetwork {
			continue
		}
		for _, ip := range w.IPs {
			idx.podIPs[ip] = w
		}
	}
	return idx
}

// index returns the lookups, which only NewSnapshot and Next make.
func (s *Snapshot) index() *index {
	if s.idx == nil {
		panic("mesh: Snapshot not made by NewSnapshot or Next: it has no index")
	}
	return s.idx
}

// WorkloadByNode finds the workload of an xDS node ID "<pod>.<namespace>".
// Pod names may contain dots, namespaces may not.
func (s *Snapshot) WorkloadByNode(nodeID string) (*Workload, bool) {
	i := strings.LastIndexByte(nodeID, '.')
	if i <= 0 || i == len(nodeID)-1 {
		return nil, false
	}
	return s.Workload(nodeID[i+1:], nodeID[:i])
}

// Workload finds a workload by namespace and name.
func (s *Snapshot) Workload(namespace, name string) (*Workload, bool) {
	w, ok := s.index().workloads[Key{namespace, name}]
	return w, ok
}

// WorkloadByIP finds the workload with a pod IP (host-network pods are not
// found).
func (s *Snapshot) WorkloadByIP(ip netip.Addr) (*Workload, bool) {
	w, ok := s.index().podIPs[ip.Unmap()]
	return w, ok
}

// Service finds a service by namespace and name.
func (s *Snapshot) Service(namespace, name string) (*Service, bool) {
	svc, ok := s.index().services[Key{namespace, name}]
	return svc, ok
}

// ServiceByAddr finds the service whose ClusterIP and port is addr.
func (s *Snapshot) ServiceByAddr(addr netip.AddrPort) (*Service, ServicePort, bool) {
	sa, ok := s.index().clusterIPs[netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())]
	if !ok {
		return nil, ServicePort{}, false
	}
	return sa.svc, sa.svc.Ports[sa.port], true
}

// Namespace finds a namespace.
func (s *Snapshot) Namespace(name string) (*Namespace, bool) {
	ns, ok := s.index().namespaces[name]
	return ns, ok
}

// ServicesFor returns the services whose selector selects w (its namespace's
// services with a non-empty selector matching its labels), by name.
func (s *Snapshot) ServicesFor(w *Workload) []*Service {
	var out []*Service
	for _, svc := range s.index().byNS[w.Namespace] {
		if len(svc.Selector) > 0 && labels.SelectorFromValidatedSet(svc.Selector).Matches(labels.Set(w.Labels)) {
			out = append(out, svc)
		}
	}
	return out
}

// InMesh reports whether an outbound destination is in the mesh: a
// Service's ClusterIP and port, or any port of a pod that runs weft's
// sidecar. Everything else is egress.
func (s *Snapshot) InMesh(addr netip.AddrPort) bool {
	if _, _, ok := s.ServiceByAddr(addr); ok {
		return true
	}
	w, ok := s.WorkloadByIP(addr.Addr())
	return ok && w.Injected
}
