package audit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/internal/sleep"
)

// OTLPConfig configures an OTLPExporter. Zero fields get the defaults in
// their comments.
type OTLPConfig struct {
	// Endpoint is the collector's OTLP/gRPC address, "host:port"
	// (required).
	Endpoint string
	// Insecure sends plaintext (a collector on the node or in the pod);
	// otherwise TLS with the TLS config, or the system roots when it is
	// nil. Insecure and TLS exclude each other.
	Insecure bool
	TLS      *tls.Config
	// Headers are sent with every export (e.g. a vendor's API key).
	Headers map[string]string
	// Resource attributes besides service.name=weft-controlplane (e.g.
	// k8s.pod.name: each replica exports what it stores).
	Resource map[string]string

	BatchSize  int           // records per export: 500
	Interval   time.Duration // a partial batch waits at most this: 1s
	QueueSize  int           // events waiting to be exported; more are dropped: 10000
	Timeout    time.Duration // of one export call: 10s
	Backoff    time.Duration // first wait after a failed export, doubling: 500ms
	MaxBackoff time.Duration // 30s

	Logger     *slog.Logger
	Clock      clock.WithTicker
	Registerer prometheus.Registerer // nil: a private registry
}

// OTLPExporter forwards stored events to an OpenTelemetry collector as
// OTLP log records, one per event. Export queues an event without
// blocking; Run batches the queue and exports it, retrying with backoff
// while the collector fails with a retryable status. The queue is bounded:
// what does not fit is dropped and counted, so a collector that is away
// never slows the audit stream.
//
// Metrics: weft_audit_otlp_exported_total, weft_audit_otlp_dropped_total
// {reason: queue_full, rejected (the collector refused the records),
// shutdown (still queued when Run ended)}, weft_audit_otlp_retries_total,
// weft_audit_otlp_queue_length.
type OTLPExporter struct {
	cfg   OTLPConfig
	creds credentials.TransportCredentials
	log   *slog.Logger
	queue chan apiaudit.Event

	exported prometheus.Counter
	dropped  *prometheus.CounterVec
	retries  prometheus.Counter
}

// OTLP identity of what the exporter sends.
const (
	otlpServiceName = "weft-controlplane"
	otlpScope       = "github.com/weftmesh/weft/controlplane/audit"
	otlpEventName   = "weft.egress"
)

// NewOTLPExporter checks cfg and registers the metrics; it does not
// connect (Run does).
func NewOTLPExporter(cfg OTLPConfig) (*OTLPExporter, error) {
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("audit: NewOTLPExporter: Config.Endpoint is empty")
	case cfg.Insecure && cfg.TLS != nil:
		return nil, fmt.Errorf("audit: NewOTLPExporter: endpoint %s: Insecure and TLS both set", cfg.Endpoint)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 10000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.Backoff)
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
	x := &OTLPExporter{cfg: cfg, log: cfg.Logger, queue: make(chan apiaudit.Event, cfg.QueueSize),
		exported: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_audit_otlp_exported_total",
			Help: "Audit events the OTLP collector accepted."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_audit_otlp_dropped_total",
			Help: "Audit events not exported over OTLP, by reason: queue_full, rejected (by the collector), shutdown."}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_audit_otlp_retries_total",
			Help: "Failed OTLP exports that are retried."}),
	}
	switch {
	case cfg.Insecure:
		x.creds = insecure.NewCredentials()
	case cfg.TLS != nil:
		x.creds = credentials.NewTLS(cfg.TLS)
	default:
		x.creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	queueLen := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "weft_audit_otlp_queue_length",
		Help: "Audit events waiting for OTLP export."}, func() float64 { return float64(len(x.queue)) })
	for _, reason := range []string{"queue_full", "rejected", "shutdown"} {
		x.dropped.WithLabelValues(reason)
	}
	for _, c := range []prometheus.Collector{x.exported, x.dropped, x.retries, queueLen} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("audit: NewOTLPExporter: metrics: %w", err)
		}
	}
	return x, nil
}

