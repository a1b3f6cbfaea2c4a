package translate

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/mesh"
)

// Shared resources.
//
// Most of what a sidecar gets does not depend on the sidecar at all: the
// static clusters, every in-mesh Service's EDS cluster and
// ClusterLoadAssignment, the in-mesh outbound filter chains (and, for a
// workload without egress rules, the whole outbound listener), and the
// trust_bundle secret. The Generator builds those once per registry
// snapshot (by pointer identity: a published mesh.Snapshot is
// immutable) and hands the SAME proto pointers to every Generate call.
//
// INVARIANT: a resource returned by Generate, and every message it points
// to, is never modified afterwards, by the Generator, the Server or
// go-control-plane (they only marshal it). Code that wants to change a
// generated resource must proto.Clone it first. The Server relies on this
// too: it caches the encoding, version and validation of shared resources
// by pointer (see Generator.SharedResources and resCache).
//
// Generate stays pure from the caller's view: the memo only ever returns
// what a fresh translation of the same snapshot would build, byte for byte.

// sharedSet is what every sidecar of one mesh snapshot gets. Its
// fields are written once, by build, and only read after ready is set.
type sharedSet struct {
	snap   *mesh.Snapshot
	cpHost string
	cpPort uint32
	// httpRouting is Generator.HTTPRouting when the set was built.
	httpRouting bool

	once  sync.Once
	ready atomic.Bool

	// clusters are the static clusters and the in-mesh Services'
	// clusters, by name; endpoints their ClusterLoadAssignments, by name.
	clusters  []types.Resource
	endpoints []types.Resource
	// routes are the route configurations of the in-mesh HTTP chains
	// (outbound|<port>|<service>.<namespace>), sorted by name.
	routes []types.Resource
	// routeByName holds routes by name.
	routeByName map[string]types.Resource
	// chains are the in-mesh outbound chains (clipped: appending copies);
	// taken the (port, prefix) leaves they use. Read-only.
	chains []*listenerv3.FilterChain
	taken  map[meshKey]bool
	// plainOutbound is listener "outbound" of a workload with no egress
	// rules and no rejected EgressPolicy in its namespace, when the mesh
	// has no ExternalName Service (else plainOutboundOf).
	plainOutbound *listenerv3.Listener
	// externalNames is whether the mesh has ExternalName Services;
	// plainByNS then holds, by namespace, that listener with their chains
	// (*plainEgress, built on first use).
	externalNames bool
	plainByNS     sync.Map
	// meshlessOutbound and meshlessByNS are plainOutbound and plainByNS
	// without the in-mesh chains, for sidecars sent destination listeners
	// instead (built on first use); dest are those listeners.
	meshlessOnce     sync.Once
	meshlessOutbound *listenerv3.Listener
	meshlessByNS     sync.Map
	destOnce         sync.Once
	dest             atomic.Pointer[destSet]
	// all holds every resource above (set membership).
	all map[types.Resource]struct{}

	// consumers holds, by namespace, the route configurations its
	// consumer routes give every client sidecar of the namespace
	// (map[string]*routev3.RouteConfiguration, built on first use: the
	// same for each of them, so built once, not once per sidecar).
	consumers sync.Map

	// prev is the previous snapshot's set, until build has taken its
	// Services' resources; svcs are this set's.
	prev *sharedSet
	svcs *svcMemo
}

// svcMemo is, per Service, the clusters and ClusterLoadAssignments built
// for it and what they were built from: a Service equal to the one of the
// previous snapshot (and in a namespace with the same injection) gets the
// very same resources, so the Server's caches know them already.
type svcMemo struct {
	prev map[mesh.Key]*svcResources // read-only
	cur  map[mesh.Key]*svcResources
}

type svcResources struct {
	svc       *mesh.Service
	injection bool
	clas      map[string]*endpointv3.ClusterLoadAssignment
	clusters  map[string]*clusterv3.Cluster
	chains    map[string]*chainInputs
}

// reuse returns the resources of svc in the previous snapshot: old if svc
// is unchanged (nil if not), prev in any case (nil if none); and records
// the resources of svc now.
func (m *svcMemo) reuse(svc *mesh.Service, injection bool) (old, prev, now *svcResources) {
	if m == nil {
		return nil, nil, nil
	}
	k := mesh.Key{Namespace: svc.Namespace, Name: svc.Name}
	now = &svcResources{svc: svc, injection: injection}
	m.cur[k] = now
	prev = m.prev[k]
	if prev != nil && prev.injection == injection && sameMeshInputs(prev.svc, svc) {
		old = prev
	}
	return old, prev, now
}

// chainInputs is an in-mesh filter chain and everything it is built from.
type chainInputs struct {
	chain                     *listenerv3.FilterChain
	name, statPrefix, cluster string
	routes                    string // an HTTP chain's route configuration; "": tcp_proxy
	port                      uint16
	prefixes                  []netip.Prefix
}

func (c *chainInputs) same(d *chainInputs) bool {
	return c.name == d.name && c.statPrefix == d.statPrefix && c.cluster == d.cluster && c.routes == d.routes && c.port == d.port &&
		slices.Equal(c.prefixes, d.prefixes)
}

