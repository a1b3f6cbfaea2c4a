package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/internal/sleep"
	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

// ClientConfig configures a [Client]. NodeID and one of Conn or Dial are
// required.
type ClientConfig struct {
	// Conn is the control-plane connection; each stream attempt uses it.
	Conn grpc.ClientConnInterface
	// Dial, if set instead, makes a connection per stream attempt; one that
	// is an io.Closer is closed when its stream ends.
	Dial func(ctx context.Context) (grpc.ClientConnInterface, error)
	// NodeID is "<pod>.<namespace>".
	NodeID string
	// Delta selects the incremental protocol instead of state-of-the-world.
	Delta bool
	// OnDemand (delta only) subscribes to clusters by name: those the
	// listeners, routes and access logs need, and the in-mesh Services'
	// clusters (model.Config.OnDemandClusters) only once a connection asks
	// for one with Demand. The sidecar then holds the clusters and
	// endpoints of the Services it reaches, not of the whole mesh.
	OnDemand bool
	// OnDemandIdle is how long a cluster learnt on demand stays after its
	// last connection ended (zero: 10 minutes); then it is unsubscribed and
	// dropped with its endpoints.
	OnDemandIdle time.Duration
	// TrustDomain of the mesh (zero: cluster.local): the trust bundle's, and
	// the only one SANs and RBAC principals may name.
	TrustDomain spiffeid.TrustDomain
	// UserAgentVersion is sent in the node (e.g. weft's version).
	UserAgentVersion string
	// MaxDestinations bounds the destinations looked up at once
	// (Destination); 0: DefaultMaxDestinations.
	MaxDestinations int
	// DestinationListeners: the node says it takes the in-mesh chains as
	// destination listeners (client feature
	// names.FeatureDestinationListeners), each matched for its own address
	// and port (model.Config.OutboundFor).
	DestinationListeners bool
	Logger               *slog.Logger // nil: discard
	Clock                clock.Clock  // nil: real clock
	Backoff              Backoff
}

// Backoff is the reconnect delay: Initial (500ms), doubling per failed
// attempt up to Max (30s), each with jitter in [d/2, d). A stream that
// received a response resets it, unless it ended because a message was
// too large (ResourceExhausted): the next stream would most likely get the
// same response, so that end counts as a failed attempt.
type Backoff struct {
	Initial, Max time.Duration
}

func (b Backoff) delay(attempt int) time.Duration {
	d := b.Initial
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + rand.N(d/2+1)
}

// Client is the sidecar's ADS client. Run it once; read the configuration
// with Current or Subscribe.
type Client struct {
	cfg   ClientConfig
	log   *slog.Logger
	clock clock.Clock
	node  *corev3.Node

	current atomic.Pointer[model.Config]
	ready   chan struct{}
	running atomic.Bool

	mu      sync.Mutex // guards what follows
	subs    map[chan *model.Config]struct{}
	st      Status
	demands map[string]*demand // clusters asked for on demand, by name
	// dests are the destinations looked up (lookup), by listener name.
	dests map[string]*destDemand

	// wake tells Run's goroutine that the clusters asked for changed.
	wake chan struct{}

	// Owned by Run's goroutine.
	res      state
	versions map[string]string // type URL -> version of the last accepted response
	received map[string]bool   // type URL -> a response was accepted
	built    *model.Config     // of res, complete or not (nil before the first)
}

// demand is one cluster asked for on demand: refs connections use it; idle
// is when the last of them ended; absent is closed when the control plane
// answered that it has no such cluster (the demand is then forgotten).
type demand struct {
	refs   int
	idle   time.Time
	absent chan struct{}
}

// destDemand is one destination looked up (ClientConfig.DestinationListeners
// on demand): refs connections deciding on it now; idle when the last
// ended; answered is closed at the control plane's first answer, a
// listener or "none" (absent, kept while subscribed: a listener for it
// comes in the same type's responses, so the answer is never stale).
type destDemand struct {
	refs     int
	idle     time.Time
	absent   bool
	answered chan struct{}
	// subscribed: a request of this stream newly subscribed to its name
	// since it was made (subscribedDests). One made after its name was forgotten (evicted,
	// idle) while the stream still subscribes to the name is not, and is
	// unsubscribed and subscribed again (staleDests): the control plane
	// answers a name when it is newly subscribed, not again.
	subscribed bool
}

