package ads

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/xds"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"
)

// Config configures a Server. Generator, Authorizer and Bundle are
// required.
type Config struct {
	Generator xds.Generator
	// Authorizer decides who may hold a pod's stream (client certificate,
	// the pod's token, its pod and peer address) and ends the stream when
	// the pod goes or the certificate expires; see controlplane/streamauth.
	Authorizer *streamauth.Authorizer
	// Bundle verifies the sidecars' client certificates (weft's roots) in
	// StreamInterceptor. Pass a live source so root rotation is honoured.
	Bundle     x509bundle.Source
	Logger     *slog.Logger          // nil: discard
	Clock      clock.Clock           // nil: real clock
	Registerer prometheus.Registerer // nil: metrics are not exported
	Debounce   time.Duration         // 0: 100ms; quiet time after the last change
	MaxDelay   time.Duration         // 0: 1s; longest wait after the first change
	// MaxMessageSize is the largest response sent, encoded (0:
	// names.MaxXDSMessageSize, what sidecars receive; never more). A
	// snapshot that could need a larger one is not published.
	MaxMessageSize int
	// LookupBudget and LookupBurst bound what one node's lookups cost: a
	// node that looks destinations up is generated again at once when a
	// request subscribes to a destination it did not hold, and those
	// generations, and the watches its listener requests open, may take
	// LookupBudget of a core over time (0: 0.05; at least
	// MinLookupBudget) and LookupBurst at once (0: 500ms; at most
	// MaxLookupBurst); past that, a request that subscribes to a new
	// destination waits, on its own stream, until the node's budget
	// allows (see lookupBudget).
	LookupBudget float64
	LookupBurst  time.Duration
}

// Server is weft's ADS server: one snapshot per connected sidecar,
// regenerated on Changed, pushed over state-of-the-world and delta xDS.
type Server struct {
	gen      xds.Generator
	auth     *streamauth.Authorizer
	bundle   x509bundle.Source
	log      *slog.Logger
	clock    clock.Clock
	metrics  *metrics
	debounce *debouncer
	maxMsg   int // Config.MaxMessageSize
	// lookupRate and lookupBurst: Config.LookupBudget and LookupBurst.
	lookupRate  float64
	lookupBurst time.Duration

	ctx    context.Context // ends streams when Run returns
	cancel context.CancelFunc
	cache  cachev3.SnapshotCache
	// eds serves every node's ClusterLoadAssignments (eds.go).
	eds *edsCache
	xds serverv3.Server
	// resCache holds the encodings, versions and validation of the
	// resources the generator shares between nodes.
	resCache *resCache

	// roundDone, if set (tests), runs after every debounced round.
	roundDone func()

	mu      sync.Mutex
	streams map[streamKey]*stream
	nodes   map[string]*nodeState
	// budgets are the lookup budgets of nodes gone (their last stream
	// closed) while not full, so a node that reconnects gets its own
	// back, not a full one (lookupbudget.go).
	budgets map[string]lookupBudget
}

// streamKey names a stream: SotW and delta streams are numbered separately.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one ADS stream; node is nil until its first request is
// authorized. Guarded by Server.mu.
type stream struct {
	ctx   context.Context
	delta bool
	grant *streamauth.Grant
	node  *nodeState
	sent  map[string]sent // type URL -> last response on this stream
	// requested: type URLs this stream has sent a request of (its first
	// says whether it subscribes to the type by name).
	requested map[string]bool
	// names: what a delta stream subscribes to, by type URL
	// (MaxSubscribedNames).
	names map[string]map[string]struct{}
	// ldsAsked: the stream has requested listeners; ldsWildcard: its
	// subscription to them is a wildcard (its first request named none,
	// or it subscribed to "*" since). A state-of-the-world stream's is.
	ldsAsked, ldsWildcard bool
}

// MaxSubscribedNames bounds the names one delta stream subscribes to of
// one type. A sidecar subscribes by name to what it uses: the destinations
// it looks up (at most sidecar/xds's DefaultMaxDestinations, 4,096), the
// clusters and endpoints of the Services it reaches, their routes. A
// client holding a pod's SVID could otherwise grow the control plane's
// subscription state without bound, one request of names after another
// (each under the message limit). Past it the stream is refused
// (ResourceExhausted); the names it unsubscribes from free room.
const MaxSubscribedNames = 1 << 16

type sent struct{ nonce, version string }