func (r *svcResources) chain(name string) *chainInputs {
	if r == nil {
		return nil
	}
	return r.chains[name]
}

func (r *svcResources) putChain(c *chainInputs) {
	if r == nil {
		return
	}
	if r.chains == nil {
		r.chains = map[string]*chainInputs{}
	}
	r.chains[c.name] = c
}

// sameMeshInputs says whether a and b give the same in-mesh clusters and
// ClusterLoadAssignments (given the same namespace injection): every field
// meshChains, edsCluster, endpointPort and health read for them is equal.
// (ClusterIPs only go into the chains, which are always rebuilt.)
func sameMeshInputs(a, b *mesh.Service) bool {
	if a == b {
		return true
	}
	if a.Namespace != b.Namespace || a.Name != b.Name || a.Type != b.Type ||
		!slices.Equal(a.Ports, b.Ports) || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for i := range a.Endpoints {
		x, y := &a.Endpoints[i], &b.Endpoints[i]
		if x.Address != y.Address || x.Ready != y.Ready || x.Terminating != y.Terminating ||
			x.Injected != y.Injected || x.Identity != y.Identity || !slices.Equal(x.Ports, y.Ports) {
			return false
		}
	}
	return true
}

func (r *svcResources) get(name string) (*endpointv3.ClusterLoadAssignment, *clusterv3.Cluster) {
	if r == nil {
		return nil, nil
	}
	return r.clas[name], r.clusters[name]
}

func (r *svcResources) put(name string, cla *endpointv3.ClusterLoadAssignment, c *clusterv3.Cluster) {
	if r == nil {
		return
	}
	if r.clas == nil {
		r.clas, r.clusters = map[string]*endpointv3.ClusterLoadAssignment{}, map[string]*clusterv3.Cluster{}
	}
	r.clas[name], r.clusters[name] = cla, c
}

// translatorMemo keeps the shared sets of the current and the previous
// mesh snapshot, and the trust_bundle secret of the current bundle.
type translatorMemo struct {
	mu        sync.Mutex
	sets      [2]*sharedSet // newest first
	secretPEM []byte
	secret    *tlsv3.Secret
}

// shared returns the shared set of snap, building it at most once.
func (t *Generator) shared(snap *mesh.Snapshot, cpHost string, cpPort uint32) *sharedSet {
	m := &t.memo
	m.mu.Lock()
	var s *sharedSet
	for _, c := range m.sets {
		if c != nil && c.snap == snap && c.cpHost == cpHost && c.cpPort == cpPort && c.httpRouting == t.HTTPRouting {
			s = c
			break
		}
	}
	if s == nil {
		s = &sharedSet{snap: snap, cpHost: cpHost, cpPort: cpPort, httpRouting: t.HTTPRouting, prev: m.sets[0]}
		m.sets[1], m.sets[0] = m.sets[0], s
	}
	m.mu.Unlock()
	s.once.Do(s.build)
	return s
}

func (s *sharedSet) build() {
	b := &builder{
		snap: s.snap, td: s.snap.Mesh.TrustDomain,
		clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		routes:      map[string]*routev3.RouteConfiguration{},
		svcs:        &svcMemo{cur: map[mesh.Key]*svcResources{}},
		httpRouting: s.httpRouting,
	}
	// Resources built with the other setting of HTTPRouting are not
	// reused: the clusters differ.
	if p := s.prev; p != nil && p.ready.Load() && p.httpRouting == s.httpRouting {
		b.svcs.prev = p.svcs.cur
	}
	s.prev = nil // no chain of sets kept alive
	s.svcs = b.svcs
	// The mesh-wide part of failClosed: the only fail-closed state the
	// shared resources depend on (through outboundMode).
	for i, r := range s.snap.Rejected {
		if r.Kind == v1alpha1.MeshConfigKind && r.Name == v1alpha1.DefaultMeshConfigName {
			b.rejectedMesh = &s.snap.Rejected[i]
		}
	}
	b.addStaticClusters(s.cpHost, s.cpPort)
	chains, taken := b.meshChains()
	b.svcs.prev = nil
	s.chains, s.taken = slices.Clip(chains), taken
	s.plainOutbound = b.outboundListenerOf(s.chains, nil)
	s.externalNames = slices.ContainsFunc(s.snap.Services, func(svc *mesh.Service) bool { return svc.Type == "ExternalName" })
	s.clusters = sortedValues(b.clusters)
	s.endpoints = sortedValues(b.endpoints)
	s.routes = sortedValues(b.routes)
	s.all = make(map[types.Resource]struct{}, len(s.clusters)+len(s.endpoints)+len(s.routes)+1)
	s.routeByName = make(map[string]types.Resource, len(s.routes))
	for _, r := range s.routes {
		s.all[r] = struct{}{}
		s.routeByName[r.(*routev3.RouteConfiguration).GetName()] = r
	}
	for _, r := range s.clusters {
		s.all[r] = struct{}{}
	}
	for _, r := range s.endpoints {
		s.all[r] = struct{}{}
	}
	s.all[s.plainOutbound] = struct{}{}
	s.ready.Store(true)
}

