package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"k8s.io/utils/clock"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/sleep"
)

// Default backoff between failed attempts to obtain an SVID.
const (
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 60 * time.Second
)

// signTimeout bounds one Sign call, so a control plane that accepts the
// connection but never answers cannot stall renewal.
const signTimeout = 30 * time.Second

// Backoff bounds the wait between failed attempts: Initial after the first
// failure, doubling up to Max, each wait jittered to between half and all of
// its nominal value.
type Backoff struct {
	Initial time.Duration // 0 means DefaultBackoffInitial
	Max     time.Duration // 0 means DefaultBackoffMax
}

// Config configures a [Manager].
type Config struct {
	// Client reaches the control plane's certificate service. Required.
	Client certificatev1.CertificateServiceClient
	// TokenPath is the projected ServiceAccount token (audience weft-ca).
	// It is re-read for every request, because the kubelet rotates it.
	// Required.
	TokenPath string
	// Clock drives renewal and backoff timers; nil means the real clock.
	Clock clock.WithTicker
	// Logger receives warnings about failed renewals; nil discards.
	Logger *slog.Logger
	// TTL is the SVID lifetime asked for (rounded up to whole seconds);
	// 0 means the server's default.
	TTL time.Duration
	// Backoff bounds retries after failures.
	Backoff Backoff
	// Rand returns a float in [0, 1) for jitter; nil means math/rand/v2.
	Rand func() float64
}

// Manager obtains, validates, renews and serves the pod's X.509-SVID. It is
// an [x509svid.Source] and an [x509bundle.Source]. Create it with [New],
// start it with [Manager.Run]. All methods are safe for concurrent use.
type Manager struct {
	client    certificatev1.CertificateServiceClient
	tokenPath string
	clock     clock.WithTicker
	log       *slog.Logger
	ttl       time.Duration
	backoff   Backoff
	rand      func() float64

	running   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once
	renewals  atomic.Uint64
	failures  atomic.Uint64

	mu     sync.RWMutex
	svid   *x509svid.SVID     // nil until the first SVID; never modified once installed
	bundle *x509bundle.Bundle // the roots that came with svid
	subs   map[chan struct{}]struct{}
}

var (
	_ x509svid.Source   = (*Manager)(nil)
	_ x509bundle.Source = (*Manager)(nil)
)

// New checks cfg, fills in defaults and returns a Manager that holds no
// SVID yet.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil {
		return nil, errors.New("identity: Config.Client is required")
	}
	if cfg.TokenPath == "" {
		return nil, errors.New("identity: Config.TokenPath is required")
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("identity: Config.TTL %s is negative", cfg.TTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Backoff.Initial == 0 {
		cfg.Backoff.Initial = DefaultBackoffInitial
	}
	if cfg.Backoff.Max == 0 {
		cfg.Backoff.Max = DefaultBackoffMax
	}
	if cfg.Backoff.Initial < 0 || cfg.Backoff.Max < cfg.Backoff.Initial {
		return nil, fmt.Errorf("identity: Config.Backoff: want 0 < Initial <= Max, got Initial %s, Max %s",
			cfg.Backoff.Initial, cfg.Backoff.Max)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Manager{
		client:    cfg.Client,
		tokenPath: cfg.TokenPath,
		clock:     cfg.Clock,
		log:       cfg.Logger,
		ttl:       cfg.TTL,
		backoff:   cfg.Backoff,
		rand:      cfg.Rand,
		ready:     make(chan struct{}),
		subs:      make(map[chan struct{}]struct{}),
	}, nil
}

// Run obtains the first SVID, retrying until it succeeds, then renews it
// at half-life with jitter for as long as ctx lives. Failures are retried
// with backoff while the current SVID keeps being served. Run returns nil
// when ctx is done; it may be called once.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("identity: Run called twice")
	}
	failed := 0 // consecutive failures
	for {
		var wait time.Duration
		if err := m.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.failures.Add(1)
			wait = m.retryDelay(failed)
			failed++
			m.logFailure(err, failed, wait)
		} else {
			failed = 0
			wait = m.untilRenewal()
		}
		if !sleep.For(ctx, m.clock, wait) {
			return nil
		}
	}
}

// untilRenewal is how long to wait before renewing the current SVID: until
// its jittered half-life, but never less than Backoff.Initial, so that a
// certificate with an odd validity period cannot make Run spin.
func (m *Manager) untilRenewal() time.Duration {
	m.mu.RLock()
	leaf := m.svid.Certificates[0]
	m.mu.RUnlock()
	at := certs.RenewalTime(leaf.NotBefore, leaf.NotAfter, m.rand())
	return max(at.Sub(m.clock.Now()), m.backoff.Initial)
}

// retryDelay is the wait after the given number of earlier consecutive
// failures: Initial * 2^failed, capped at Max, then scaled into [d/2, d).
func (m *Manager) retryDelay(failed int) time.Duration {
	d := m.backoff.Initial
	for i := 0; i < failed && d < m.backoff.Max; i++ {
		d *= 2
	}
	d = min(d, m.backoff.Max)
	return d/2 + time.Duration(m.rand()*float64(d/2))
}

func (m *Manager) logFailure(err error, attempt int, retryIn time.Duration) {
	m.mu.RLock()
	svid := m.svid
	m.mu.RUnlock()
	attrs := []any{"err", err, "attempt", attempt, "retry_in", retryIn}
	switch {
	case svid == nil:
		m.log.Warn("cannot obtain the first X509-SVID; retrying", attrs...)
	case !m.clock.Now().Before(svid.Certificates[0].NotAfter):
		m.log.Error("cannot renew the X509-SVID, which has expired; serving none",
			append(attrs, "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)...)
	default:
		m.log.Warn("cannot renew the X509-SVID; keeping the current one",
			append(attrs, "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)...)
	}
}

// install makes svid and bundle current, marks the Manager ready and tells
// the subscribers.
func (m *Manager) install(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.svid, m.bundle = svid, bundle
	m.renewals.Add(1)
	m.readyOnce.Do(func() { close(m.ready) })
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending; the subscriber will read the newest state
		}
	}
	m.log.Info("installed X509-SVID", "spiffe_id", svid.ID.String(),
		"not_after", svid.Certificates[0].NotAfter)
}
