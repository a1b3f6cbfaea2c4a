package identity

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/keyedrate"
)

// sweepIdle is how long a rate-limit bucket is kept unused: an attacker
// cycling identities or addresses cannot grow the limiters without bound.
const sweepIdle = 10 * time.Minute

// Config configures a Service. Nil fields get defaults.
type Config struct {
	CA            *certs.CA
	Authenticator Authenticator
	Logger        *slog.Logger
	Clock         clock.PassiveClock // nil: the real clock
	// Registerer receives the service's metrics; nil means none are exported.
	Registerer prometheus.Registerer
	// MaxTTL caps what a caller may ask for; 0 means 24h.
	MaxTTL time.Duration
	// RateLimit is the sustained signing rate allowed per identity (0 means
	// 1 per second) and RateBurst the bucket size (0 means 10). A pod signs
	// once a day; a restarting Deployment of N replicas of one service
	// account signs N times at once, which the burst absorbs.
	RateLimit rate.Limit
	RateBurst int
	// SourceRateLimit and SourceBurst bound requests per source address
	// (the pod IP: the pod network has no NAT) before any API call is made
	// for them: 5 per second, burst 20. A flood of bad tokens costs the
	// API server nothing past that.
	SourceRateLimit rate.Limit
	SourceBurst     int
	// ServerNames maps the SPIFFE IDs of weft's own servers to the DNS names
	// their serving certificates carry. Nobody else gets a DNS name.
	ServerNames map[spiffeid.ID][]string
}

// Refusal reasons, the values of the reason label.
const (
	reasonNoToken     = "no_token"
	reasonBadToken    = "token_refused"
	reasonReviewError = "tokenreview_error"
	reasonBadID       = "bad_identity"
	reasonRateLimited = "rate_limited"
	reasonSourceLimit = "source_rate_limited"
	reasonBadCSR      = "bad_csr"
	reasonBadTTL      = "bad_ttl"
	reasonSignError   = "sign_error"
)

// Service implements the CertificateService.
type Service struct {
	certificatev1.UnimplementedCertificateServiceServer

	cfg      Config
	log      *slog.Logger
	clock    clock.PassiveClock
	limiter  *keyedrate.Limiter // per pod (UID), after authentication
	sources  *keyedrate.Limiter // per source address, before it
	issued   prometheus.Counter
	refusals *prometheus.CounterVec
	latency  prometheus.Histogram
}

var _ certificatev1.CertificateServiceServer = (*Service)(nil)

