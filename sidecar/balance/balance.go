package balance

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Defaults of Config (Linkerd's proxy uses the same response-time
// defaults; the outlier defaults are Envoy's).
const (
	DefaultRTT                = 30 * time.Millisecond
	DefaultDecay              = 10 * time.Second
	DefaultBaseEjection       = 30 * time.Second
	DefaultMaxEjection        = 300 * time.Second
	DefaultInterval           = 10 * time.Second
	DefaultMaxEjectionPercent = 10
	DefaultTolerance          = 0.25
)

// ErrNoEndpoints is Pick's error when the cluster has no endpoint to offer.
var ErrNoEndpoints = errors.New("balance: no endpoints")

// Config tunes a Balancer. Zero fields take the defaults above.
type Config struct {
	// DefaultRTT is the response time assumed of an endpoint that has not
	// answered yet.
	DefaultRTT time.Duration
	// Decay is the time constant of the moving average: an observation's
	// weight falls by 1/e over Decay.
	Decay time.Duration
	// Tolerance is how much dearer than the other endpoint of a draw an
	// endpoint may look and still count as alike: costs within a factor
	// of 1+Tolerance of each other are a tie, which the endpoint picked
	// longer ago wins. Alike endpoints then share requests as evenly as
	// round robin would, however their estimates wander, while one that is
	// clearly slower or busier still loses every draw. Zero takes
	// DefaultTolerance; a negative value makes only equal costs a tie.
	Tolerance float64
	// Outlier configures ejection; its zero value disables it.
	Outlier Outlier
	// Clock reads the time (nil: the system clock).
	Clock clock.PassiveClock
	// Rand returns a uniform integer in [0, n) (nil: math/rand/v2).
	Rand func(n int) int
	// OnEject, when set, is told of each ejection: the endpoint and how
	// long it is out of rotation. It is called outside the balancer's
	// lock, after the request whose failure ejected the endpoint is
	// recorded (metrics, logs).
	OnEject func(addr netip.AddrPort, d time.Duration)
}

// Outlier is consecutive-failure ejection (Envoy's outlier_detection
// consecutive_5xx, base_ejection_time, max_ejection_time,
// max_ejection_percent, interval).
type Outlier struct {
	// Consecutive failures that eject an endpoint; 0 disables ejection.
	Consecutive int
	// BaseEjection is the first ejection's length; the n-th consecutive
	// ejection lasts n × BaseEjection, at most MaxEjection.
	BaseEjection time.Duration
	MaxEjection  time.Duration
	// MaxEjectionPercent of the endpoints may be ejected at once (at least
	// one always may).
	MaxEjectionPercent int
	// Interval: for each Interval an endpoint spends back in rotation
	// without being ejected again, its ejection multiplier falls by one.
	Interval time.Duration
}

// Result is the outcome of a request that Done reports.
type Result int

const (
	// Success: the endpoint answered (any answer that is not a Failure).
	Success Result = iota
	// Failure: the endpoint failed the request (connect error, reset, 5xx,
	// gRPC UNAVAILABLE: the caller decides). Failures count toward
	// ejection and never make an endpoint look faster.
	Failure
	// Cancelled: the request ended before the endpoint could answer (the
	// client went away, a timeout of the caller's own); nothing is learned.
	Cancelled
)

// Balancer spreads requests over one cluster's endpoints. It is safe for
// concurrent use.
type Balancer struct {
	cfg Config

	mu    sync.Mutex
	eps   []*endpoint // the current set, in Update's order
	picks uint64      // Picks so far: the sequence number of the last one
	cand  []*endpoint // Pick's scratch: the candidates, under mu
}

type endpoint struct {
	addr    netip.AddrPort
	host    string // addr as text, made once (a request's URL host)
	pending int
	rtt     float64   // moving average of response time, ns, as of at
	at      time.Time // when rtt was last updated
	fails   int       // consecutive failures
	picked  uint64    // sequence number of the last Pick that chose it (0: never)

	ejections    int       // ejection multiplier
	ejectedUntil time.Time // zero: never ejected
}

// New returns a Balancer with no endpoints.
func New(cfg Config) *Balancer {
	if cfg.DefaultRTT <= 0 {
		cfg.DefaultRTT = DefaultRTT
	}
	if cfg.Decay <= 0 {
		cfg.Decay = DefaultDecay
	}
	o := &cfg.Outlier
	if o.BaseEjection <= 0 {
		o.BaseEjection = DefaultBaseEjection
	}
	if o.MaxEjection <= 0 {
		o.MaxEjection = DefaultMaxEjection
	}
	if o.MaxEjection < o.BaseEjection {
		o.MaxEjection = o.BaseEjection
	}
	if o.MaxEjectionPercent <= 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = DefaultTolerance
	}
	cfg.Tolerance = max(cfg.Tolerance, 0)
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.IntN
	}
	return &Balancer{cfg: cfg}
}