// Export queues ev for export. It never blocks: when the queue is full the
// event is dropped and counted.
func (x *OTLPExporter) Export(ev apiaudit.Event) {
	select {
	case x.queue <- ev:
	default:
		x.dropped.WithLabelValues("queue_full").Inc()
	}
}

// Run exports the queue until ctx ends, then tries once more to export
// what is still queued (within Timeout). Call it once.
func (x *OTLPExporter) Run(ctx context.Context) error {
	// The channel reconnects no slower than exports retry: a collector
	// that comes back gets the backlog within MaxBackoff.
	conn, err := grpc.NewClient(x.cfg.Endpoint, grpc.WithTransportCredentials(x.creds),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: x.cfg.Timeout,
			Backoff: backoff.Config{BaseDelay: x.cfg.Backoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: x.cfg.MaxBackoff}}))
	if err != nil {
		return fmt.Errorf("audit: OTLP endpoint %s: %w", x.cfg.Endpoint, err)
	}
	defer conn.Close()
	client := collogspb.NewLogsServiceClient(conn)
	tick := x.cfg.Clock.NewTicker(x.cfg.Interval)
	defer tick.Stop()

	batch := make([]apiaudit.Event, 0, x.cfg.BatchSize)
	for {
		select {
		case <-ctx.Done():
			x.shutdown(context.WithoutCancel(ctx), client, batch)
			return nil
		case ev := <-x.queue:
			if batch = append(batch, ev); len(batch) < x.cfg.BatchSize {
				continue
			}
		case <-tick.C():
			if len(batch) == 0 {
				continue
			}
		}
		if !x.deliver(ctx, client, batch) {
			x.shutdown(context.WithoutCancel(ctx), client, batch)
			return nil
		}
		batch = batch[:0]
	}
}