// DefaultMaxDestinations is how many destinations a sidecar keeps looked
// up at once. The app chooses destinations, so without a bound it could make
// the sidecar subscribe to every address it can name; past it the idlest
// unused one is forgotten, and with none unused a connection is refused
// (ErrTooManyDestinations).
const DefaultMaxDestinations = 4096

// ErrTooManyDestinations is Destination's error when MaxDestinations are
// in use.
var ErrTooManyDestinations = errors.New("too many destinations looked up at once")

// ErrNoSuchCluster is Demand's error when the control plane answers that
// it has no cluster of the name asked for (a Service deleted since the
// listener naming it was sent).
var ErrNoSuchCluster = errors.New("the control plane has no such cluster")

// features are the client features the node sends (xDS node
// client_features).
func features(cfg ClientConfig) []string {
	if cfg.DestinationListeners {
		return []string{names.FeatureDestinationListeners}
	}
	return nil
}

// Status is the client's state for the admin endpoint.
type Status struct {
	Node       string
	Delta      bool
	Connected  bool
	Ready      bool
	Versions   map[string]string // of the current configuration, by type URL
	Waiting    []string          // accepted but not yet current: what is still missing
	Acks       uint64
	Nacks      map[string]uint64 // by resource kind: cluster, endpoints, listener, route configuration, secret
	Reconnects uint64
	// TooLarge counts streams that ended because a message was too large
	// (ResourceExhausted): over names.MaxXDSMessageSize, which the control
	// plane should never send.
	TooLarge  uint64
	LastNack  *Nack
	LastError string // why the last stream ended
	// Demanded are the clusters asked for on demand and not yet dropped
	// (ClientConfig.OnDemand), sorted.
	Demanded []string `json:",omitempty"`
	// Destinations are the destination listeners looked up
	// (ClientConfig.DestinationListeners) and not yet forgotten.
	Destinations []string `json:",omitempty"`
}

// Nack is a rejected response.
type Nack struct {
	TypeURL string
	Version string
	Error   string
	Time    time.Time
}

// New returns a client; it does nothing until Run.
func New(cfg ClientConfig) (*Client, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("xds: NodeID is required")
	}
	if cfg.Conn == nil && cfg.Dial == nil {
		return nil, errors.New("xds: Conn or Dial is required")
	}
	if cfg.OnDemand && !cfg.Delta {
		return nil, errors.New("xds: OnDemand needs Delta: state-of-the-world cannot subscribe to clusters by name")
	}
	if cfg.MaxDestinations <= 0 {
		cfg.MaxDestinations = DefaultMaxDestinations
	}
	if cfg.OnDemandIdle <= 0 {
		cfg.OnDemandIdle = 10 * time.Minute
	}
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString(names.DefaultTrustDomain)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = 500 * time.Millisecond
	}
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		cfg.Backoff.Max = max(30*time.Second, cfg.Backoff.Initial)
	}
	return &Client{
		cfg:   cfg,
		log:   cfg.Logger,
		clock: cfg.Clock,
		node: &corev3.Node{Id: cfg.NodeID, UserAgentName: "weft-sidecar",
			UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: cfg.UserAgentVersion},
			ClientFeatures:       features(cfg)},
		ready:    make(chan struct{}),
		subs:     map[chan *model.Config]struct{}{},
		demands:  map[string]*demand{},
		dests:    map[string]*destDemand{},
		wake:     make(chan struct{}, 1),
		st:       Status{Node: cfg.NodeID, Delta: cfg.Delta, Nacks: map[string]uint64{}},
		res:      state{},
		versions: map[string]string{},
		received: map[string]bool{},
	}, nil
}

// Current returns the configuration in force: the last complete one
// accepted, nil before the first. It stays when the control plane is away.
func (c *Client) Current() *model.Config { return c.current.Load() }

