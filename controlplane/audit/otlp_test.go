package audit

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// otlpReceiver is an in-process OTLP logs collector.
type otlpReceiver struct {
	collogspb.UnimplementedLogsServiceServer

	mu       sync.Mutex
	requests []*collogspb.ExportLogsServiceRequest
	headers  []metadata.MD
	// fail, if set, answers a call instead of accepting it when it returns
	// an error (calls counts every call, 1-based).
	fail  func(call int) error
	calls int
	// reject, if not 0, is the partial success's rejected_log_records of
	// every accepted call.
	reject int64
}

func (r *otlpReceiver) Export(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(r.calls); err != nil {
			return nil, err
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	r.requests = append(r.requests, req)
	r.headers = append(r.headers, md)
	if r.reject != 0 {
		return &collogspb.ExportLogsServiceResponse{PartialSuccess: &collogspb.ExportLogsPartialSuccess{
			RejectedLogRecords: r.reject, ErrorMessage: "some refused"}}, nil
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

// records returns every record received, in order.
func (r *otlpReceiver) records() []*logspb.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*logspb.LogRecord
	for _, req := range r.requests {
		for _, rl := range req.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				out = append(out, sl.GetLogRecords()...)
			}
		}
	}
	return out
}

// startCollector runs r on a free loopback port until the test ends and
// returns its address.
func startCollector(t *testing.T, r *otlpReceiver) string {
	t.Helper()
	return serveOTLP(t, r, wefttest.Listen(t))
}

// serveOTLP runs r on lis until the test ends and returns its address.
func serveOTLP(t *testing.T, r *otlpReceiver, lis net.Listener) string {
	t.Helper()
	gs := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(gs, r)
	return wefttest.ServeGRPC(t, gs, lis)
}

func newTestExporter(t *testing.T, cfg OTLPConfig) *OTLPExporter {
	t.Helper()
	cfg.Insecure = true
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = 10*time.Millisecond, 40*time.Millisecond
	}
	x, err := NewOTLPExporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// runExporter runs x until the test ends and waits for Run to return.
func runExporter(t *testing.T, x *OTLPExporter) (stop func()) {
	t.Helper()
	return wefttest.Run(t, x.Run)
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	out := map[string]any{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = v.IntValue
		default:
			out[kv.GetKey()] = fmt.Sprintf("unexpected %T", v)
		}
	}
	return out
}

