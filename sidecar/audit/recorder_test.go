package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	envoyaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiaudit "github.com/weftmesh/weft/api/audit"
	wm "github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testutil"
)

var (
	self = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	// t0 is the fixed instant: the recorded JSON line is compared with a
	// literal.
	t0 = testutil.Fixed
)

func sample(i int) apiaudit.Event {
	return apiaudit.Event{Time: t0.Add(time.Duration(i) * time.Second), DstHost: "api.example.com", DstIP: netip.MustParseAddr("93.184.216.34"),
		DstPort: 443, SNI: "api.example.com", Protocol: apiaudit.ProtocolTLS, Decision: "allow", Policy: "shop/egress", Rule: "0",
		Chain: "egress|443|tls|allow|shop/egress#0", BytesSent: 517, BytesReceived: 4096, Duration: 1500 * time.Millisecond}
}

func newTestRecorder(t *testing.T, cfg Config) (*Recorder, *wm.Registry) {
	t.Helper()
	reg := wm.NewRegistry()
	cfg.SourceID, cfg.Pod, cfg.Namespace, cfg.InstanceID, cfg.Metrics = self, "web-1", "shop", "boot1", reg
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, reg
}

func TestRecordWritesJSONLines(t *testing.T) {
	var out bytes.Buffer
	r, _ := newTestRecorder(t, Config{Out: &out})
	r.Record(sample(0))
	denied := sample(1)
	denied.Decision, denied.SNI, denied.DstHost = "deny", "", ""
	r.Record(denied)

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out.String())
	}
	want := `{"log":"weft-egress","id":"boot1-1","time":"2001-09-09T01:46:40Z","sourceSpiffeId":"spiffe://cluster.local/ns/shop/sa/web",` +
		`"pod":"web-1","namespace":"shop","dstHost":"api.example.com","dstIp":"93.184.216.34","dstPort":443,"sni":"api.example.com",` +
		`"protocol":"tls","decision":"allow","policy":"shop/egress","rule":"0","chain":"egress|443|tls|allow|shop/egress#0",` +
		`"bytesSent":517,"bytesReceived":4096,"duration":"1.5s"}`
	if lines[0] != want {
		t.Errorf("line 1:\n got %s\nwant %s", lines[0], want)
	}
	var back apiaudit.Event
	if err := json.Unmarshal([]byte(lines[1]), &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != "boot1-2" || back.Decision != "deny" || back.Duration != 1500*time.Millisecond || back.SourceID != self.String() ||
		back.DstIP != netip.MustParseAddr("93.184.216.34") {
		t.Errorf("line 2 reads back as %+v", back)
	}
	if s := r.Stats(); s.Recorded != 2 || s.Buffered != 2 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestBufferFullDrops(t *testing.T) {
	var out bytes.Buffer
	r, reg := newTestRecorder(t, Config{Out: &out, BufferSize: 3})
	for i := range 5 {
		r.Record(sample(i))
	}
	if s := r.Stats(); s.DroppedFull != 2 || s.Buffered != 3 || s.Recorded != 5 {
		t.Errorf("Stats = %+v, want 2 dropped, 3 buffered", s)
	}
	var exp strings.Builder
	if _, err := reg.WriteTo(&exp); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\n# HELP weft_sidecar_audit_dropped_total Egress audit events never delivered to the control plane, by reason (buffer_full, rejected).\n" +
			"# TYPE weft_sidecar_audit_dropped_total counter\n" +
			`weft_sidecar_audit_dropped_total{reason="buffer_full"} 2` + "\n" +
			`weft_sidecar_audit_dropped_total{reason="rejected"} 0` + "\n",
		"\n# HELP weft_sidecar_audit_buffered Egress audit events waiting for the control plane's acknowledgement.\n" +
			"# TYPE weft_sidecar_audit_buffered gauge\nweft_sidecar_audit_buffered 3\n",
	} {
		if !strings.Contains(exp.String(), want) {
			t.Errorf("exposition lacks\n%s\nin\n%s", want, exp.String())
		}
	}
	// Dropped events still reach stdout; the oldest are the ones kept.
	if n := strings.Count(out.String(), "\n"); n != 5 {
		t.Errorf("%d JSON lines, want 5", n)
	}
	if got := ids(r.buf.peek(10)); !slices.Equal(got, []string{"boot1-1", "boot1-2", "boot1-3"}) {
		t.Errorf("buffered %v", got)
	}
}

func TestBufferRing(t *testing.T) {
	b := newBuffer(3)
	for i := range 3 {
		b.push(apiaudit.Event{ID: string(rune('a' + i))})
	}
	b.ack(2)
	b.push(apiaudit.Event{ID: "d"})
	b.push(apiaudit.Event{ID: "e"})
	if b.push(apiaudit.Event{ID: "f"}) {
		t.Error("push into a full buffer succeeded")
	}
	if got := ids(b.peek(10)); !slices.Equal(got, []string{"c", "d", "e"}) {
		t.Errorf("peek = %v", got)
	}
	b.ack(10)
	if b.len() != 0 || len(b.peek(1)) != 0 {
		t.Error("buffer not empty after acking everything")
	}
}