// nodeState is one connected sidecar (all its streams). gen serializes
// generate-and-publish for the node and its removal; the other fields are
// guarded by Server.mu.
type nodeState struct {
	id  string
	gen sync.Mutex

	node      xds.Node
	streams   int
	gone      bool // removed from Server.nodes; never published to again
	connected time.Time
	generated time.Time
	genErr    string
	versions  map[string]string // published snapshot: type URL -> version
	// resources is the published snapshot's per-resource versions (type
	// URL -> name -> version), what a resumed delta stream's
	// initial_resource_versions are compared with.
	resources map[string]map[string]string
	types     map[string]*typeState
	// withheld is the versions of the newest snapshot, not published
	// because a response would exceed the message limit (nil: none).
	withheld map[string]string
	// open are the node's streams: a node that looks destinations up
	// (xds.Node.DestinationListeners) is generated the destination
	// listeners its streams subscribe to, not the mesh's every one
	// (nodeOf), every one if a stream's subscription is a wildcard.
	open map[*stream]struct{}
	// genWildcard: the last generation was for a wildcard subscription.
	genWildcard bool
	// lookups: the generation time its lookups may still take.
	lookups lookupBudget
	// genDests: the destination listeners the snapshot in force was
	// generated for (those subscribed to then, absent ones included); a
	// lookup of one of them needs no generation.
	genDests map[string]struct{}
}

func (n *nodeState) typeState(url string) *typeState {
	t, ok := n.types[url]
	if !ok {
		t = &typeState{}
		n.types[url] = t
	}
	return t
}

// New builds a Server. Serve it with Register and StreamInterceptor on a
// gRPC server, and keep Run running for Changed to take effect.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Generator == nil:
		return nil, errors.New("xds: Config.Generator is required")
	case cfg.Authorizer == nil:
		return nil, errors.New("xds: Config.Authorizer is required")
	case cfg.Bundle == nil:
		return nil, errors.New("xds: Config.Bundle is required: ADS streams verify client certificates themselves")
	case cfg.Debounce < 0 || cfg.MaxDelay < 0:
		return nil, fmt.Errorf("xds: Debounce %v and MaxDelay %v must not be negative", cfg.Debounce, cfg.MaxDelay)
	case cfg.MaxMessageSize < 0 || cfg.MaxMessageSize > names.MaxXDSMessageSize:
		return nil, fmt.Errorf("xds: MaxMessageSize %d must be between 0 and names.MaxXDSMessageSize (%d), what sidecars receive",
			cfg.MaxMessageSize, names.MaxXDSMessageSize)
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = names.MaxXDSMessageSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.MaxDelay == 0 {
		cfg.MaxDelay = time.Second
	}
	if cfg.LookupBudget == 0 {
		cfg.LookupBudget = DefaultLookupBudget
	}
	if cfg.LookupBurst == 0 {
		cfg.LookupBurst = DefaultLookupBurst
	}
	if !(cfg.LookupBudget >= MinLookupBudget && cfg.LookupBudget <= 1) || cfg.LookupBurst < 0 || cfg.LookupBurst > MaxLookupBurst {
		return nil, fmt.Errorf("xds: lookup budget %v of a core, burst %v: want a fraction in [%v, 1] and a burst in (0, %v]",
			cfg.LookupBudget, cfg.LookupBurst, MinLookupBudget, MaxLookupBurst)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		gen: cfg.Generator, auth: cfg.Authorizer, bundle: cfg.Bundle, log: cfg.Logger, clock: cfg.Clock, metrics: m, maxMsg: cfg.MaxMessageSize,
		lookupRate: cfg.LookupBudget, lookupBurst: cfg.LookupBurst,
		streams: map[streamKey]*stream{}, nodes: map[string]*nodeState{}, budgets: map[string]lookupBudget{}, resCache: newResCache(),
	}
	s.debounce = newDebouncer(cfg.Clock, cfg.Debounce, cfg.MaxDelay, s.round)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cpLog := cpLogger{cfg.Logger}
	s.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cpLog)
	s.eds = newEDSCache()
	s.xds = serverv3.NewServer(s.ctx, s.eds.mux(absentCache{Cache: s.cache, s: s}), callbacks{s}, sotwv3.WithLogger(cpLog))
	return s, nil
}

// Register serves ADS, state-of-the-world and delta, on gs. Every stream
// is authorized before go-control-plane sees it and ended when its grant
// ends (see guard).
func (s *Server) Register(gs grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, ads{s})
}