// Ready is closed when the first complete configuration is current.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Subscribe returns a channel that receives every new current
// configuration (only the latest if the reader is slow) and a function
// that ends the subscription.
func (c *Client) Subscribe() (<-chan *model.Config, func()) {
	ch := make(chan *model.Config, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	if cur := c.Current(); cur != nil {
		ch <- cur
	}
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// Status returns a copy of the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	s.Nacks = maps.Clone(c.st.Nacks)
	s.Waiting = slices.Clone(c.st.Waiting)
	if cur := c.Current(); cur != nil {
		s.Versions = maps.Clone(cur.Version)
	}
	if c.st.LastNack != nil {
		n := *c.st.LastNack
		s.LastNack = &n
	}
	s.Demanded = slices.Sorted(maps.Keys(c.demands))
	s.Destinations = slices.Sorted(maps.Keys(c.dests))
	return s
}

// Demand returns a current configuration that holds cluster name, asking
// the control plane for it first if it is learnt on demand and not held
// (ClientConfig.OnDemand): it waits for the cluster and, for an EDS one,
// its endpoints, until ctx ends or the control plane answers that it has
// no such cluster (then an error, ErrNoSuchCluster for the latter: the
// caller refuses the connection, failing closed). release says the connection that asked is
// done with it: a cluster no connection holds is dropped after
// OnDemandIdle. Without OnDemand it waits the same way for a cluster the
// control plane sends unasked.
func (c *Client) Demand(ctx context.Context, name string) (cfg *model.Config, release func(), err error) {
	c.mu.Lock()
	d := c.demands[name]
	asked := d == nil
	if asked {
		d = &demand{absent: make(chan struct{})}
		c.demands[name] = d
	}
	d.refs++
	c.mu.Unlock()
	release = sync.OnceFunc(func() {
		c.mu.Lock()
		if d.refs--; d.refs == 0 {
			d.idle = c.clock.Now()
		}
		c.mu.Unlock()
	})
	// A new demand always wakes Run, even for a cluster held now: it may
	// be one being dropped (idle) by a subscription read before this
	// demand existed.
	if asked && c.cfg.OnDemand {
		select {
		case c.wake <- struct{}{}:
		default: // a wake-up is pending; it reads every demand
		}
	}
	if cur := c.Current(); cur != nil && cur.Clusters[name] != nil {
		return cur, release, nil
	}
	ch, unsubscribe := c.Subscribe()
	defer unsubscribe()
	for {
		select {
		case cfg := <-ch:
			if cfg.Clusters[name] != nil {
				return cfg, release, nil
			}
		case <-d.absent:
			release()
			return nil, nil, fmt.Errorf("xds: cluster %q: %w", name, ErrNoSuchCluster)
		case <-ctx.Done():
			release()
			return nil, nil, fmt.Errorf("xds: cluster %q not received: %w", name, context.Cause(ctx))
		}
	}
}

// lookup says whether the client looks destinations up: destination
// listeners, subscribed by name on demand (delta).
func (c *Client) lookup() bool { return c.cfg.DestinationListeners && c.cfg.OnDemand }

// Destination returns a current configuration that decides a connection
// to ap: one holding ap's destination listener, or one after the control
// plane answered it has none (then Config.OutboundFor(ap) is the outbound
// listener). It asks for it first if not known, and waits until ctx ends
// (then an error: the caller refuses the connection, failing closed).
// release says the connection has decided: a destination no connection
// is deciding on is forgotten OnDemandIdle after the last.
func (c *Client) Destination(ctx context.Context, ap netip.AddrPort) (cfg *model.Config, release func(), err error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	name := names.DestinationListener(ap)
	c.mu.Lock()
	d := c.dests[name]
	asked := d == nil
	if asked {
		if len(c.dests) >= c.cfg.MaxDestinations && !c.evictIdleDestLocked() {
			c.mu.Unlock()
			return nil, nil, fmt.Errorf("xds: destination %s: %w (%d)", ap, ErrTooManyDestinations, c.cfg.MaxDestinations)
		}
		d = &destDemand{answered: make(chan struct{})}
		c.dests[name] = d
	}
	d.refs++
	c.mu.Unlock()
	release = sync.OnceFunc(func() {
		c.mu.Lock()
		if d.refs--; d.refs == 0 {
			d.idle = c.clock.Now()
		}
		c.mu.Unlock()
	})
	if asked {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	decided := func(cfg *model.Config) bool {
		if cfg == nil {
			return false
		}
		if cfg.Destinations[ap] != nil {
			return true
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return d.absent
	}
	if cur := c.Current(); decided(cur) {
		return cur, release, nil
	}
	ch, unsubscribe := c.Subscribe()
	defer unsubscribe()
	answered := d.answered
	for {
		select {
		case cfg := <-ch:
			if decided(cfg) {
				return cfg, release, nil
			}
		case <-answered:
			if cur := c.Current(); decided(cur) {
				return cur, release, nil
			}
			// The listener came in a configuration not complete yet (its
			// route to come): the one that completes it comes on ch.
			answered = nil
		case <-ctx.Done():
			release()
			return nil, nil, fmt.Errorf("xds: destination %s not answered: %w", ap, context.Cause(ctx))
		}
	}
}

// evictIdleDestLocked forgets the destination no connection is deciding
// on that has been idle longest, and says whether there was one. Called
// with c.mu held.
func (c *Client) evictIdleDestLocked() bool {
	var oldest string
	for n, d := range c.dests {
		if d.refs == 0 && (oldest == "" || d.idle.Before(c.dests[oldest].idle)) {
			oldest = n
		}
	}
	if oldest == "" {
		return false
	}
	delete(c.dests, oldest)
	return true
}

// answeredDests records the control plane's answers in a listeners
// response: a destination listener sent is held (no longer absent); one
// removed does not exist (never did, or no longer).
func (c *Client) answeredDests(sent, removed []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range sent {
		if d := c.dests[n]; d != nil {
			d.absent = false
			closeOnce(d.answered)
		}
	}
	for _, n := range removed {
		if d := c.dests[n]; d != nil {
			d.absent = true
			closeOnce(d.answered)
		}
	}
}

// subscribedDests records that a request subscribed to names (newly: the
// control plane answers each).
func (c *Client) subscribedDests(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		if d := c.dests[n]; d != nil {
			d.subscribed = true
		}
	}
}

// staleDests returns the names among subscribed (what the stream
// subscribes to) of destinations looked up that no request subscribed to
// since they were made: forgotten and looked up again before the
// subscription changed.
func (c *Client) staleDests(subscribed []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range subscribed {
		if d := c.dests[n]; d != nil && !d.subscribed {
			out = append(out, n)
		}
	}
	return out
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// forgetAbsent fails the connections waiting for the demanded clusters
// among names, which the control plane answered it does not have, and
// forgets those demands, so the next connection asks again; it returns the
// names it forgot.
func (c *Client) forgetAbsent(names []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var forgot []string
	for _, name := range names {
		if d := c.demands[name]; d != nil {
			close(d.absent)
			delete(c.demands, name)
			forgot = append(forgot, name)
		}
	}
	return forgot
}

// expire forgets the demands no connection has held for OnDemandIdle and
// reports whether it forgot any.
func (c *Client) expire() bool {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.demands) + len(c.dests)
	maps.DeleteFunc(c.demands, func(_ string, d *demand) bool {
		return d.refs == 0 && now.Sub(d.idle) >= c.cfg.OnDemandIdle
	})
	maps.DeleteFunc(c.dests, func(_ string, d *destDemand) bool {
		return d.refs == 0 && now.Sub(d.idle) >= c.cfg.OnDemandIdle
	})
	return len(c.demands)+len(c.dests) < n
}

// Run holds the ADS stream until ctx ends, reconnecting with backoff. It
// returns nil when ctx ends, and an error only if called twice.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xds: Run called twice")
	}
	for attempt, n := 0, 0; ; attempt, n = attempt+1, n+1 {
		if n > 0 {
			c.mu.Lock()
			c.st.Reconnects++
			c.mu.Unlock()
		}
		healthy, err := c.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		// A stream that ends on a message too large got responses before
		// it (it is "healthy"), and the next one would most likely end the
		// same way: resetting the backoff would reconnect in a loop.
		tooLarge := messageTooLarge(err)
		if healthy && !tooLarge {
			attempt = 0
		}
		d := c.cfg.Backoff.delay(attempt)
		c.mu.Lock()
		c.st.Connected, c.st.LastError = false, fmt.Sprint(err)
		if tooLarge {
			c.st.TooLarge++
		}
		c.mu.Unlock()
		if tooLarge {
			c.log.Error("stream ended: a message was too large (ResourceExhausted); keeping the last good configuration, backoff not reset",
				"err", err, "limit_bytes", names.MaxXDSMessageSize, "retry_in", d)
		} else {
			c.log.Warn("stream ended; keeping the last good configuration", "err", err, "retry_in", d)
		}
		if !sleep.For(ctx, c.clock, d) {
			return nil
		}
	}
}