// New returns a Service. CA and Authenticator are required.
func New(cfg Config) (*Service, error) {
	if cfg.CA == nil || cfg.Authenticator == nil {
		return nil, errors.New("identity: New: CA and Authenticator are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 1
	}
	if cfg.RateBurst == 0 {
		cfg.RateBurst = 10
	}
	if cfg.SourceRateLimit == 0 {
		cfg.SourceRateLimit = 5
	}
	if cfg.SourceBurst == 0 {
		cfg.SourceBurst = 20
	}
	s := &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		clock:   cfg.Clock,
		limiter: keyedrate.New(keyedrate.Config{Limit: cfg.RateLimit, Burst: cfg.RateBurst, IdleAfter: sweepIdle}),
		sources: keyedrate.New(keyedrate.Config{Limit: cfg.SourceRateLimit, Burst: cfg.SourceBurst, IdleAfter: sweepIdle}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_ca_svids_issued_total", Help: "X.509-SVIDs signed by the certificate service.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_ca_sign_refusals_total", Help: "Certificate requests refused, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_ca_sign_duration_seconds", Help: "Time to serve a certificate request, TokenReview included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	for _, r := range []string{reasonNoToken, reasonBadToken, reasonReviewError, reasonBadID, reasonRateLimited, reasonBadCSR, reasonBadTTL, reasonSignError} {
		s.refusals.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.issued, s.refusals, s.latency} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("identity: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Sign implements certificatev1.CertificateServiceServer.
func (s *Service) Sign(ctx context.Context, req *certificatev1.SignRequest) (*certificatev1.SignResponse, error) {
	start := time.Now()
	defer func() { s.latency.Observe(time.Since(start).Seconds()) }()

	if src := sourceOf(ctx); !s.sources.Allow(src, s.clock.Now(), 1) {
		return nil, s.refuse(ctx, reasonSourceLimit, codes.ResourceExhausted, "",
			fmt.Errorf("identity: %s asks faster than %.3g per second (burst %d); retry later", src, float64(s.cfg.SourceRateLimit), s.cfg.SourceBurst))
	}
	token, ok := BearerToken(ctx)
	if !ok {
		return nil, s.refuse(ctx, reasonNoToken, codes.Unauthenticated, "", errors.New(`identity: no "authorization: Bearer <token>" metadata`))
	}
	caller, err := s.cfg.Authenticator.Authenticate(ctx, token)
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			return nil, s.refuse(ctx, reasonBadToken, codes.Unauthenticated, "", err)
		}
		return nil, s.refuse(ctx, reasonReviewError, codes.Unavailable, "", err)
	}
	id, err := spiffeid.FromSegments(s.cfg.CA.TrustDomain(), "ns", caller.Namespace, "sa", caller.ServiceAccount)
	if err != nil {
		return nil, s.refuse(ctx, reasonBadID, codes.InvalidArgument, "", fmt.Errorf("identity: no SPIFFE ID for %s/%s: %w", caller.Namespace, caller.ServiceAccount, err))
	}
	// Per pod: one noisy pod does not starve its ServiceAccount's others.
	if !s.limiter.Allow(cmp.Or(caller.PodUID, id.String()), s.clock.Now(), 1) {
		return nil, s.refuse(ctx, reasonRateLimited, codes.ResourceExhausted, id.String(),
			fmt.Errorf("identity: pod %s/%s (%s) asks faster than %.3g per second (burst %d); retry later",
				caller.Namespace, caller.PodName, id, float64(s.cfg.RateLimit), s.cfg.RateBurst))
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl < 0 {
		return nil, s.refuse(ctx, reasonBadTTL, codes.InvalidArgument, id.String(), fmt.Errorf("identity: negative ttl_seconds %d", req.GetTtlSeconds()))
	}
	if ttl == 0 || ttl > s.cfg.MaxTTL {
		ttl = s.cfg.MaxTTL
	}
	if _, err := certs.ParseCSR(req.GetCsr()); err != nil {
		return nil, s.refuse(ctx, reasonBadCSR, codes.InvalidArgument, id.String(), err)
	}
	chain, err := s.cfg.CA.Sign(certs.SignRequest{CSR: req.GetCsr(), ID: id, DNSNames: s.cfg.ServerNames[id], TTL: ttl})
	if err != nil {
		return nil, s.refuse(ctx, reasonSignError, codes.InvalidArgument, id.String(), err)
	}
	resp := &certificatev1.SignResponse{SpiffeId: id.String()}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	for _, r := range s.cfg.CA.Bundle().X509Authorities() {
		resp.TrustBundle = append(resp.TrustBundle, r.Raw)
	}
	s.issued.Inc()
	s.log.InfoContext(ctx, "signed SVID", "spiffe_id", id.String(), "pod", caller.Namespace+"/"+caller.PodName,
		"serial", chain[0].SerialNumber.Text(16), "not_after", chain[0].NotAfter)
	return resp, nil
}

func (s *Service) refuse(ctx context.Context, reason string, code codes.Code, id string, err error) error {
	s.refusals.WithLabelValues(reason).Inc()
	s.log.WarnContext(ctx, "refused certificate request", "reason", reason, "spiffe_id", id, "err", err.Error())
	return status.Error(code, err.Error())
}

// BearerToken reads "authorization: Bearer <token>" from a call's
// metadata: how a workload presents its ServiceAccount token to the
// certificate service and on its ADS and audit streams.
func BearerToken(ctx context.Context) (string, bool) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", false
	}
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok && strings.TrimSpace(tok) != "" {
			return strings.TrimSpace(tok), true
		}
	}
	return "", false
}

// sourceOf is the request's source address without its port ("" when
// unknown: such requests share one bucket).
func sourceOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		return ap.Addr().Unmap().String()
	}
	return p.Addr.String()
}