// ads is go-control-plane's ADS server behind guard.
type ads struct{ s *Server }

func (a ads) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.s.guard(st, func(ss grpc.ServerStream) error {
		return a.s.xds.StreamAggregatedResources(&grpc.GenericServerStream[discovery.DiscoveryRequest, discovery.DiscoveryResponse]{ServerStream: ss})
	})
}

func (a ads) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.s.guard(st, func(ss grpc.ServerStream) error {
		return a.s.xds.DeltaAggregatedResources(&grpc.GenericServerStream[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]{ServerStream: ss})
	})
}

// Run regenerates snapshots after Changed until ctx ends; then it ends
// every ADS stream (sidecars keep their config and reconnect) and returns.
func (s *Server) Run(ctx context.Context) error {
	defer s.cancel()
	s.debounce.run(ctx)
	return nil
}

// Changed says the mesh model changed. It never blocks: regeneration for
// every connected sidecar follows Debounce after the last call, at most
// MaxDelay after the first.
func (s *Server) Changed() { s.debounce.changed() }

// Regenerating reports whether a change awaits its regeneration round or a
// round is running: false means every connected sidecar's snapshot was
// built from the newest model Changed announced.
func (s *Server) Regenerating() bool { return s.debounce.busy() }

// round regenerates every connected node, a few at a time.
func (s *Server) round() {
	start := time.Now()
	s.resCache.rotate()
	s.mu.Lock()
	nodes := slices.Collect(maps.Values(s.nodes))
	s.mu.Unlock()
	work := make(chan *nodeState)
	var wg sync.WaitGroup
	for range min(len(nodes), runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for n := range work {
				s.generate(n)
			}
		})
	}
	for _, n := range nodes {
		work <- n
	}
	close(work)
	wg.Wait()
	s.metrics.rounds.Observe(time.Since(start).Seconds())
	if s.roundDone != nil {
		s.roundDone()
	}
}

// generate builds, validates and publishes n's snapshot. On any error the
// node keeps its last good snapshot. An unchanged snapshot is not
// published at all, so nothing is pushed.
//
// A snapshot one of whose responses could exceed the message limit is not
// published either (withhold): the sidecar keeps the configuration it
// runs, and the next snapshot that fits is published as any other. This is
// the one place that can refuse a response correctly. Past SetSnapshot,
// go-control-plane's callbacks (OnStreamResponse, OnStreamDeltaResponse)
// only observe; and a stream wrapper that drops a message in SendMsg would
// leave go-control-plane believing it was sent: its watch for the type is
// answered (SotW records the nonce, delta the resource versions) and the
// next watch opens only on the sidecar's next request, which never comes
// for a response it never got, so no later snapshot of that type would be
// delivered. Withholding before the cache sees the snapshot keeps the
// cache, every stream's nonces and versions, and Status true to what the
// sidecar has. The whole snapshot is held back, not only the oversized
// type, since its types reference one another (a listener its route
// configuration). The stream wrapper (limitStream) stays as the last
// check on the wire; it ends the stream instead.
func (s *Server) generate(n *nodeState) { s.generateLists(n, true) }

