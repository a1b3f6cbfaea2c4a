package audit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/internal/keyedrate"
)

// The wire format (sidecar/audit): metadata namespace, log name and fields.
const (
	metadataKey = apiaudit.EntryMetadataKey
	logName     = apiaudit.LogName
)

// ServiceConfig configures a Service. Zero fields get the defaults in
// their comments.
type ServiceConfig struct {
	Store *Store // required
	// Authorizer (required) decides who may hold a pod's stream (client
	// certificate, the pod's token, its pod and peer address) and ends the
	// stream when the pod goes or the certificate expires; see
	// controlplane/streamauth. ADS uses the same.
	Authorizer *streamauth.Authorizer
	// TopDestinations bounds the destination label of the egress metrics:
	// 50 values, the rest "other".
	TopDestinations int
	// OnStored, if set, sees each newly stored event (never a duplicate);
	// it must not block (the OTLP exporter's Export queues).
	OnStored func(apiaudit.Event)
	// EventsPerSecond and Burst limit each pod's events (a token bucket
	// per namespace/pod): 50/s, burst 2,000. A message over the limit
	// ends the stream with ResourceExhausted; the sidecar keeps its events
	// and resends them after its backoff, so the limit slows a flood and
	// loses nothing a sidecar still holds.
	EventsPerSecond float64
	Burst           int
	// MaxClockSkew is how far past the receive time an event's Time may
	// be before it is clamped to it: 1m.
	MaxClockSkew time.Duration
	// MaxSummaryRows bounds a GET /audit/summary: MaxSummaryRows (0).
	MaxSummaryRows int
	Logger         *slog.Logger
	Clock          clock.PassiveClock
	Registerer     prometheus.Registerer // nil: a private registry
}

// Service receives audit events (ALS) and answers queries (Handler).
type Service struct {
	alsv3.UnimplementedAccessLogServiceServer

	cfg   ServiceConfig
	store *Store
	log   *slog.Logger
	m     *serviceMetrics

	limits *keyedrate.Limiter // namespace/pod
}

var _ alsv3.AccessLogServiceServer = (*Service)(nil)

// NewService checks cfg and registers the metrics.
func NewService(cfg ServiceConfig) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("audit: NewService: Config.Store is nil")
	case cfg.Authorizer == nil:
		return nil, errors.New("audit: NewService: Config.Authorizer is nil")
	}
	if cfg.TopDestinations <= 0 {
		cfg.TopDestinations = 50
	}
	if cfg.EventsPerSecond <= 0 {
		cfg.EventsPerSecond = 50
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 2000
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	m, err := newServiceMetrics(cfg.Registerer, cfg.TopDestinations, cfg.Clock, cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("audit: NewService: metrics: %w", err)
	}
	return &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger, m: m,
		limits: keyedrate.New(keyedrate.Config{Limit: rate.Limit(cfg.EventsPerSecond), Burst: cfg.Burst, MaxKeys: maxLimiters})}, nil
}

// Register adds the access-log service to a gRPC server.
func (s *Service) Register(gs grpc.ServiceRegistrar) { alsv3.RegisterAccessLogServiceServer(gs, s) }

// Pruned counts events the store's retention removed (pass to Store.Run).
func (s *Service) Pruned(n int) { s.m.pruned.Add(float64(n)) }

// StreamAccessLogs stores one sidecar's audit events. See the package doc
// for what is checked; the response is sent once the sidecar half-closes
// and everything it sent is committed.
func (s *Service) StreamAccessLogs(stream grpc.ClientStreamingServer[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse]) error {
	g, err := s.cfg.Authorizer.Authorize(stream.Context(), "audit", "the access-log stream")
	if err == nil {
		// Recv and Send fail once the grant ends (pod gone, certificate
		// expired); its cause is then the stream's status.
		err = s.serve(&grpc.GenericServerStream[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse]{ServerStream: streamauth.Stream(stream, g)}, g)
		if cause := g.Err(); cause != nil {
			err = cause
		}
	}
	if err != nil {
		code := status.Code(err)
		s.m.refused.WithLabelValues(code.String()).Inc()
		s.log.Warn("stream refused", "peer", peerAddr(stream.Context()), "code", code.String(), "err", status.Convert(err).Message())
	}
	return err
}