func TestOTLPExportsEveryEventWithAttributes(t *testing.T) {
	t0 := wefttest.Epoch(t)
	recv := &otlpReceiver{}
	addr := startCollector(t, recv)
	x := newTestExporter(t, OTLPConfig{Endpoint: addr, BatchSize: 500,
		Headers: map[string]string{"x-api-key": "k1"}, Resource: map[string]string{"k8s.pod.name": "weft-controlplane-0"}})
	runExporter(t, x)

	const n = 1203
	for i := range n {
		e := ev(t0, fmt.Sprintf("e-%04d", i), time.Duration(i)*time.Millisecond, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow")
		if i == 7 {
			e = ev(t0, "e-0007", 7*time.Millisecond, "shop", "worker-7", "worker", "bad.example.com", "93.184.216.35", 443, "deny")
			e.Policy, e.Rule, e.Chain = "shop/lockdown", "0", "egress|443|tls|deny"
		}
		x.Export(e)
	}
	wefttest.Eventually(t, "every record", func() bool { return testutil.ToFloat64(x.exported) >= n })

	recs := recv.records()
	if len(recs) != n {
		t.Fatalf("%d records, want %d", len(recs), n)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		id := attrs(r.GetAttributes())["weft.event.id"].(string)
		if seen[id] {
			t.Errorf("event %s exported twice", id)
		}
		seen[id] = true
	}
	recv.mu.Lock()
	for i, req := range recv.requests {
		rl := req.GetResourceLogs()[0]
		if got := len(rl.GetScopeLogs()[0].GetLogRecords()); got > 500 {
			t.Errorf("request %d has %d records, batch size is 500", i, got)
		}
		wantRes := map[string]any{"service.name": "weft-controlplane", "k8s.pod.name": "weft-controlplane-0"}
		if got := attrs(rl.GetResource().GetAttributes()); !maps.Equal(got, wantRes) {
			t.Errorf("request %d resource = %v, want %v", i, got, wantRes)
		}
		if got := rl.GetScopeLogs()[0].GetScope().GetName(); got != otlpScope {
			t.Errorf("scope %q", got)
		}
		if got := recv.headers[i].Get("x-api-key"); !slices.Equal(got, []string{"k1"}) {
			t.Errorf("request %d x-api-key = %q", i, got)
		}
	}
	recv.mu.Unlock()

	deny := recs[slices.IndexFunc(recs, func(r *logspb.LogRecord) bool { return attrs(r.GetAttributes())["weft.event.id"] == "e-0007" })]
	want := map[string]any{
		"weft.event.id": "e-0007", "weft.source.spiffe_id": "spiffe://cluster.local/ns/shop/sa/worker",
		"weft.namespace": "shop", "weft.pod": "worker-7", "weft.destination": "bad.example.com:443",
		"weft.dst.host": "bad.example.com", "weft.sni": "bad.example.com", "weft.dst.ip": "93.184.216.35",
		"weft.dst.port": int64(443), "weft.protocol": "tls", "weft.decision": "deny", "weft.policy": "shop/lockdown",
		"weft.rule": "0", "weft.chain": "egress|443|tls|deny", "weft.bytes.sent": int64(100), "weft.bytes.received": int64(1000),
		"weft.duration_ms": int64(1500),
	}
	if got := attrs(deny.GetAttributes()); !maps.Equal(got, want) {
		t.Errorf("attributes\n got %v\nwant %v", got, want)
	}
	if got, want := deny.GetBody().GetStringValue(), "shop/worker-7 was denied a connection to bad.example.com:443 (tls) by EgressPolicy shop/lockdown"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if deny.GetSeverityNumber() != logspb.SeverityNumber_SEVERITY_NUMBER_WARN || deny.GetEventName() != "weft.egress" {
		t.Errorf("severity %v, event name %q", deny.GetSeverityNumber(), deny.GetEventName())
	}
	if got, want := deny.GetTimeUnixNano(), uint64(t0.Add(7*time.Millisecond).UnixNano()); got != want {
		t.Errorf("time %d, want %d", got, want)
	}
}

func TestOTLPRetriesUntilTheCollectorIsBack(t *testing.T) {
	t0 := wefttest.Epoch(t)
	// The collector's port is closed at first: exports fail (Unavailable).
	lis := wefttest.Listen(t)
	addr := lis.Addr().String()
	lis.Close()
	x := newTestExporter(t, OTLPConfig{Endpoint: addr})
	runExporter(t, x)
	for i := range 3 {
		x.Export(ev(t0, fmt.Sprintf("r-%d", i), 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
	}
	wefttest.Eventually(t, "retries", func() bool { return testutil.ToFloat64(x.retries) >= 3 })

	recv := &otlpReceiver{}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveOTLP(t, recv, lis)
	wefttest.Eventually(t, "delivery", func() bool { return testutil.ToFloat64(x.exported) == 3 })
	if got := len(recv.records()); got != 3 {
		t.Errorf("%d records delivered, want 3", got)
	}
	for _, reason := range []string{"queue_full", "rejected", "shutdown"} {
		if got := testutil.ToFloat64(x.dropped.WithLabelValues(reason)); got != 0 {
			t.Errorf("dropped{%s} = %v, want 0", reason, got)
		}
	}
}

func TestOTLPRetryableAndRefusedStatuses(t *testing.T) {
	for _, tc := range []struct {
		name                string
		fail                func(call int) error
		delivered, rejected int
	}{
		{"unavailable twice", func(call int) error {
			if call <= 2 {
				return status.Error(codes.Unavailable, "warming up")
			}
			return nil
		}, 2, 0},
		{"resource exhausted", func(call int) error {
			if call == 1 {
				return status.Error(codes.ResourceExhausted, "slow down")
			}
			return nil
		}, 2, 0},
		{"invalid argument", func(int) error { return status.Error(codes.InvalidArgument, "bad") }, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := wefttest.Epoch(t)
			recv := &otlpReceiver{fail: tc.fail}
			addr := startCollector(t, recv)
			x := newTestExporter(t, OTLPConfig{Endpoint: addr, BatchSize: 2})
			runExporter(t, x)
			x.Export(ev(t0, "s-1", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
			x.Export(ev(t0, "s-2", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
			wefttest.Eventually(t, "an outcome", func() bool {
				return testutil.ToFloat64(x.exported)+testutil.ToFloat64(x.dropped.WithLabelValues("rejected")) == 2
			})
			if got := len(recv.records()); got != tc.delivered {
				t.Errorf("%d records delivered, want %d", got, tc.delivered)
			}
			if got := testutil.ToFloat64(x.dropped.WithLabelValues("rejected")); got != float64(tc.rejected) {
				t.Errorf("dropped{rejected} = %v, want %d", got, tc.rejected)
			}
		})
	}
}

func TestOTLPQueueFullDropsAndCounts(t *testing.T) {
	t0 := wefttest.Epoch(t)
	recv := &otlpReceiver{}
	addr := startCollector(t, recv)
	x := newTestExporter(t, OTLPConfig{Endpoint: addr, QueueSize: 10})
	// Not running yet: the queue fills, and Export still returns at once.
	for i := range 15 {
		x.Export(ev(t0, fmt.Sprintf("q-%02d", i), 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
	}
	if got := testutil.ToFloat64(x.dropped.WithLabelValues("queue_full")); got != 5 {
		t.Fatalf("dropped{queue_full} = %v, want 5", got)
	}
	runExporter(t, x)
	wefttest.Eventually(t, "the queued events", func() bool { return len(recv.records()) == 10 })
	var got []string
	for _, r := range recv.records() {
		got = append(got, attrs(r.GetAttributes())["weft.event.id"].(string))
	}
	if want := []string{"q-00", "q-01", "q-02", "q-03", "q-04", "q-05", "q-06", "q-07", "q-08", "q-09"}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v (the first ten)", got, want)
	}
}

func TestOTLPFlushesWhenRunEnds(t *testing.T) {
	t0 := wefttest.Epoch(t)
	recv := &otlpReceiver{}
	addr := startCollector(t, recv)
	x := newTestExporter(t, OTLPConfig{Endpoint: addr, Interval: time.Hour})
	stop := runExporter(t, x)
	for i := range 3 {
		x.Export(ev(t0, fmt.Sprintf("f-%d", i), 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "audit"))
	}
	wefttest.Eventually(t, "the queue to be read", func() bool { return len(x.queue) == 0 })
	if got := len(recv.records()); got != 0 {
		t.Errorf("%d records before Run ended: a partial batch waits for the interval", got)
	}
	stop()
	if got := len(recv.records()); got != 3 {
		t.Errorf("%d records after Run ended, want 3", got)
	}
}

func TestNewOTLPExporterRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  OTLPConfig
		want string
	}{
		{OTLPConfig{}, "audit: NewOTLPExporter: Config.Endpoint is empty"},
		{OTLPConfig{Endpoint: "otel:4317", Insecure: true, TLS: &tls.Config{}}, "audit: NewOTLPExporter: endpoint otel:4317: Insecure and TLS both set"},
	} {
		if _, err := NewOTLPExporter(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestSentence(t *testing.T) {
	t0 := wefttest.Epoch(t)
	e := ev(t0, "x", 0, "lab", "probe-1", "probe", "", "198.18.100.7", 9000, "audit")
	e.Protocol, e.Policy = "tcp", "lab/probes"
	if got, want := sentence(e), "lab/probe-1 connected to 198.18.100.7:9000 (tcp), flagged in audit mode by EgressPolicy lab/probes"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	e = ev(t0, "y", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow")
	e.Outbound = "ALLOW_ANY"
	if got, want := sentence(e), "shop/web-1 connected to api.example.com:443 (tls), allowed by outbound policy ALLOW_ANY"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	e.Decision, e.Outbound = "later", "" // a decision this version does not know
	if got, want := sentence(e), "shop/web-1 connected to api.example.com:443 (tls), decision later"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestOTLPDefaults: a zero or negative field gets the default its comment
// names, a positive one stays; MaxBackoff below Backoff gets 30s, or
// Backoff when that is longer.
func TestOTLPDefaults(t *testing.T) {
	const ns = time.Nanosecond
	for _, tc := range []struct {
		name      string
		in, want  OTLPConfig
		queueSize int
	}{
		{"zero", OTLPConfig{},
			OTLPConfig{BatchSize: 500, Interval: time.Second, QueueSize: 10000, Timeout: 10 * time.Second, Backoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}, 10000},
		{"negative", OTLPConfig{BatchSize: -1, Interval: -ns, QueueSize: -1, Timeout: -ns, Backoff: -ns, MaxBackoff: -ns},
			OTLPConfig{BatchSize: 500, Interval: time.Second, QueueSize: 10000, Timeout: 10 * time.Second, Backoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second}, 10000},
		{"smallest", OTLPConfig{BatchSize: 1, Interval: ns, QueueSize: 1, Timeout: ns, Backoff: ns, MaxBackoff: ns},
			OTLPConfig{BatchSize: 1, Interval: ns, QueueSize: 1, Timeout: ns, Backoff: ns, MaxBackoff: ns}, 1},
		{"MaxBackoff below Backoff", OTLPConfig{Backoff: time.Second, MaxBackoff: time.Second - ns},
			OTLPConfig{BatchSize: 500, Interval: time.Second, QueueSize: 10000, Timeout: 10 * time.Second, Backoff: time.Second, MaxBackoff: 30 * time.Second}, 10000},
		{"Backoff past 30s", OTLPConfig{Backoff: time.Minute},
			OTLPConfig{BatchSize: 500, Interval: time.Second, QueueSize: 10000, Timeout: 10 * time.Second, Backoff: time.Minute, MaxBackoff: time.Minute}, 10000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Endpoint, in.Insecure = "otel:4317", true
			x, err := NewOTLPExporter(in)
			if err != nil {
				t.Fatal(err)
			}
			got := OTLPConfig{BatchSize: x.cfg.BatchSize, Interval: x.cfg.Interval, QueueSize: x.cfg.QueueSize, Timeout: x.cfg.Timeout,
				Backoff: x.cfg.Backoff, MaxBackoff: x.cfg.MaxBackoff}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("NewOTLPExporter(%+v) settles on\n%+v, want\n%+v", tc.in, got, tc.want)
			}
			if cap(x.queue) != tc.queueSize {
				t.Errorf("queue holds %d, want %d", cap(x.queue), tc.queueSize)
			}
		})
	}
}

// logLines records what a logger was told: level, message and the
// "attempts" and "peer" attributes (zero when absent).
type logLines struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	level    slog.Level
	msg      string
	attempts int64
	peer     string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	line := logLine{level: r.Level, msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "attempts":
			line.attempts = a.Value.Int64()
		case "peer":
			line.peer = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

func (l *logLines) get() []logLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// TestOTLPRetryLogs: a batch that fails warns once, on its first failure,
// however often it is retried, and says when it got through and after how
// many attempts; a batch that gets through at once logs nothing.
func TestOTLPRetryLogs(t *testing.T) {
	t0 := wefttest.Epoch(t)
	recv := &otlpReceiver{fail: func(call int) error {
		if call <= 3 {
			return status.Error(codes.Unavailable, "warming up")
		}
		return nil
	}}
	addr := startCollector(t, recv)
	logs := &logLines{}
	x := newTestExporter(t, OTLPConfig{Endpoint: addr, BatchSize: 1, Logger: slog.New(logs)})
	runExporter(t, x)
	x.Export(ev(t0, "l-1", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
	wefttest.Eventually(t, "the first event", func() bool { return testutil.ToFloat64(x.exported) == 1 })
	x.Export(ev(t0, "l-2", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
	wefttest.Eventually(t, "the second event", func() bool { return testutil.ToFloat64(x.exported) == 2 })
	want := []logLine{
		{level: slog.LevelWarn, msg: "OTLP export failed; retrying"},
		{level: slog.LevelInfo, msg: "OTLP export recovered", attempts: 4},
	}
	if got := logs.get(); !slices.Equal(got, want) {
		t.Errorf("logged %+v, want %+v", got, want)
	}
}

// TestOTLPBackoffJitter: a retry waits between half the backoff and all of
// it, and not always the same: on a fake clock stepped a nanosecond at a
// time, with a backoff of 4ns, every wait is 2, 3 or 4ns, and in 30 of
// them not all are 2.
func TestOTLPBackoffJitter(t *testing.T) {
	const failures = 30
	t0 := wefttest.Epoch(t)
	clk := wefttest.FakeClock(t)
	recv := &otlpReceiver{fail: func(call int) error {
		if call <= failures {
			return status.Error(codes.Unavailable, "warming up")
		}
		return nil
	}}
	calls := func() int {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		return recv.calls
	}
	addr := startCollector(t, recv)
	// The ticker (an hour) is the clock's one waiter besides a retry's timer.
	x := newTestExporter(t, OTLPConfig{Endpoint: addr, BatchSize: 1, Interval: time.Hour,
		Backoff: 4 * time.Nanosecond, MaxBackoff: 4 * time.Nanosecond, Clock: clk})
	runExporter(t, x)
	x.Export(ev(t0, "j-1", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
	var waits []int
	for range failures {
		wefttest.Eventually(t, "a retry timer", func() bool { return clk.Waiters() == 2 })
		c := calls()
		n := 0
		// Only Step fires the timer, and a new one comes after the next call:
		// fired when the timer is gone or the call was made.
		for clk.Waiters() == 2 && calls() == c {
			if n++; n > 10 {
				t.Fatalf("no retry %dns after a failure with a 4ns backoff", n-1)
			}
			clk.Step(time.Nanosecond)
		}
		waits = append(waits, n)
	}
	wefttest.Eventually(t, "delivery", func() bool { return testutil.ToFloat64(x.exported) == 1 })
	for _, w := range waits {
		if w < 2 || w > 4 {
			t.Fatalf("waits %v ns: want each from 2 to 4", waits)
		}
	}
	if slices.Max(waits) == 2 {
		t.Errorf("waits %v ns: all half the backoff, no jitter", waits)
	}
}

// TestOTLPPartialSuccess: what the collector says it rejected of a batch
// is counted as dropped and the rest as exported; a count past the batch
// or below zero is clamped to it.
func TestOTLPPartialSuccess(t *testing.T) {
	for _, tc := range []struct {
		reject             int64
		exported, rejected float64
	}{{1, 2, 1}, {3, 0, 3}, {7, 0, 3}, {-2, 3, 0}} {
		t.Run(fmt.Sprint(tc.reject), func(t *testing.T) {
			t0 := wefttest.Epoch(t)
			recv := &otlpReceiver{reject: tc.reject}
			addr := startCollector(t, recv)
			logs := &logLines{}
			x := newTestExporter(t, OTLPConfig{Endpoint: addr, BatchSize: 3, Logger: slog.New(logs)})
			runExporter(t, x)
			for i := range 3 {
				x.Export(ev(t0, fmt.Sprintf("p-%d", i), 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
			}
			wefttest.Eventually(t, "the batch", func() bool { return len(recv.records()) == 3 })
			wefttest.Eventually(t, "its count", func() bool {
				return testutil.ToFloat64(x.exported)+testutil.ToFloat64(x.dropped.WithLabelValues("rejected")) == 3
			})
			if got := testutil.ToFloat64(x.exported); got != tc.exported {
				t.Errorf("exported %v, want %v", got, tc.exported)
			}
			if got := testutil.ToFloat64(x.dropped.WithLabelValues("rejected")); got != tc.rejected {
				t.Errorf("dropped{rejected} %v, want %v", got, tc.rejected)
			}
			var want []logLine
			if tc.rejected > 0 {
				want = []logLine{{level: slog.LevelWarn, msg: "OTLP collector rejected records"}}
			}
			if got := logs.get(); !slices.Equal(got, want) {
				t.Errorf("logged %+v, want %+v", got, want)
			}
		})
	}
}

// TestOTLPShutdownBatches: when Run ends, what is queued goes out in
// batches of at most BatchSize, one attempt each; if one fails, it and
// everything still queued is dropped and counted.
func TestOTLPShutdownBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    func(call int) error
		sizes   []int
		dropped float64
	}{
		{"collector up", nil, []int{2, 2, 1}, 0},
		{"second batch fails", func(call int) error {
			if call == 2 {
				return status.Error(codes.Unavailable, "going away")
			}
			return nil
		}, []int{2}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := wefttest.Epoch(t)
			recv := &otlpReceiver{fail: tc.fail}
			addr := startCollector(t, recv)
			x := newTestExporter(t, OTLPConfig{Endpoint: addr, BatchSize: 2})
			for i := range 5 {
				x.Export(ev(t0, fmt.Sprintf("d-%d", i), 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(x.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			x.shutdown(testContext(t), collogspb.NewLogsServiceClient(conn), nil)
			recv.mu.Lock()
			var sizes []int
			for _, req := range recv.requests {
				sizes = append(sizes, len(req.GetResourceLogs()[0].GetScopeLogs()[0].GetLogRecords()))
			}
			recv.mu.Unlock()
			if !slices.Equal(sizes, tc.sizes) {
				t.Errorf("batches of %v, want %v", sizes, tc.sizes)
			}
			if got := testutil.ToFloat64(x.dropped.WithLabelValues("shutdown")); got != tc.dropped {
				t.Errorf("dropped{shutdown} %v, want %v", got, tc.dropped)
			}
		})
	}
}

// TestOTLPOverTLS: with a TLS config the exporter verifies the collector
// by it (here a private CA's root), not by the system roots.
func TestOTLPOverTLS(t *testing.T) {
	clk := wefttest.FakeClock(t)
	ca := newTestCA(t, clk)
	const name = "otel-collector.observability.svc"
	recv := &otlpReceiver{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, Time: clk.Now,
		Certificates: []tls.Certificate{ca.cert(spiffeid.RequireFromSegments(td, "ns", "observability", "sa", "otel"), name)}})))
	collogspb.RegisterLogsServiceServer(gs, recv)
	addr := wefttest.ServeGRPC(t, gs, wefttest.Listen(t))
	x, err := NewOTLPExporter(OTLPConfig{Endpoint: addr, BatchSize: 1, Interval: 20 * time.Millisecond,
		Backoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		TLS: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: wefttest.Roots(ca.ca), ServerName: name, Time: clk.Now}})
	if err != nil {
		t.Fatal(err)
	}
	runExporter(t, x)
	x.Export(ev(clk.Now(), "t-1", 0, "shop", "web-1", "web", "api.example.com", "93.184.216.34", 443, "allow"))
	wefttest.Eventually(t, "delivery over TLS", func() bool { return len(recv.records()) == 1 })
}