// messageTooLarge says whether a stream ended because a message exceeded a
// size limit: gRPC's ResourceExhausted ("grpc: received message larger
// than max", or the server's "trying to send message larger than max"),
// or an error that says so in words.
func messageTooLarge(err error) bool {
	return status.Code(err) == codes.ResourceExhausted || err != nil && strings.Contains(err.Error(), "message larger than max")
}

// stream runs one stream; healthy reports whether it got any response.
func (c *Client) stream(ctx context.Context) (healthy bool, err error) {
	conn := c.cfg.Conn
	if c.cfg.Dial != nil {
		if conn, err = c.cfg.Dial(ctx); err != nil {
			return false, fmt.Errorf("xds: dial: %w", err)
		}
		if cl, ok := conn.(io.Closer); ok {
			defer cl.Close()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.Delta {
		return c.runDelta(ctx, conn)
	}
	return c.runSotw(ctx, conn)
}

func (c *Client) connected() {
	c.mu.Lock()
	c.st.Connected = true
	c.mu.Unlock()
}

// apply validates u against the accepted resources and, when the whole set
// is consistent, accepts it and returns the configuration it builds (nil
// if u changes nothing); on error nothing changes.
func (c *Client) apply(u update) (*model.Config, error) {
	next := c.res.with(u)
	if c.received[u.typeURL] && c.versions[u.typeURL] == u.version && next.equal(c.res) {
		return nil, nil
	}
	cfg, err := buildWith(c.cfg.TrustDomain, next.resources(), next.builtListeners())
	if err != nil {
		return nil, err
	}
	cfg.OnDemand = c.cfg.OnDemand
	cfg.LookUp = c.lookup()
	c.built = cfg
	c.res = next.compact(cfg)
	c.versions[u.typeURL] = u.version
	c.received[u.typeURL] = true
	cfg.Version = maps.Clone(c.versions)
	return cfg, nil
}

// accepted counts an ACK and makes cfg current if it is complete.
func (c *Client) accepted(cfg *model.Config) {
	if cfg == nil {
		c.mu.Lock()
		c.st.Acks++
		c.mu.Unlock()
		return
	}
	missing := cfg.Missing()
	for _, t := range []string{model.ClusterType, model.ListenerType} {
		// On demand, clusters are asked for by name once the listeners
		// say which: Missing names those not received.
		if !c.received[t] && !(t == model.ClusterType && c.cfg.OnDemand) {
			missing = append(missing, kindName(t)+"s")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Acks++
	c.st.Waiting = missing
	if len(missing) > 0 {
		return
	}
	c.current.Store(cfg)
	for ch := range c.subs {
		select { // keep only the latest for a slow reader
		case <-ch:
		default:
		}
		ch <- cfg
	}
	if !c.st.Ready {
		c.st.Ready = true
		close(c.ready)
		c.log.Info("configuration ready", "versions", cfg.Version)
	}
}

func (c *Client) rejected(typeURL, version string, err error) {
	c.log.Warn("NACK: keeping the last good configuration", "type", kindName(typeURL), "version", version, "err", err)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.Nacks[kindName(typeURL)]++
	c.st.LastNack = &Nack{TypeURL: typeURL, Version: version, Error: err.Error(), Time: c.clock.Now()}
}

// wanted returns the resource names to subscribe to for t from the
// accepted resources; nil for the wildcard types.
func (c *Client) wanted(t string) []string {
	switch t {
	case model.ClusterType:
		if !c.cfg.OnDemand {
			return nil
		}
		var names []string
		if c.built != nil {
			names = c.built.SubscribedClusters()
		}
		c.mu.Lock()
		names = append(names, slices.Collect(maps.Keys(c.demands))...)
		c.mu.Unlock()
		slices.Sort(names)
		return slices.Compact(names)
	case model.EndpointType, model.RouteType:
		eds, rds := c.res.references()
		if t == model.EndpointType {
			return slices.Sorted(maps.Keys(eds))
		}
		return slices.Sorted(maps.Keys(rds))
	case model.SecretType:
		return []string{model.TrustBundleSecret}
	case model.ListenerType:
		if !c.lookup() {
			return nil
		}
		names := []string{model.InboundListener, model.OutboundListener}
		c.mu.Lock()
		for n := range c.dests {
			names = append(names, n)
		}
		c.mu.Unlock()
		slices.Sort(names)
		return names
	}
	return nil
}

// The ADS methods, opened by name with envoy.OpenStream.
const (
	adsSotwMethod  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	adsDeltaMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)