// deliver exports batch, retrying retryable failures with backoff, and
// reports whether it is done with it: false only when ctx ended first.
func (x *OTLPExporter) deliver(ctx context.Context, client collogspb.LogsServiceClient, batch []apiaudit.Event) bool {
	req := x.request(batch)
	wait := x.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := x.export(ctx, client, req, len(batch))
		if err == nil || !retryable(err) {
			if err != nil {
				x.dropped.WithLabelValues("rejected").Add(float64(len(batch)))
				x.log.Error("OTLP export refused; events dropped", "endpoint", x.cfg.Endpoint, "events", len(batch), "err", err)
			} else if attempt > 1 {
				x.log.Info("OTLP export recovered", "endpoint", x.cfg.Endpoint, "attempts", attempt)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		x.retries.Inc()
		if attempt == 1 {
			x.log.Warn("OTLP export failed; retrying", "endpoint", x.cfg.Endpoint, "events", len(batch), "err", err)
		}
		jittered := wait/2 + rand.N(wait/2+1)
		if !sleep.For(ctx, x.cfg.Clock, jittered) {
			return false
		}
		wait = min(2*wait, x.cfg.MaxBackoff)
	}
}

// export makes one call and counts what the collector accepted or
// rejected.
func (x *OTLPExporter) export(ctx context.Context, client collogspb.LogsServiceClient, req *collogspb.ExportLogsServiceRequest, n int) error {
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
	defer cancel()
	for k, v := range x.cfg.Headers {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	resp, err := client.Export(ctx, req)
	if err != nil {
		return err
	}
	rejected := min(max(resp.GetPartialSuccess().GetRejectedLogRecords(), 0), int64(n))
	if rejected > 0 {
		x.dropped.WithLabelValues("rejected").Add(float64(rejected))
		x.log.Warn("OTLP collector rejected records", "endpoint", x.cfg.Endpoint, "rejected", rejected,
			"message", resp.GetPartialSuccess().GetErrorMessage())
	}
	x.exported.Add(float64(int64(n) - rejected))
	return nil
}

// shutdown exports batch and what is still queued, one attempt per batch.
func (x *OTLPExporter) shutdown(ctx context.Context, client collogspb.LogsServiceClient, batch []apiaudit.Event) {
	for {
	drain:
		for len(batch) < x.cfg.BatchSize {
			select {
			case ev := <-x.queue:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		if len(batch) == 0 {
			return
		}
		if err := x.export(ctx, client, x.request(batch), len(batch)); err != nil {
			n := len(batch) + len(x.queue)
			x.dropped.WithLabelValues("shutdown").Add(float64(n))
			x.log.Warn("OTLP export at shutdown failed; events dropped", "endpoint", x.cfg.Endpoint, "events", n, "err", err)
			return
		}
		batch = batch[:0]
	}
}

// retryable reports whether the OTLP spec lets an export failing with err
// be retried.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// request makes one export request of batch.
func (x *OTLPExporter) request(batch []apiaudit.Event) *collogspb.ExportLogsServiceRequest {
	res := []*commonpb.KeyValue{strAttr("service.name", otlpServiceName)}
	for _, k := range slices.Sorted(maps.Keys(x.cfg.Resource)) {
		if k != "service.name" {
			res = append(res, strAttr(k, x.cfg.Resource[k]))
		}
	}
	observed := uint64(x.cfg.Clock.Now().UnixNano())
	records := make([]*logspb.LogRecord, len(batch))
	for i, e := range batch {
		records[i] = logRecord(e, observed)
	}
	return &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: &resourcepb.Resource{Attributes: res},
		ScopeLogs: []*logspb.ScopeLogs{{
			Scope:      &commonpb.InstrumentationScope{Name: otlpScope},
			LogRecords: records,
		}},
	}}}
}

// logRecord is e as an OTLP log record: weft.* attributes, a sentence as
// the body, WARN for what was (or would be) denied.
func logRecord(e apiaudit.Event, observed uint64) *logspb.LogRecord {
	r := &logspb.LogRecord{
		TimeUnixNano: uint64(max(e.Time.UnixNano(), 0)), ObservedTimeUnixNano: observed,
		SeverityNumber: logspb.SeverityNumber_SEVERITY_NUMBER_INFO, SeverityText: "INFO",
		EventName: otlpEventName,
		Body:      &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: sentence(e)}},
	}
	if e.Decision != "allow" {
		r.SeverityNumber, r.SeverityText = logspb.SeverityNumber_SEVERITY_NUMBER_WARN, "WARN"
	}
	for _, kv := range [...]struct{ k, v string }{
		{"weft.event.id", e.ID}, {"weft.source.spiffe_id", e.SourceID}, {"weft.namespace", e.Namespace}, {"weft.pod", e.Pod},
		{"weft.destination", e.Destination()}, {"weft.dst.host", e.DstHost}, {"weft.service", e.Service}, {"weft.sni", e.SNI}, {"weft.host", e.Host},
		{"weft.protocol", e.Protocol}, {"weft.decision", e.Decision}, {"weft.policy", e.Policy}, {"weft.rule", e.Rule},
		{"weft.outbound", e.Outbound}, {"weft.chain", e.Chain},
	} {
		if kv.v != "" {
			r.Attributes = append(r.Attributes, strAttr(kv.k, kv.v))
		}
	}
	if e.DstIP.IsValid() {
		r.Attributes = append(r.Attributes, strAttr("weft.dst.ip", e.DstIP.Unmap().String()))
	}
	r.Attributes = append(r.Attributes, intAttr("weft.dst.port", int64(e.DstPort)),
		intAttr("weft.bytes.sent", e.BytesSent), intAttr("weft.bytes.received", e.BytesReceived),
		intAttr("weft.duration_ms", e.Duration.Milliseconds()))
	return r
}

// sentence says what happened in a few words for log viewers.
func sentence(e apiaudit.Event) string {
	who := e.Namespace + "/" + e.Pod
	what := e.Destination() + " (" + e.Protocol + ")"
	by := ""
	switch {
	case e.Policy != "":
		by = " by EgressPolicy " + e.Policy
	case e.Outbound != "":
		by = " by outbound policy " + e.Outbound
	}
	switch e.Decision {
	case "allow":
		return who + " connected to " + what + ", allowed" + by
	case "deny":
		return who + " was denied a connection to " + what + by
	case "audit":
		return who + " connected to " + what + ", flagged in audit mode" + by
	}
	return who + " connected to " + what + ", decision " + e.Decision
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func intAttr(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}