// trustBundle returns the trust_bundle secret of pem, the same pointer for
// as long as the bundle does not change.
func (t *Generator) trustBundle(pem []byte) *tlsv3.Secret {
	m := &t.memo
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.secret == nil || !bytes.Equal(m.secretPEM, pem) {
		m.secretPEM, m.secret = slices.Clone(pem), trustBundleSecret(pem)
	}
	return m.secret
}

// HasDestination reports whether the newest mesh state has a destination
// listener of name (names.DestinationListener): the ADS server generates a
// node that looks destinations up again only for one that exists (an
// absent one is answered "does not exist" from the snapshot it has). True
// while no state is built yet.
func (t *Generator) HasDestination(name string) bool {
	m := &t.memo
	m.mu.Lock()
	s := m.sets[0]
	m.mu.Unlock()
	if s == nil || !s.ready.Load() {
		return true
	}
	return s.destinations().byName[name] != nil
}

// SharedResources reports which resources Generate currently shares
// between sidecars (and therefore never modifies): the Server caches
// their encoding and validation by pointer. A resource it does not know
// is simply not cached.
func (t *Generator) SharedResources() func(types.Resource) bool {
	m := &t.memo
	m.mu.Lock()
	sets, secret := m.sets, m.secret
	m.mu.Unlock()
	for i, s := range sets {
		if s != nil && !s.ready.Load() {
			sets[i] = nil
		}
	}
	return func(r types.Resource) bool {
		if secret != nil && r == types.Resource(secret) {
			return true
		}
		for _, s := range sets {
			if s == nil {
				continue
			}
			if _, ok := s.all[r]; ok {
				return true
			}
			if d := s.dest.Load(); d != nil {
				if _, ok := d.all[r]; ok {
					return true
				}
			}
		}
		return false
	}
}

// mergeByName merges two lists of resources sorted by name with disjoint
// names into one sorted list.
func mergeByName(a, b []types.Resource, name func(types.Resource) string) []types.Resource {
	out := make([]types.Resource, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if strings.Compare(name(a[0]), name(b[0])) <= 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// consumerRoutesOf is the consumer route configurations of b's namespace
// (builder.consumerRoutes), built once per set and namespace: they depend
// on nothing else of the workload, and a namespace with 1,000 pods would
// otherwise have them built 1,000 times per snapshot. The maps and the
// configurations in them are shared by every sidecar of the namespace and
// never modified (the INVARIANT above).
func (sh *sharedSet) consumerRoutesOf(b *builder) map[string]*routev3.RouteConfiguration {
	if v, ok := sh.consumers.Load(b.w.Namespace); ok {
		return v.(map[string]*routev3.RouteConfiguration)
	}
	v, _ := sh.consumers.LoadOrStore(b.w.Namespace, b.consumerRoutes(sh.routeByName))
	return v.(map[string]*routev3.RouteConfiguration)
}

// plainEgress is listener "outbound" of the workloads of one namespace
// with no egress rules, and the route configurations of its chains.
type plainEgress struct {
	listener *listenerv3.Listener
	routes   map[string]*routev3.RouteConfiguration
}

// plainOutboundOf is listener "outbound" of b's workload, which has no
// egress rules and no rejected EgressPolicy in its namespace, and the
// route configurations its chains name (shared, never modified). Without
// ExternalName Services in the mesh it is plainOutbound; with them, their
// chains (egressChains) decide by the outbound policy alone and differ
// between namespaces only by the Services' short names, so the listener
// is built once per set and namespace.
// Without the in-mesh chains (meshless) it is the same listener for a
// sidecar sent destination listeners instead.
func (sh *sharedSet) plainOutboundOf(b *builder, meshless bool) (*listenerv3.Listener, map[string]*routev3.RouteConfiguration, error) {
	chains, byNS := sh.chains, &sh.plainByNS
	if meshless {
		chains, byNS = nil, &sh.meshlessByNS
	}
	if !sh.externalNames {
		if !meshless {
			return sh.plainOutbound, nil, nil
		}
		sh.meshlessOnce.Do(func() { sh.meshlessOutbound = b.outboundListenerOf(nil, nil) })
		return sh.meshlessOutbound, nil, nil
	}
	if v, ok := byNS.Load(b.w.Namespace); ok {
		p := v.(*plainEgress)
		return p.listener, p.routes, nil
	}
	nb := &builder{snap: b.snap, w: b.w, td: b.td, rejectedMesh: b.rejectedMesh,
		routes: map[string]*routev3.RouteConfiguration{}}
	egress, err := nb.egressChains(sh.taken)
	if err != nil {
		return nil, nil, err
	}
	v, _ := byNS.LoadOrStore(b.w.Namespace, &plainEgress{listener: nb.outboundListenerOf(chains, egress), routes: nb.routes})
	p := v.(*plainEgress)
	return p.listener, p.routes, nil
}