// Update replaces the endpoint set. Endpoints that stay keep what was
// learned of them (response time, failures, ejection); new ones start at
// DefaultRTT. Requests in flight to a removed endpoint may still call Done.
// Duplicates are dropped.
func (b *Balancer) Update(addrs []netip.AddrPort) {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	old := make(map[netip.AddrPort]*endpoint, len(b.eps))
	for _, e := range b.eps {
		old[e.addr] = e
	}
	eps := make([]*endpoint, 0, len(addrs))
	seen := make(map[netip.AddrPort]bool, len(addrs))
	for _, a := range addrs {
		if seen[a] {
			continue
		}
		seen[a] = true
		e := old[a]
		if e == nil {
			e = &endpoint{addr: a, host: a.String(), rtt: float64(b.cfg.DefaultRTT), at: now}
		}
		eps = append(eps, e)
	}
	b.eps, b.cand = eps, nil
}

// Request is one pick: the endpoint to send to, and Done to report how it
// went. Done must be called exactly once (later calls do nothing).
type Request struct {
	Addr netip.AddrPort
	// Host is Addr as text ("198.18.0.7:8080", "[2001:db8::7]:8080"),
	// formatted once per endpoint rather than per request.
	Host string

	b        *Balancer
	ep       *endpoint
	start    time.Time
	done     bool
	observed bool // Observe was called: Done only ends the count in flight
}

// Pick chooses the endpoint for the next request: the cheaper of two
// distinct endpoints drawn at random among those in rotation and not in
// avoid (the endpoints a retry already tried); of two that cost alike
// (within Tolerance), the one picked longer ago. When every endpoint is
// avoided or ejected, avoid is ignored first, then ejection (panic mode),
// so a request is refused only when there is no endpoint at all.
func (b *Balancer) Pick(avoid ...netip.AddrPort) (*Request, error) {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.eps) == 0 {
		return nil, ErrNoEndpoints
	}
	cand := b.candidates(now, avoid, true)
	if len(cand) == 0 {
		cand = b.candidates(now, nil, true)
	}
	if len(cand) == 0 {
		cand = b.candidates(now, avoid, false)
	}
	if len(cand) == 0 {
		cand = b.eps
	}
	e := cand[0]
	if len(cand) > 1 {
		i := b.cfg.Rand(len(cand))
		j := b.cfg.Rand(len(cand) - 1)
		if j >= i {
			j++
		}
		e = cand[i]
		if f := cand[j]; b.better(f, e, now) {
			e = f
		}
	}
	b.picks++
	e.picked = b.picks
	e.pending++
	return &Request{Addr: e.addr, Host: e.host, b: b, ep: e, start: now}, nil
}

// PickAddr is Pick for the endpoint at addr, when it is one of the set
// (ejected or not): a request addressed to one endpoint goes there, and is
// counted as Pick's are. ok is false when addr is not an endpoint.
func (b *Balancer) PickAddr(addr netip.AddrPort) (r *Request, ok bool) {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.eps {
		if e.addr == addr {
			b.picks++
			e.picked = b.picks
			e.pending++
			return &Request{Addr: e.addr, Host: e.host, b: b, ep: e, start: now}, true
		}
	}
	return nil, false
}

// candidates are the endpoints Pick may choose, in b.cand (valid until
// the next call; under b.mu).
func (b *Balancer) candidates(now time.Time, avoid []netip.AddrPort, skipEjected bool) []*endpoint {
	out := b.cand[:0]
	for _, e := range b.eps {
		if skipEjected && e.ejected(now) {
			continue
		}
		if slices.Contains(avoid, e.addr) {
			continue
		}
		out = append(out, e)
	}
	b.cand = out
	return out
}

// estimate is e's moving average as of now: it decays toward zero while
// nothing is observed, so an endpoint that was slow is tried again in time.
func (b *Balancer) estimate(e *endpoint, now time.Time) float64 {
	dt := now.Sub(e.at)
	if dt <= 0 {
		return e.rtt
	}
	return e.rtt * math.Exp(-float64(dt)/float64(b.cfg.Decay))
}

// cost is what Pick compares: the response-time estimate (plus 1 ns, so
// that requests in flight count even once the estimate has decayed to
// nothing) times one more than the requests in flight.
func (b *Balancer) cost(e *endpoint, now time.Time) float64 {
	return (b.estimate(e, now) + 1) * float64(e.pending+1)
}