// TestBufferGrowsAndShrinks: an empty buffer holds no events; it grows in
// order across the ring's wrap up to its bound, and gives a burst's ring
// back once drained.
func TestBufferGrowsAndShrinks(t *testing.T) {
	b := newBuffer(100)
	if len(b.events) != 0 {
		t.Fatalf("a new buffer holds a ring of %d events", len(b.events))
	}
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprint(i))
		b.push(apiaudit.Event{ID: fmt.Sprint(i)})
	}
	b.ack(5) // the ring's head moves, so the next growth unwraps it
	want = want[5:]
	for i := 10; i < 110; i++ {
		ok := b.push(apiaudit.Event{ID: fmt.Sprint(i)})
		if ok {
			want = append(want, fmt.Sprint(i))
		}
		if ok != (i < 105) {
			t.Fatalf("push %d with %d held: %v", i, b.len(), ok)
		}
	}
	if got := ids(b.peek(1000)); !slices.Equal(got, want) || len(b.events) != 100 {
		t.Fatalf("peek = %v (ring %d), want %v", got, len(b.events), want)
	}
	b.ack(1000)
	if len(b.events) != 0 || b.len() != 0 {
		t.Fatalf("drained buffer keeps a ring of %d (%d events)", len(b.events), b.len())
	}
	b.push(apiaudit.Event{ID: "again"})
	if got := ids(b.peek(10)); !slices.Equal(got, []string{"again"}) {
		t.Fatalf("after draining: %v", got)
	}
}

func TestEntry(t *testing.T) {
	e := sample(0)
	e.ID, e.SourceID, e.Pod, e.Namespace = "boot1-7", self.String(), "web-1", "shop"
	en := Entry(e)
	c := en.GetCommonProperties()
	md := c.GetMetadata().GetFilterMetadata()[MetadataKey].AsMap()
	switch {
	case c.GetStreamId() != "boot1-7", !c.GetStartTime().AsTime().Equal(t0), c.GetDuration().AsDuration() != 1500*time.Millisecond,
		c.GetUpstreamCluster() != "PassthroughCluster", c.GetDownstreamLocalAddress().GetSocketAddress().GetAddress() != "93.184.216.34",
		c.GetUpstreamRemoteAddress().GetSocketAddress().GetPortValue() != 443, c.GetTlsProperties().GetTlsSniHostname() != "api.example.com",
		en.GetConnectionProperties().GetReceivedBytes() != 517, en.GetConnectionProperties().GetSentBytes() != 4096,
		md[apiaudit.FieldSource] != self.String(), md[apiaudit.FieldID] != "boot1-7", md[apiaudit.FieldDecision] != "allow", md[apiaudit.FieldPolicy] != "shop/egress",
		md[apiaudit.FieldPod] != "web-1", md[apiaudit.FieldNamespace] != "shop", md[apiaudit.FieldProtocol] != "tls", md[apiaudit.FieldRule] != "0":
		t.Errorf("Entry = %v", en)
	}
	// What Envoy's API makes of the bytes: every field known to it, the
	// same bytes again, and valid.
	wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(en)
	if err != nil {
		t.Fatal(err)
	}
	var envoy envoyaccesslogv3.TCPAccessLogEntry
	if err := proto.Unmarshal(wire, &envoy); err != nil {
		t.Fatal(err)
	}
	if again, _ := (proto.MarshalOptions{Deterministic: true}).Marshal(&envoy); !bytes.Equal(wire, again) {
		t.Errorf("Envoy's TCPAccessLogEntry does not read the entry as written: %v", &envoy)
	}
	if err := envoy.ValidateAll(); err != nil {
		t.Errorf("Envoy's ValidateAll: %v", err)
	}
	e.Decision = "deny"
	if en := Entry(e); en.GetCommonProperties().GetUpstreamRemoteAddress() != nil || en.GetCommonProperties().GetUpstreamCluster() != "BlackHoleCluster" {
		t.Errorf("denied Entry = %v", en)
	}
}

func ids(events []apiaudit.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.ID)
	}
	return out
}

// fakeALS is an in-process access-log server: it keeps what arrives and
// answers as the control plane does, or fails as told.
type fakeALS struct {
	alsv3.UnimplementedAccessLogServiceServer
	mu       sync.Mutex
	ids      []string
	sources  []string
	idents   []string
	failNext int   // streams to fail after reading their first message
	reject   error // returned for every stream when set
}

func (f *fakeALS) StreamAccessLogs(st grpc.ClientStreamingServer[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse]) error {
	first := true
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return st.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		if rej := f.reject; rej != nil {
			f.mu.Unlock()
			return rej
		}
		if first && f.failNext > 0 {
			f.failNext--
			f.mu.Unlock()
			return status.Error(codes.Unavailable, "flaky")
		}
		if first {
			f.idents = append(f.idents, m.GetIdentifier().GetNode().GetId()+"/"+m.GetIdentifier().GetLogName())
		}
		for _, e := range m.GetTcpLogs().GetLogEntry() {
			f.ids = append(f.ids, e.GetCommonProperties().GetStreamId())
			f.sources = append(f.sources, e.GetCommonProperties().GetMetadata().GetFilterMetadata()[MetadataKey].GetFields()[apiaudit.FieldSource].GetStringValue())
		}
		f.mu.Unlock()
		first = false
	}
}