// node is who a stream speaks for.
type node struct {
	id             spiffeid.ID
	pod, namespace string
}

func (s *Service) serve(stream grpc.ClientStreamingServer[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse], g *streamauth.Grant) error {
	var n *node
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if n == nil {
			if n, err = identify(g, msg.GetIdentifier()); err != nil {
				return err
			}
		}
		events, err := decode(n, msg)
		if err != nil {
			return err
		}
		now := s.cfg.Clock.Now()
		if !s.limits.Allow(n.namespace+"/"+n.pod, now, len(events)) {
			s.m.events.WithLabelValues("rate_limited").Add(float64(len(events)))
			return status.Errorf(codes.ResourceExhausted, "audit: node %s.%s sends more than %g events/s (burst %d): resend later",
				n.pod, n.namespace, s.cfg.EventsPerSecond, s.cfg.Burst)
		}
		if g.Context().Err() != nil {
			return cmp.Or(g.Err(), g.Context().Err()) // nothing stored after the grant ends
		}
		for i := range events {
			s.stamp(&events[i], now)
		}
		added, evicted, err := s.store.Insert(events)
		if err != nil {
			s.log.Error("storing events failed", "node", n.pod+"."+n.namespace, "err", err)
			return status.Errorf(codes.Unavailable, "audit: storing events: %v", err)
		}
		s.m.stored(len(added), len(events)-len(added))
		if evicted > 0 {
			s.m.evicted.Add(float64(evicted))
			s.log.Warn("store full, oldest events evicted", "evicted", evicted, "cap", s.store.Cap())
		}
		for _, e := range added {
			s.m.dest.observe(e)
			if s.cfg.OnStored != nil {
				s.cfg.OnStored(e)
			}
		}
	}
}

// maxLimiters bounds the per-pod buckets held; past it, the ones that are
// full again (idle pods) are forgotten.
const maxLimiters = 20_000

// Field caps: no sidecar writes more (a DNS name is at most 253 bytes, a
// policy "<ns>/<name>" 317, a reason one sentence), so anything longer is
// cut, counted, and marked with a trailing "…".
var fieldCaps = []struct {
	name string
	max  int
	get  func(*apiaudit.Event) *string
}{
	{"dstHost", 260, func(e *apiaudit.Event) *string { return &e.DstHost }},
	{"service", 320, func(e *apiaudit.Event) *string { return &e.Service }},
	{"sni", 260, func(e *apiaudit.Event) *string { return &e.SNI }},
	{"host", 270, func(e *apiaudit.Event) *string { return &e.Host }},
	{"protocol", 16, func(e *apiaudit.Event) *string { return &e.Protocol }},
	{"policy", 320, func(e *apiaudit.Event) *string { return &e.Policy }},
	{"rule", 32, func(e *apiaudit.Event) *string { return &e.Rule }},
	{"outbound", 32, func(e *apiaudit.Event) *string { return &e.Outbound }},
	{"chain", 512, func(e *apiaudit.Event) *string { return &e.Chain }},
	{"reason", 1024, func(e *apiaudit.Event) *string { return &e.Reason }},
}

// stamp makes e the control plane's record: received now, its Time no
// later than now plus the allowed skew, every field within its cap.
func (s *Service) stamp(e *apiaudit.Event, now time.Time) {
	e.Received = now.UTC()
	if e.Time.After(now.Add(s.cfg.MaxClockSkew)) {
		e.Time = e.Received
		s.m.clamped.Inc()
	}
	for _, f := range fieldCaps {
		if p := f.get(e); len(*p) > f.max {
			*p = strings.ToValidUTF8((*p)[:f.max-len("…")], "") + "…"
			s.m.truncated.WithLabelValues(f.name).Inc()
		}
	}
}