// generateLists is generate; keepLists false does not keep the node's new
// lists of resources in the resource cache (a regeneration for one node's
// lookup, outside a round, which nothing else shares and no round would
// clear until the next change). took is how long it ran once it held the
// node's generation lock (what a lookup is charged: not the wait for a
// round generating the node meanwhile).
func (s *Server) generateLists(n *nodeState, keepLists bool) (took time.Duration) {
	n.gen.Lock()
	defer n.gen.Unlock()
	start := s.clock.Now()
	defer func() { took = s.clock.Since(start) }()
	s.mu.Lock()
	node, gone, prev := n.nodeOf(), n.gone, n.resources
	n.genWildcard = node.DestinationListeners && !node.LookedUp
	s.mu.Unlock()
	if gone {
		return
	}
	snap, versions, sizes, err := s.build(node, keepLists)
	now := s.clock.Now()
	if err != nil {
		s.mu.Lock()
		n.genErr = err.Error()
		s.mu.Unlock()
		s.metrics.generateErrors.Inc()
		s.log.Error("snapshot not published; the sidecar keeps its last good one", "node", n.id, "err", err)
		return
	}
	s.mu.Lock()
	if n.versions != nil && maps.Equal(n.versions, versions) {
		// Unchanged (n.versions cannot change while n.gen is held).
		n.genErr, n.generated = "", now
		n.genDests = destSet(node)
		n.clearWithheld()
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if over := s.oversized(snap, sizes, prev); len(over) > 0 {
		s.mu.Lock()
		s.withhold(n, versions, over, now) // unlocks s.mu
		return
	}
	s.mu.Lock()
	n.genErr, n.generated = "", now
	onlyEDS := n.versions != nil && equalBut(n.versions, versions, resource.EndpointType)
	s.mu.Unlock()
	// Endpoints first (eds.go): a cluster never reaches a sidecar before
	// its ClusterLoadAssignment can. The snapshot cache serves every
	// other type; a snapshot in which only endpoints changed is not set
	// in it at all, so its streams compare nothing.
	eds := snap.Resources[types.Endpoint]
	if err := s.eds.publish(n.id, eds.Version, snap.VersionMap[resource.EndpointType], eds.Items); err != nil {
		s.log.Error("publishing endpoints", "node", n.id, "err", err)
		return
	}
	// n.gone cannot change while n.gen is held.
	if !onlyEDS {
		if err := s.cache.SetSnapshot(s.ctx, n.id, snap); err != nil {
			s.log.Error("publishing snapshot", "node", n.id, "err", err)
			return
		}
	}
	s.eds.settle(n.id)
	s.mu.Lock()
	n.versions, n.resources = versions, snap.VersionMap
	n.genDests = destSet(node)
	n.clearWithheld()
	s.mu.Unlock()
	s.log.Debug("snapshot published", "node", n.id, "versions", versions, "endpoints_only", onlyEDS)
	return took
}

// destSet is the destination listeners node was generated for: those it
// subscribes to when it looks them up (nil otherwise: a node generated
// every destination listener needs no lookup's generation either, but
// then listenersAsked is not reached for it).
func destSet(node xds.Node) map[string]struct{} {
	if !node.LookedUp {
		return nil
	}
	set := make(map[string]struct{}, len(node.Destinations))
	for _, d := range node.Destinations {
		set[d] = struct{}{}
	}
	return set
}

// equalBut says whether a and b have the same keys and values but for key.
func equalBut(a, b map[string]string, key string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; k != key && (!ok || v != w) {
			return false
		}
	}
	return true
}

// oversize is a type whose response could exceed the message limit.
type oversize struct {
	typeURL string
	size    int
}

// oversized returns the types of snap (sizes: buildSnapshotSized's) whose
// largest response, SotW or delta, exceeds the limit, in type order. A
// delta response also names the resources the stream holds that are gone:
// those of prev, the last published snapshot, not in snap. (A delta stream
// that still holds an older snapshot's resources, or resumed claiming
// names, can get a longer removed_resources list; limitStream catches what
// that could add.)
func (s *Server) oversized(snap *cachev3.Snapshot, sizes map[string]responseSize, prev map[string]map[string]string) []oversize {
	var over []oversize
	for i := range types.UnknownType {
		url, _ := cachev3.GetResponseTypeURL(i)
		sz := sizes[url]
		delta := sz.delta
		if old := prev[url]; len(old) > 0 {
			var removed []string
			for name := range old {
				if _, ok := snap.VersionMap[url][name]; !ok {
					removed = append(removed, name)
				}
			}
			delta += removedSize(removed)
		}
		if size := max(sz.sotw, delta); size > s.maxMsg {
			over = append(over, oversize{typeURL: url, size: size})
		}
	}
	return over
}

// withhold records that n's snapshot of versions is not published because
// of over, and logs and counts it unless that same snapshot was withheld
// already (every round regenerates every node). Called with s.mu held; it
// unlocks it.
func (s *Server) withhold(n *nodeState, versions map[string]string, over []oversize, now time.Time) {
	again := maps.Equal(n.withheld, versions)
	n.withheld = versions
	what := make([]string, len(over))
	for i, o := range over {
		what[i] = fmt.Sprintf("%s response would be %d bytes", typeName(o.typeURL), o.size)
		t := n.typeState(o.typeURL)
		if !again || t.withheld == nil {
			t.withheld = &Withheld{Version: versions[o.typeURL], Size: o.size, Limit: s.maxMsg, Time: now}
		}
	}
	n.genErr = fmt.Sprintf("xds: snapshot not sent: its %s, over the xDS message limit of %d bytes; the sidecar keeps its last configuration",
		strings.Join(what, ", its "), s.maxMsg)
	s.mu.Unlock()
	if again {
		return
	}
	for _, o := range over {
		s.metrics.oversized.WithLabelValues(typeName(o.typeURL)).Inc()
		s.log.Error("snapshot not sent: a response would exceed the xDS message limit; the sidecar keeps its last configuration",
			"node", n.id, "type", typeName(o.typeURL), "size_bytes", o.size, "limit_bytes", s.maxMsg)
	}
}