func (f *fakeALS) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ids)
}

// startFakeALS serves f with go-control-plane's generated service (the
// server's view of the wire) and returns a connection to it.
func startFakeALS(t *testing.T, f *fakeALS) grpc.ClientConnInterface {
	t.Helper()
	gs := grpc.NewServer()
	alsv3.RegisterAccessLogServiceServer(gs, f)
	addr := testutil.ServeGRPC(t, gs, testutil.Listen(t))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func runRecorder(t *testing.T, r *Recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestSenderDeliversAndRetries(t *testing.T) {
	f := &fakeALS{failNext: 2}
	r, _ := newTestRecorder(t, Config{Conn: startFakeALS(t, f), BatchSize: 4, EntriesPerMessage: 3, FlushDelay: time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	runRecorder(t, r)
	for i := range 10 {
		r.Record(sample(i))
	}
	testutil.Eventually(t, "delivery", func() bool { return r.Stats().Delivered == 10 })
	got := f.received()
	var want []string
	for i := range 10 {
		want = append(want, seqID("boot1", uint64(i+1)))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(slices.Compact(got), want) {
		t.Errorf("received %v, want %v", got, want)
	}
	if s := r.Stats(); s.Buffered != 0 || s.DroppedFull+s.DroppedRejected != 0 {
		t.Errorf("Stats = %+v", s)
	}
	if f.idents[0] != "web-1.shop/weft-egress" {
		t.Errorf("identifier %q", f.idents[0])
	}
}

func TestSenderDropsRejectedBatches(t *testing.T) {
	f := &fakeALS{reject: status.Error(codes.InvalidArgument, "bad")}
	r, reg := newTestRecorder(t, Config{Conn: startFakeALS(t, f), FlushDelay: time.Millisecond})
	runRecorder(t, r)
	r.Record(sample(0))
	r.Record(sample(1))
	testutil.Eventually(t, "rejection", func() bool { return r.Stats().DroppedRejected == 2 })
	if v, _ := reg.Value("weft_sidecar_audit_dropped_total", DropRejected); v != 2 {
		t.Errorf("dropped{rejected} = %v", v)
	}
	if r.Stats().Buffered != 0 {
		t.Error("rejected batch still buffered")
	}
}

func TestSenderKeepsEventsWhileRefused(t *testing.T) {
	f := &fakeALS{reject: status.Error(codes.PermissionDenied, "registry has no such pod yet")}
	r, _ := newTestRecorder(t, Config{Conn: startFakeALS(t, f), FlushDelay: time.Millisecond, MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond})
	runRecorder(t, r)
	r.Record(sample(0))
	testutil.Eventually(t, "a failed attempt", func() bool { return r.m.failures.Value() >= 3 })
	if s := r.Stats(); s.Buffered != 1 || s.Delivered != 0 {
		t.Errorf("Stats = %+v, want the event kept", s)
	}
	f.mu.Lock()
	f.reject = nil
	f.mu.Unlock()
	testutil.Eventually(t, "delivery", func() bool { return r.Stats().Delivered == 1 })
}

// lateSVID has no SVID until set.
type lateSVID struct{ svid atomic.Pointer[x509svid.SVID] }

func (l *lateSVID) GetX509SVID() (*x509svid.SVID, error) {
	if s := l.svid.Load(); s != nil {
		return s, nil
	}
	return nil, errors.New("no SVID yet")
}

func TestSourceIDFromLateSVID(t *testing.T) {
	f := &fakeALS{}
	svid := &lateSVID{}
	var out bytes.Buffer
	r, err := New(Config{SVID: svid, Pod: "web-1", Namespace: "shop", Out: &out, Conn: startFakeALS(t, f),
		FlushDelay: time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.Record(sample(0)) // before the SVID: recorded without source, not sent
	if !strings.Contains(out.String(), `"sourceSpiffeId":""`) {
		t.Errorf("line: %s", out.String())
	}
	runRecorder(t, r)
	testutil.Eventually(t, "a failed attempt", func() bool { return r.Stats().SendFailures > 0 })
	if len(f.received()) != 0 {
		t.Fatal("an event without source was sent")
	}
	svid.svid.Store(&x509svid.SVID{ID: self})
	r.Record(sample(1))
	testutil.Eventually(t, "delivery", func() bool { return r.Stats().Delivered == 2 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sources) != 2 || f.sources[0] != self.String() || f.sources[1] != self.String() {
		t.Errorf("sources %v", f.sources)
	}
}

func TestRunWithoutConn(t *testing.T) {
	r, _ := newTestRecorder(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, cfg := range []Config{{Pod: "p", Namespace: "n"}, {SourceID: self, Namespace: "n"}, {SVID: &lateSVID{}, Pod: "p"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