// better reports whether Pick should choose f over e: f costs less by
// more than the tolerance, or they cost alike and f was picked longer ago.
func (b *Balancer) better(f, e *endpoint, now time.Time) bool {
	cf, ce := b.cost(f, now), b.cost(e, now)
	switch k := 1 + b.cfg.Tolerance; {
	case cf*k < ce:
		return true
	case ce*k < cf:
		return false
	}
	return f.picked < e.picked
}

func (e *endpoint) ejected(now time.Time) bool { return now.Before(e.ejectedUntil) }

// Sent marks the moment the request was handed to a ready connection: the
// response time Done measures starts here rather than at Pick, so that a
// connection's set-up (TCP and TLS handshakes) is not taken for the
// endpoint's slowness. Optional; call it at most once, before Done.
func (r *Request) Sent() {
	now := r.b.cfg.Clock.Now()
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if !r.done {
		r.start = now
	}
}

// Done reports the request's outcome: the time since Pick (or Sent) is its
// response time (call it when the response's head arrives).
func (r *Request) Done(res Result) { r.settle(res, true) }

// Observe reports the outcome of a request whose response head arrived
// but which goes on for long (a protocol switch: a WebSocket's tunnel):
// its response time and res count now, as Done's would, while it stays
// counted in flight, which is what the endpoint carries, until Done (whose
// Result is then ignored). Optional; call it at most once, before Done.
func (r *Request) Observe(res Result) { r.settle(res, false) }

func (r *Request) settle(res Result, release bool) {
	b := r.b
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	if r.done {
		b.mu.Unlock()
		return
	}
	e := r.ep
	if release {
		r.done = true
		e.pending--
	}
	if res == Cancelled || r.observed {
		b.mu.Unlock()
		return
	}
	r.observed = true
	ejected := r.learn(res, now)
	b.mu.Unlock()
	if ejected > 0 && b.cfg.OnEject != nil {
		b.cfg.OnEject(e.addr, ejected)
	}
}

// learn records res, the outcome of r, which took from r.start to now,
// and returns how long its endpoint is ejected for because of it (0: not
// ejected); b.mu is held.
func (r *Request) learn(res Result, now time.Time) time.Duration {
	b, e := r.b, r.ep
	x := float64(now.Sub(r.start))
	cur := b.estimate(e, now)
	if res == Failure {
		// A failure never makes an endpoint look faster: a fast 503 is
		// not a fast answer.
		x = max(x, cur, float64(b.cfg.DefaultRTT))
	}
	if x >= cur {
		e.rtt = x
	} else {
		w := math.Exp(-float64(now.Sub(e.at)) / float64(b.cfg.Decay))
		e.rtt = w*e.rtt + (1-w)*x
	}
	e.at = now
	if res == Success {
		e.fails = 0
		return 0
	}
	e.fails++
	return b.maybeEject(e, now)
}

// maybeEject ejects e if its failures say so and the ejection limit
// allows, and returns for how long (0: not ejected); b.mu is held.
func (b *Balancer) maybeEject(e *endpoint, now time.Time) time.Duration {
	o := b.cfg.Outlier
	if o.Consecutive <= 0 || e.fails < o.Consecutive || e.ejected(now) {
		return 0
	}
	if !slices.Contains(b.eps, e) {
		return 0 // removed by Update while the request was in flight
	}
	ejected := 0
	for _, f := range b.eps {
		if f.ejected(now) {
			ejected++
		}
	}
	if ejected >= max(1, len(b.eps)*o.MaxEjectionPercent/100) {
		return 0
	}
	if !e.ejectedUntil.IsZero() {
		// One step of the multiplier back for each Interval spent in
		// rotation since the last ejection ended.
		back := int(now.Sub(e.ejectedUntil) / o.Interval)
		e.ejections = max(0, e.ejections-back)
	}
	e.ejections++
	d := min(time.Duration(e.ejections)*o.BaseEjection, o.MaxEjection)
	e.ejectedUntil = now.Add(d)
	e.fails = 0
	return d
}

// EndpointState is what the balancer knows of one endpoint, for metrics
// and the admin port.
type EndpointState struct {
	Addr     netip.AddrPort
	Pending  int
	RTT      time.Duration // the decayed estimate now
	Ejected  bool
	Until    time.Time // end of the current ejection
	Failures int       // consecutive
}

// State returns every endpoint's state, in Update's order.
func (b *Balancer) State() []EndpointState {
	now := b.cfg.Clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]EndpointState, 0, len(b.eps))
	for _, e := range b.eps {
		s := EndpointState{Addr: e.addr, Pending: e.pending, RTT: time.Duration(b.estimate(e, now)), Failures: e.fails}
		if e.ejected(now) {
			s.Ejected, s.Until = true, e.ejectedUntil
		}
		out = append(out, s)
	}
	return out
}