// clearWithheld forgets a withheld snapshot. Called with s.mu held.
func (n *nodeState) clearWithheld() {
	n.withheld = nil
	for _, t := range n.types {
		t.withheld = nil
	}
}

// build runs the generator (a panic is an error, not a crash) and turns its
// output into a consistent, validated snapshot with a content hash as the
// version of each type.
func (s *Server) build(node xds.Node, keepLists bool) (snap *cachev3.Snapshot, versions map[string]string, sizes map[string]responseSize, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("xds: Generate(%s) panicked: %v", xds.NodeID(node.Name, node.Namespace), r)
		}
	}()
	res, err := s.gen.Generate(node)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("xds: Generate(%s): %w", xds.NodeID(node.Name, node.Namespace), err)
	}
	if g, ok := s.gen.(sharingGenerator); ok {
		// Only a sharing generator promises never to modify what it
		// returned, which the cache needs.
		return buildSnapshotSized(res, s.resCache, g.SharedResources(), keepLists)
	}
	return buildSnapshotSized(res, nil, nil, keepLists)
}

// cpLogger hands go-control-plane's logging to slog. Its Infof reports
// every watch opened, so it goes to Debug; warnings and errors stay.
type cpLogger struct{ l *slog.Logger }

func (c cpLogger) logf(level slog.Level, format string, args []any) {
	if c.l.Enabled(context.Background(), level) {
		c.l.Log(context.Background(), level, "go-control-plane: "+fmt.Sprintf(format, args...))
	}
}

func (c cpLogger) Debugf(format string, args ...any) { c.logf(slog.LevelDebug, format, args) }
func (c cpLogger) Infof(format string, args ...any)  { c.logf(slog.LevelDebug, format, args) }
func (c cpLogger) Warnf(format string, args ...any)  { c.logf(slog.LevelWarn, format, args) }
func (c cpLogger) Errorf(format string, args ...any) { c.logf(slog.LevelError, format, args) }

// callbacks connects go-control-plane's stream events to the Server
// without exporting them on it.
type callbacks struct{ s *Server }

var _ serverv3.Callbacks = callbacks{}

func (c callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.s.open(streamKey{id: id}, ctx)
}

func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.s.open(streamKey{delta: true, id: id}, ctx)
}

func (c callbacks) OnStreamClosed(id int64, _ *core.Node) { c.s.close(streamKey{id: id}) }

func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	c.s.close(streamKey{delta: true, id: id})
}

func (c callbacks) OnStreamRequest(id int64, r *discovery.DiscoveryRequest) error {
	return c.s.request(streamKey{id: id}, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), r.GetVersionInfo(), nil, false, r.GetErrorDetail())
}

func (c callbacks) OnStreamDeltaRequest(id int64, r *discovery.DeltaDiscoveryRequest) error {
	var resumed *deltaResume
	if r.GetResponseNonce() == "" && len(r.GetInitialResourceVersions()) > 0 {
		resumed = &deltaResume{held: r.GetInitialResourceVersions(), names: r.GetResourceNamesSubscribe()}
	}
	// A delta stream whose first request of a type names resources (and
	// not "*") subscribes to those alone: an on-demand sidecar's clusters,
	// every sidecar's endpoints and routes (request reads this of the
	// first request only).
	names := r.GetResourceNamesSubscribe()
	named := len(names) > 0 && !slices.Contains(names, "*")
	key := streamKey{delta: true, id: id}
	newDestinations, err := c.s.subscribe(key, r, named)
	if err != nil {
		return err
	}
	if err := c.s.request(key, r.GetNode(), r.GetTypeUrl(), r.GetResponseNonce(), "", resumed, named, r.GetErrorDetail()); err != nil {
		return err
	}
	if r.GetTypeUrl() == resource.ListenerType {
		return c.s.listenersAsked(key, newDestinations)
	}
	return nil
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, r *discovery.DiscoveryResponse) {
	c.s.response(streamKey{id: id}, r.GetTypeUrl(), r.GetNonce(), r.GetVersionInfo())
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, r *discovery.DeltaDiscoveryResponse) {
	c.s.response(streamKey{delta: true, id: id}, r.GetTypeUrl(), r.GetNonce(), r.GetSystemVersionInfo())
}