// identify checks the first message's identifier against the stream's
// grant: the node must be the pod whose token the stream carries.
func identify(g *streamauth.Grant, ident *alsv3.StreamAccessLogsMessage_Identifier) (*node, error) {
	if ident == nil || ident.GetNode().GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "audit: the first message must carry an identifier with node.id \"<pod>.<namespace>\"")
	}
	if ident.GetLogName() != logName {
		return nil, status.Errorf(codes.InvalidArgument, "audit: log_name %q, want %q", ident.GetLogName(), logName)
	}
	nodeID := ident.GetNode().GetId()
	i := strings.LastIndexByte(nodeID, '.')
	if i <= 0 || i == len(nodeID)-1 {
		return nil, status.Errorf(codes.InvalidArgument, "audit: node ID %q is not <pod>.<namespace>", nodeID)
	}
	n := &node{id: g.ID, pod: nodeID[:i], namespace: nodeID[i+1:]}
	if n.pod != g.Pod || n.namespace != g.Namespace {
		return nil, status.Errorf(codes.PermissionDenied, "audit: node %q refused: the stream's token is pod %s/%s's", nodeID, g.Namespace, g.Pod)
	}
	return n, nil
}

// decode converts and checks a whole message: either every event of it is
// the node's own and well-formed, or the stream is refused.
func decode(n *node, msg *alsv3.StreamAccessLogsMessage) ([]apiaudit.Event, error) {
	if msg.GetHttpLogs() != nil {
		return nil, status.Error(codes.InvalidArgument, "audit: HTTP access-log entries are not accepted; weft sends TCP entries")
	}
	entries := msg.GetTcpLogs().GetLogEntry()
	out := make([]apiaudit.Event, 0, len(entries))
	for i, en := range entries {
		e, err := fromEntry(en)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "audit: entry %d: %v", i, err)
		}
		if e.SourceID != n.id.String() {
			return nil, status.Errorf(codes.PermissionDenied, "audit: event %s has source %q, but the stream's client certificate is %s",
				e.ID, e.SourceID, n.id)
		}
		if e.Pod != n.pod || e.Namespace != n.namespace {
			return nil, status.Errorf(codes.PermissionDenied, "audit: event %s is for pod %s.%s, but the stream is node %s.%s",
				e.ID, e.Pod, e.Namespace, n.pod, n.namespace)
		}
		out = append(out, e)
	}
	return out, nil
}

// fromEntry reads an entry the way sidecar/audit.Entry writes it.
func fromEntry(en *accesslogdatav3.TCPAccessLogEntry) (apiaudit.Event, error) {
	c := en.GetCommonProperties()
	md := c.GetMetadata().GetFilterMetadata()[metadataKey].GetFields()
	str := func(k string) string { return md[k].GetStringValue() }
	e := apiaudit.Event{
		ID: str(apiaudit.FieldID), SourceID: str(apiaudit.FieldSource), Pod: str(apiaudit.FieldPod), Namespace: str(apiaudit.FieldNamespace),
		DstHost: str(apiaudit.FieldDstHost), Service: str(apiaudit.FieldService), SNI: str(apiaudit.FieldSNI), Host: str(apiaudit.FieldHost), Protocol: str(apiaudit.FieldProtocol),
		Decision: str(apiaudit.FieldDecision), Policy: str(apiaudit.FieldPolicy), Rule: str(apiaudit.FieldRule), Outbound: str(apiaudit.FieldOutbound), Chain: str(apiaudit.FieldChain), Reason: str(apiaudit.FieldReason),
		BytesSent:     int64(min(en.GetConnectionProperties().GetReceivedBytes(), 1<<62)),
		BytesReceived: int64(min(en.GetConnectionProperties().GetSentBytes(), 1<<62)),
	}
	switch {
	case e.ID == "":
		return e, fmt.Errorf("no %s.id", metadataKey)
	case c.GetStreamId() != "" && c.GetStreamId() != e.ID:
		return e, fmt.Errorf("event %s: stream_id %q differs from the metadata id", e.ID, c.GetStreamId())
	case len(e.ID) > 256:
		return e, fmt.Errorf("event ID of %d bytes", len(e.ID))
	case c.GetStartTime() == nil:
		return e, fmt.Errorf("event %s: no start_time", e.ID)
	}
	switch e.Decision {
	case "allow", "deny", "audit":
	default:
		return e, fmt.Errorf("event %s: decision %q is not allow, deny or audit", e.ID, e.Decision)
	}
	e.Time = c.GetStartTime().AsTime().UTC()
	e.Duration = c.GetDuration().AsDuration()
	if sa := c.GetDownstreamLocalAddress().GetSocketAddress(); sa != nil {
		ip, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			return e, fmt.Errorf("event %s: destination address: %w", e.ID, err)
		}
		e.DstIP, e.DstPort = ip, uint16(sa.GetPortValue())
	}
	return e, nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