func (callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "xds: REST fetch is not served")
}

func (callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

// open admits a stream that guard authorized.
func (s *Server) open(key streamKey, ctx context.Context) error {
	g := streamauth.FromContext(ctx)
	if g == nil {
		err := status.Error(codes.Internal, "xds: ADS stream without authorization (not served through Server.Register)")
		s.refuse(err, "", peerAddr(ctx))
		return err
	}
	s.mu.Lock()
	s.streams[key] = &stream{ctx: ctx, delta: key.delta, grant: g, sent: map[string]sent{}, requested: map[string]bool{},
		names: map[string]map[string]struct{}{}}
	s.mu.Unlock()
	return nil
}

// request authorizes a stream's first request (and publishes the node's
// first snapshot before go-control-plane opens the watch, so it is answered
// at once), refuses a change of node ID, and tracks ACKs and NACKs.
func (s *Server) request(key streamKey, node *core.Node, typeURL, nonce, version string, resumed *deltaResume, named bool, detail *statuspb.Status) error {
	s.mu.Lock()
	st := s.streams[key]
	var cur *nodeState
	if st != nil {
		cur = st.node
	}
	s.mu.Unlock()
	if st == nil {
		return status.Error(codes.Internal, "xds: request on an unknown stream")
	}
	if !servedTypes[typeURL] {
		// Each type a stream asks for holds a watch and room in the
		// stream's response buffer, which go-control-plane sizes for
		// the types it knows: a client inventing types could fill it
		// and stall the caches' answers to every stream.
		err := status.Errorf(codes.InvalidArgument, "xds: type %q is not served: the contract's types are clusters, endpoints, listeners, routes and secrets", typeURL)
		s.refuse(err, node.GetId(), peerAddr(st.ctx))
		return err
	}
	switch {
	case cur == nil:
		n, err := s.authorize(node, st.grant)
		if err != nil {
			s.refuse(err, node.GetId(), peerAddr(st.ctx))
			return err
		}
		cur = s.attach(st, n)
		if n.DestinationListeners {
			// A stream's first generation, charged as a lookup's would
			// be (never waited for): a node cannot refill its budget by
			// opening streams.
			s.lookupSpent(cur, s.generateOwn(cur, true))
		} else {
			s.generate(cur)
		}
	case node != nil && node.GetId() != cur.id:
		err := status.Errorf(codes.PermissionDenied, "xds: stream of node %q sent a request as node %q", cur.id, node.GetId())
		s.refuse(err, cur.id, peerAddr(st.ctx))
		return err
	}
	s.mu.Lock()
	if !st.requested[typeURL] {
		// Later nonce-less requests only change the subscription (a
		// delta one may unsubscribe everything it named); the first says
		// what kind it is.
		st.requested[typeURL] = true
		cur.typeState(typeURL).named = named
	}
	if resumed != nil && resumed.upToDate(cur.resources[typeURL]) {
		// go-control-plane sends nothing for a type a resumed delta
		// stream already holds exactly, so no ACK will come: what the
		// sidecar runs is the published version.
		version = cur.versions[typeURL]
		if typeURL == resource.EndpointType {
			// The endpoint cache's version (Status compares the
			// endpoints' ACK with what was sent).
			version = s.eds.version()
		}
		if t := cur.typeState(typeURL); typeURL == resource.EndpointType || t.named {
			// Status compares these with what was sent: the stream
			// holds what it would have been sent.
			t.sent, t.sentAt = version, s.clock.Now()
		}
	}
	s.track(st, typeURL, nonce, version, detail)
	s.mu.Unlock()
	return nil
}

// servedTypes are the type URLs of the contract (sidecar/xds/README.md).
var servedTypes = map[string]bool{
	resource.ClusterType: true, resource.EndpointType: true, resource.ListenerType: true,
	resource.RouteType: true, resource.SecretType: true,
}

// deltaResume is the first request of a type on a delta stream that
// resumes: the resources it holds (initial_resource_versions) and the
// names it subscribes to (none: all of the type).
type deltaResume struct {
	held  map[string]string
	names []string
}

// upToDate reports whether the stream holds exactly the published
// resources (name -> version) that it subscribes to.
func (d *deltaResume) upToDate(published map[string]string) bool {
	names := d.names
	if len(names) == 0 {
		names = slices.Collect(maps.Keys(published))
	}
	for _, n := range names {
		pv, inPub := published[n]
		hv, held := d.held[n]
		if inPub != held || pv != hv {
			return false
		}
	}
	return true
}

// subscribe follows a delta stream's subscription and refuses the stream
// once it subscribes to more than MaxSubscribedNames of one type. Of
// listeners, it also follows whether the subscription is a wildcard (named:
// the request names resources, and not "*") and returns the destination
// listeners (names.DestinationListener) the request newly subscribes to.
func (s *Server) subscribe(key streamKey, r *discovery.DeltaDiscoveryRequest, named bool) (newDestinations []string, err error) {
	sub, unsub := r.GetResourceNamesSubscribe(), r.GetResourceNamesUnsubscribe()
	lds := r.GetTypeUrl() == resource.ListenerType
	s.mu.Lock()
	st := s.streams[key]
	if st == nil {
		s.mu.Unlock()
		return nil, status.Error(codes.Internal, "xds: request on an unknown stream")
	}
	if lds {
		switch {
		case !st.ldsAsked:
			st.ldsAsked, st.ldsWildcard = true, !named
		case slices.Contains(sub, "*"):
			st.ldsWildcard = true
		case slices.Contains(unsub, "*"):
			st.ldsWildcard = false
		}
	}
	if len(sub) == 0 && len(unsub) == 0 {
		s.mu.Unlock()
		return nil, nil
	}
	set := st.names[r.GetTypeUrl()]
	if set == nil {
		set = map[string]struct{}{}
		st.names[r.GetTypeUrl()] = set
	}
	var added []string
	for _, n := range sub {
		if _, had := set[n]; !had && lds {
			added = append(added, n)
		}
		set[n] = struct{}{}
	}
	for _, n := range unsub {
		delete(set, n)
	}
	for _, n := range added {
		if _, still := set[n]; still {
			if _, ok := names.ParseDestinationListener(n); ok {
				newDestinations = append(newDestinations, n)
			}
		}
	}
	count, id := len(set), r.GetNode().GetId()
	if st.node != nil {
		id = st.node.id
	}
	s.mu.Unlock()
	if count <= MaxSubscribedNames {
		return newDestinations, nil
	}
	err = status.Errorf(codes.ResourceExhausted, "xds: the stream subscribes to %d names of %s, over the limit of %d", count, r.GetTypeUrl(), MaxSubscribedNames)
	s.refuse(err, id, peerAddr(st.ctx))
	return nil, err
}

// destinationIndex is a Generator that says whether a destination
// listener exists (translate.Generator.HasDestination).
type destinationIndex interface{ HasDestination(name string) bool }

// listenersAsked follows a delta stream's listener subscription for its
// node: when the node looks destinations up and the request newly
// subscribes to one that exists, or the node's subscription changed
// kind (a wildcard came or went), the node is generated again at once,
// before go-control-plane answers the request, so the answer is the
// destination's listener, never a wait for the next change of the mesh.
// A destination that does not exist needs nothing: the node's snapshot
// lacks it, so the answer says so (absentCache). The regeneration keeps
// no list in the resource cache (generateLists).
//
// A request that subscribes to a new destination, existing or not, first
// waits until the node's lookup budget is not overdrawn (lookupWait); the
// regeneration is charged to it, as is the watch the request opens
// (absentCache.CreateDeltaWatch, whose cost grows with what the node
// holds). An error ends the stream: the control plane stopping, or the
// stream ending, during the wait (answering from the snapshot as it
// stands could say a destination that exists does not).
func (s *Server) listenersAsked(key streamKey, newDestinations []string) error {
	s.mu.Lock()
	st := s.streams[key]
	if st == nil || st.node == nil || !st.node.node.DestinationListeners {
		s.mu.Unlock()
		return nil
	}
	n, ctx := st.node, st.ctx
	kindChanged := n.wildcard() != n.genWildcard
	s.mu.Unlock()
	if !kindChanged && len(newDestinations) == 0 {
		return nil
	}
	if err := s.lookupWait(ctx, n); err != nil {
		return err
	}
	// After the wait: a round may have generated the node meanwhile, and
	// the stream's first request was generated before this (request).
	s.mu.Lock()
	regen := n.wildcard() != n.genWildcard
	var fresh []string
	for _, d := range newDestinations {
		if _, ok := n.genDests[d]; !ok {
			fresh = append(fresh, d)
		}
	}
	s.mu.Unlock()
	if !regen && len(fresh) > 0 {
		idx, ok := s.gen.(destinationIndex)
		regen = !ok || slices.ContainsFunc(fresh, idx.HasDestination)
	}
	if regen {
		s.lookupSpent(n, s.generateOwn(n, false))
	}
	return nil
}

// preparer is a Generator that can build what it shares between nodes
// ahead of a node's generation (translate.Generator.Prepare).
type preparer interface{ Prepare() }

// generateOwn is generateLists for a generation charged to n's lookup
// budget: what the generator shares between nodes is built first, so
// that the time charged is n's own generation, not the mesh-wide build
// the first generation after a change of the mesh makes.
func (s *Server) generateOwn(n *nodeState, keepLists bool) time.Duration {
	if p, ok := s.gen.(preparer); ok {
		p.Prepare()
	}
	return s.generateLists(n, keepLists)
}

// wildcard says whether one of n's streams subscribes to every listener.
// Called with s.mu held.
func (n *nodeState) wildcard() bool {
	for st := range n.open {
		if !st.delta || st.ldsAsked && st.ldsWildcard {
			return true
		}
	}
	return false
}

// nodeOf is n's node as Generate takes it: for a node that looks
// destinations up, with the destination listeners its streams subscribe
// to (none asked for yet: none). Called with s.mu held.
func (n *nodeState) nodeOf() xds.Node {
	node := n.node
	if !node.DestinationListeners {
		return node
	}
	if node.LookedUp = !n.wildcard(); !node.LookedUp {
		return node
	}
	seen := map[string]struct{}{}
	for st := range n.open {
		for name := range st.names[resource.ListenerType] {
			if _, dup := seen[name]; dup {
				continue
			}
			seen[name] = struct{}{}
			if _, ok := names.ParseDestinationListener(name); ok {
				node.Destinations = append(node.Destinations, name)
			}
		}
	}
	slices.Sort(node.Destinations)
	return node
}

// attach binds an authorized stream to its node, creating the node on its
// first stream.
func (s *Server) attach(st *stream, n xds.Node) *nodeState {
	id := xds.NodeID(n.Name, n.Namespace)
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, ok := s.nodes[id]
	if !ok {
		ns = &nodeState{id: id, connected: s.clock.Now(), types: map[string]*typeState{}, open: map[*stream]struct{}{}}
		ns.lookups = s.takeLookupBudget(id)
		s.nodes[id] = ns
		s.metrics.connected.Set(float64(len(s.nodes)))
		s.log.Info("sidecar connected", "node", id, "spiffe_id", n.ID.String(), "delta", st.delta)
	}
	ns.node = n // the newest stream's certificate wins
	ns.streams++
	ns.open[st] = struct{}{}
	st.node = ns
	return ns
}

func (s *Server) response(key streamKey, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[key]; st != nil && st.node != nil {
		s.sentResponse(st, typeURL, nonce, version)
	}
}

// close forgets a stream; the last stream of a node takes the node's
// snapshot and status with it.
func (s *Server) close(key streamKey) {
	s.mu.Lock()
	st := s.streams[key]
	delete(s.streams, key)
	s.mu.Unlock()
	if st == nil || st.node == nil {
		return
	}
	n := st.node
	n.gen.Lock() // no publish for n is in flight while it goes
	defer n.gen.Unlock()
	s.mu.Lock()
	n.streams--
	delete(n.open, st)
	if n.streams > 0 {
		s.mu.Unlock()
		return
	}
	n.gone = true
	delete(s.nodes, n.id)
	s.keepLookupBudget(n)
	// Under s.mu, so a new stream for the same node ID cannot publish
	// before this clears (it creates a new nodeState after this returns).
	s.cache.ClearSnapshot(n.id)
	// Under s.mu too: a new stream of the same node ID makes its
	// nodeState (attach) only after this, so its hold comes after this
	// leave and is not undone by it.
	s.eds.leave(n.id)
	s.metrics.connected.Set(float64(len(s.nodes)))
	s.mu.Unlock()
	s.log.Info("sidecar disconnected", "node", n.id)
}
