package audit

import (
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	clocktesting "k8s.io/utils/clock/testing"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/streamauth/streamauthtest"
	wefttest "github.com/weftmesh/weft/internal/testutil"
)

// entry encodes e as sidecar/audit does (the roundtrip test uses the real
// encoder).
func entry(e apiaudit.Event) *accesslogdatav3.TCPAccessLogEntry {
	md, _ := structpb.NewStruct(map[string]any{"id": e.ID, "source_spiffe_id": e.SourceID, "pod": e.Pod, "namespace": e.Namespace,
		"dst_host": e.DstHost, "sni": e.SNI, "protocol": e.Protocol, "decision": e.Decision, "policy": e.Policy, "rule": e.Rule})
	return &accesslogdatav3.TCPAccessLogEntry{
		CommonProperties: &accesslogdatav3.AccessLogCommon{
			StreamId: e.ID, StartTime: timestamppb.New(e.Time), Duration: durationpb.New(e.Duration),
			DownstreamLocalAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: e.DstIP.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(e.DstPort)}}}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"weft.egress": md}},
		},
		ConnectionProperties: &accesslogdatav3.ConnectionProperties{ReceivedBytes: uint64(e.BytesSent), SentBytes: uint64(e.BytesReceived)},
	}
}

func message(node string, events ...apiaudit.Event) *alsv3.StreamAccessLogsMessage {
	logs := &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{}
	for _, e := range events {
		logs.LogEntry = append(logs.LogEntry, entry(e))
	}
	m := &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: logs}}
	if node != "" {
		m.Identifier = &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: node}, LogName: "weft-egress"}
	}
	return m
}

// shopEvent is an event at t0 of pod web-1 in shop running as shopApp.
func shopEvent(t0 time.Time, id string) apiaudit.Event {
	e := ev(t0, id, 0, "shop", "web-1", "app", "api.example.com", "93.184.216.34", 443, "allow")
	return e
}

// harness is a Service on a fake clock, clk: its CA, store and peer
// verification all read clk, none the wall clock.
type harness struct {
	clk   *clocktesting.FakeClock
	ca    *testCA
	store *Store
	pods  *streamauthtest.Pods
	auth  *streamauth.Authorizer
	svc   *Service
	reg   *prometheus.Registry
	addr  string
}

// newHarness serves a Service on loopback; the registry knows pods
// shop/web-1 and shop/web-2 (shopApp) and lab/lab-1 (labApp), each with
// its token, at 127.0.0.1.
func newHarness(t *testing.T) *harness {
	t.Helper()
	clk := wefttest.FakeClock(t)
	h := &harness{clk: clk, ca: newTestCA(t, clk), store: openTestStore(t, clk), pods: streamauthtest.New(), reg: prometheus.NewRegistry()}
	h.pods.Add("shop", "web-1", shopApp)
	h.pods.Add("shop", "web-2", shopApp)
	h.pods.Add("lab", "lab-1", labApp)
	var err error
	h.auth, err = streamauth.New(streamauth.Config{Authenticator: h.pods, Pods: h.pods, Bundle: h.ca.ca.Bundle(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	h.svc, err = NewService(ServiceConfig{Store: h.store, Authorizer: h.auth, Registerer: h.reg, TopDestinations: 2, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	h.addr = h.ca.serve(t, h.svc)
	return h
}

// send streams msgs as id with the token of the node the first message
// names (if the registry has it, else id's first pod's), as that node's
// sidecar does, and returns the stream's outcome.
func (h *harness) send(t *testing.T, id spiffeid.ID, msgs ...*alsv3.StreamAccessLogsMessage) error {
	t.Helper()
	tok := h.pods.DefaultToken(id)
	if len(msgs) > 0 && msgs[0].GetIdentifier() != nil {
		node := msgs[0].GetIdentifier().GetNode().GetId()
		if i := strings.LastIndexByte(node, '.'); i > 0 && h.pods.Known(streamauthtest.Token(node[i+1:], node[:i])) {
			tok = streamauthtest.Token(node[i+1:], node[:i])
		}
	}
	return h.sendAs(t, id, peerOpts{token: tok}, msgs...)
}

// peerOpts is what a client presents besides its certificate.
type peerOpts struct {
	token string           // "": none
	from  string           // source IP ("": 127.0.0.1)
	cert  *tls.Certificate // nil: a fresh SVID for id
}

// sendAs streams msgs as id presenting o.
func (h *harness) sendAs(t *testing.T, id spiffeid.ID, o peerOpts, msgs ...*alsv3.StreamAccessLogsMessage) error {
	t.Helper()
	st, err := h.open(t, id, o)
	if err != nil {
		return err
	}
	return sendAll(st, msgs...)
}

// open opens a stream as id presenting o.
func (h *harness) open(t *testing.T, id spiffeid.ID, o peerOpts) (grpc.ClientStreamingClient[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse], error) {
	t.Helper()
	opts := streamauthtest.DialOptions(o.token, o.from)
	return alsv3.NewAccessLogServiceClient(h.ca.dialCert(t, h.addr, id, o.cert, opts...)).StreamAccessLogs(testContext(t))
}

func TestServiceStoresOwnEvents(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	msgs := []*alsv3.StreamAccessLogsMessage{message("web-1.shop", shopEvent(t0, "s-1"), shopEvent(t0, "s-2")), message("", shopEvent(t0, "s-3"))}
	if err := h.send(t, shopApp, msgs...); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if err := h.send(t, shopApp, msgs...); err != nil { // a resend
		t.Fatalf("resend: %v", err)
	}
	got, _ := h.store.Query(Query{})
	if len(got) != 3 {
		t.Fatalf("stored %v, want s-1..s-3 once", ids(got))
	}
	e := got[2]
	if e.ID != "s-1" || e.SourceID != shopApp.String() || e.BytesSent != 100 || e.BytesReceived != 1000 ||
		e.Duration != 1500*time.Millisecond || e.DstPort != 443 || !e.Time.Equal(t0) {
		t.Errorf("stored %+v", e)
	}
	if got := testutil.ToFloat64(h.svc.m.events.WithLabelValues("duplicate")); got != 3 {
		t.Errorf("duplicates = %v, want 3", got)
	}
}

func TestServiceRefuses(t *testing.T) {
	t0 := wefttest.Epoch(t)
	foreign := shopEvent(t0, "f-1")
	foreign.SourceID = labApp.String()
	otherPod := shopEvent(t0, "f-2")
	otherPod.Pod = "web-2"
	badDecision := shopEvent(t0, "f-3")
	badDecision.Decision = "maybe"
	noName := message("web-1.shop", shopEvent(t0, "f-4"))
	noName.Identifier.LogName = "other"
	// Entries the sidecar would never write.
	withEntry := func(id string, f func(*accesslogdatav3.TCPAccessLogEntry)) []*alsv3.StreamAccessLogsMessage {
		m := message("web-1.shop", shopEvent(t0, id))
		f(m.GetTcpLogs().GetLogEntry()[0])
		return []*alsv3.StreamAccessLogsMessage{m}
	}
	noID := withEntry("f-8", func(en *accesslogdatav3.TCPAccessLogEntry) {
		en.CommonProperties.StreamId = ""
		en.CommonProperties.Metadata.FilterMetadata["weft.egress"].Fields["id"] = structpb.NewStringValue("")
	})
	otherStream := withEntry("f-8", func(en *accesslogdatav3.TCPAccessLogEntry) { en.CommonProperties.StreamId = "f-9" })
	noStart := withEntry("f-8", func(en *accesslogdatav3.TCPAccessLogEntry) { en.CommonProperties.StartTime = nil })
	longID := strings.Repeat("i", 257)
	tooLong := []*alsv3.StreamAccessLogsMessage{message("web-1.shop", shopEvent(t0, longID))}
	tests := []struct {
		name string
		id   spiffeid.ID
		msgs []*alsv3.StreamAccessLogsMessage
		code codes.Code
		msg  string
	}{
		{"foreign SPIFFE ID in an event", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1.shop", shopEvent(t0, "ok-1"), foreign)},
			codes.PermissionDenied, `audit: event f-1 has source "spiffe://cluster.local/ns/lab/sa/app", but the stream's client certificate is spiffe://cluster.local/ns/shop/sa/app`},
		{"foreign event in a later message", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1.shop", shopEvent(t0, "ok-2")), message("", foreign)},
			codes.PermissionDenied, "audit: event f-1 has source"},
		{"another pod's event", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1.shop", otherPod)},
			codes.PermissionDenied, "audit: event f-2 is for pod web-2.shop, but the stream is node web-1.shop"},
		{"node in another namespace", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1.lab", shopEvent(t0, "f-5"))},
			codes.PermissionDenied, `audit: node "web-1.lab" refused: the stream's token is pod shop/web-1's`},
		{"no client certificate", spiffeid.ID{}, []*alsv3.StreamAccessLogsMessage{message("web-1.shop", shopEvent(t0, "f-6"))},
			codes.Unauthenticated, "audit: a client certificate (the sidecar's X.509-SVID) is required for the access-log stream"},
		{"no identifier", shopApp, []*alsv3.StreamAccessLogsMessage{message("", shopEvent(t0, "f-7"))},
			codes.InvalidArgument, "audit: the first message must carry an identifier"},
		{"node without a pod", shopApp, []*alsv3.StreamAccessLogsMessage{message(".shop", shopEvent(t0, "f-7"))},
			codes.InvalidArgument, `audit: node ID ".shop" is not <pod>.<namespace>`},
		{"node without a namespace", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1.", shopEvent(t0, "f-7"))},
			codes.InvalidArgument, `audit: node ID "web-1." is not <pod>.<namespace>`},
		{"node without a dot", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1", shopEvent(t0, "f-7"))},
			codes.InvalidArgument, `audit: node ID "web-1" is not <pod>.<namespace>`},
		{"no event ID", shopApp, noID, codes.InvalidArgument, "audit: entry 0: no weft.egress.id"},
		{"stream_id not the event ID", shopApp, otherStream, codes.InvalidArgument, `audit: entry 0: event f-8: stream_id "f-9" differs from the metadata id`},
		{"no start_time", shopApp, noStart, codes.InvalidArgument, "audit: entry 0: event f-8: no start_time"},
		{"event ID past 256 bytes", shopApp, tooLong, codes.InvalidArgument, "audit: entry 0: event ID of 257 bytes"},
		{"wrong log name", shopApp, []*alsv3.StreamAccessLogsMessage{noName}, codes.InvalidArgument, `audit: log_name "other", want "weft-egress"`},
		{"bad decision", shopApp, []*alsv3.StreamAccessLogsMessage{message("web-1.shop", badDecision)},
			codes.InvalidArgument, `audit: entry 0: event f-3: decision "maybe" is not allow, deny or audit`},
		{"HTTP entries", shopApp, []*alsv3.StreamAccessLogsMessage{{Identifier: message("web-1.shop").Identifier,
			LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{}}}},
			codes.InvalidArgument, "audit: HTTP access-log entries are not accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			err := h.send(t, tt.id, tt.msgs...)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.HasPrefix(st.Message(), tt.msg) {
				t.Fatalf("stream = %v, want %s %q", err, tt.code, tt.msg)
			}
			for _, e := range []string{"f-1", "f-2", "f-3", "f-4", "f-5", "f-6", "f-7", "f-8", longID} {
				if got, _ := h.store.Query(Query{}); strings.Contains(strings.Join(ids(got), ","), e) {
					t.Errorf("refused event %s was stored: %v", e, ids(got))
				}
			}
		})
	}
}

// TestServiceNodeLookup: a token whose pod the registry does not know is
// refused (the sidecar retries); a registry that is still syncing says
// Unavailable.
func TestServiceNodeLookup(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now()
	if err := h.send(t, shopApp, message("web-1.shop", shopEvent(t0, "v-1"))); err != nil {
		t.Errorf("known node: %v", err)
	}
	ghost := shopEvent(t0, "v-2")
	ghost.Pod = "ghost"
	tok := h.pods.Add("shop", "ghost", shopApp)
	h.pods.Remove("shop", "ghost") // its token still reviews (the cache), the registry forgot it
	err := h.sendAs(t, shopApp, peerOpts{token: tok}, message("ghost.shop", ghost))
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != `audit: pod shop/ghost is not known` {
		t.Errorf("unknown pod: %v", err)
	}
	starting := shopEvent(t0, "v-3")
	starting.Pod = "starting"
	tok = h.pods.Add("shop", "starting", shopApp)
	h.pods.Syncing("shop", "starting")
	if err := h.sendAs(t, shopApp, peerOpts{token: tok}, message("starting.shop", starting)); status.Code(err) != codes.Unavailable {
		t.Errorf("registry syncing: %v", err)
	}
}

func TestHTTP(t *testing.T) {
	h := newHarness(t)
	t0 := h.clk.Now() // the service's clock: "since=1h" is relative to it
	mustInsert(t, h.store, sampleEvents(t0))
	srv := httptest.NewServer(h.svc.Handler())
	defer srv.Close()
	get := func(path string, v any) int {
		t.Helper()
		code, body := wefttest.Get(t, srv.URL+path)
		if v != nil && code == 200 {
			if err := json.Unmarshal([]byte(body), v); err != nil {
				t.Fatal(err)
			}
		}
		return code
	}
	var er apiaudit.EventsResponse
	if code := get("/audit/events?namespace=shop&limit=2", &er); code != 200 || !er.Truncated || len(er.Events) != 2 || er.Events[0].ID != "b-1" {
		t.Errorf("events: %d %+v", code, er)
	}
	// since as a duration back from the service's (fake) clock: t0.
	er = apiaudit.EventsResponse{}
	if code := get("/audit/events?since=1h&decision=audit", &er); code != 200 || er.Truncated || len(er.Events) != 1 || er.Events[0].ID != "c-1" {
		t.Errorf("events since 1h: %d %+v", code, er)
	}
	er = apiaudit.EventsResponse{}
	if code := get("/audit/events?until="+t0.Add(90*time.Second).Format(time.RFC3339), &er); code != 200 || len(er.Events) != 2 {
		t.Errorf("events until: %d %+v", code, er)
	}
	var sr apiaudit.SummaryResponse
	if code := get("/audit/summary?destination=*.example.com", &sr); code != 200 || len(sr.Destinations) != 2 ||
		sr.Destinations[0].Destination != "api.example.com:443" {
		t.Errorf("summary: %d %+v", code, sr)
	}
	// by=workload: one summary per source SPIFFE ID and destination, the
	// same totals. worker's denied connection to api.example.com is its
	// own row beside web's two allowed ones.
	mustInsert(t, h.store, []apiaudit.Event{ev(t0, "b-2", 5*time.Second, "shop", "worker-7", "worker", "api.example.com", "93.184.216.34", 443, "deny")})
	sr = apiaudit.SummaryResponse{}
	if code := get("/audit/summary?destination=api.example.com&by=workload", &sr); code != 200 || len(sr.Destinations) != 2 {
		t.Fatalf("summary by workload: %d %+v", code, sr)
	}
	web, worker := sr.Destinations[0], sr.Destinations[1]
	if web.Workload != "spiffe://cluster.local/ns/shop/sa/web" || web.Connections != 2 || web.Decisions["allow"] != 2 || web.BytesSent != 200 ||
		!slices.Equal(web.Workloads, []string{web.Workload}) {
		t.Errorf("web's row: %+v", web)
	}
	if worker.Workload != "spiffe://cluster.local/ns/shop/sa/worker" || worker.Connections != 1 || worker.Decisions["deny"] != 1 || worker.Decisions["allow"] != 0 {
		t.Errorf("worker's row: %+v", worker)
	}
	sr = apiaudit.SummaryResponse{}
	if code := get("/audit/summary?destination=api.example.com&by=destination", &sr); code != 200 || len(sr.Destinations) != 1 ||
		sr.Destinations[0].Workload != "" || sr.Destinations[0].Connections != 3 {
		t.Errorf("summary by destination: %d %+v", code, sr)
	}
	// A summary past MaxSummaryRows keeps the busiest rows and says so.
	h.svc.cfg.MaxSummaryRows = 2
	sr = apiaudit.SummaryResponse{}
	if code := get("/audit/summary", &sr); code != 200 || !sr.Truncated || len(sr.Destinations) != 2 ||
		sr.Destinations[0].Destination != "api.example.com:443" || sr.Destinations[0].Connections != 3 {
		t.Errorf("summary past its rows: %d %+v", code, sr)
	}
	// Exactly MaxSummaryRows rows: all of them, not truncated.
	h.svc.cfg.MaxSummaryRows = 4
	sr = apiaudit.SummaryResponse{}
	if code := get("/audit/summary", &sr); code != 200 || sr.Truncated || len(sr.Destinations) != 4 {
		t.Errorf("summary of exactly its rows: %d %+v", code, sr)
	}
	h.svc.cfg.MaxSummaryRows = 0
	sr = apiaudit.SummaryResponse{}
	if code := get("/audit/summary", &sr); code != 200 || sr.Truncated || len(sr.Destinations) != 4 {
		t.Errorf("summary: %d %+v", code, sr)
	}
	for _, bad := range []string{"/audit/events?since=yesterday", "/audit/events?limit=0", "/audit/events?limit=20000",
		"/audit/events?decision=maybe", "/audit/summary?limit=5", "/audit/summary?by=pod", "/audit/events?by=workload", "/audit/summary?by=workload&by=pod"} {
		if code := get(bad, nil); code != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", bad, code)
		}
	}
	if resp, err := http.Post(srv.URL+"/audit/events", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %v %v", resp.StatusCode, err)
	}
}

// TestHTTPLimitAndStore: limit runs from 1 to MaxLimit inclusive, a page
// exactly as long as what matches is not truncated, and /audit/store says
// how full the store is and its retention in seconds.
func TestHTTPLimitAndStore(t *testing.T) {
	h := newHarness(t)
	mustInsert(t, h.store, sampleEvents(h.clk.Now()))
	srv := httptest.NewServer(h.svc.Handler())
	defer srv.Close()
	get := func(path string, v any) {
		t.Helper()
		code, body := wefttest.Get(t, srv.URL+path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		if err := json.Unmarshal([]byte(body), v); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		path string
		n    int
	}{
		{"/audit/events?namespace=shop&limit=3", 3}, // shop has exactly 3
		{"/audit/events?limit=10000", 5},            // MaxLimit itself
		{"/audit/events?limit=1", 1},
	} {
		var er apiaudit.EventsResponse
		get(tt.path, &er)
		if len(er.Events) != tt.n || er.Truncated != (tt.n == 1) {
			t.Errorf("GET %s: %d events, truncated %v; want %d, truncated %v", tt.path, len(er.Events), er.Truncated, tt.n, tt.n == 1)
		}
	}
	var sr apiaudit.StoreResponse
	get("/audit/store", &sr)
	if want := (apiaudit.StoreResponse{Events: 5, Capacity: DefaultMaxEvents, Retention: 7 * 24 * 60 * 60, Path: h.store.cfg.Path}); sr != want {
		t.Errorf("/audit/store = %+v, want %+v", sr, want)
	}
	raw, err := http.Get(srv.URL + "/audit/store")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Body.Close()
	var fields map[string]any
	if err := json.NewDecoder(raw.Body).Decode(&fields); err != nil {
		t.Fatal(err)
	}
	if fields["retentionSeconds"] != float64(7*24*60*60) {
		t.Errorf("retentionSeconds = %v, want %d", fields["retentionSeconds"], 7*24*60*60)
	}
}

// TestNewServiceConfig: Store and Authorizer are required; a zero or
// negative limit gets the default its comment names, a positive one stays.
func TestNewServiceConfig(t *testing.T) {
	h := newHarness(t)
	if _, err := NewService(ServiceConfig{Authorizer: h.auth}); err == nil || err.Error() != "audit: NewService: Config.Store is nil" {
		t.Errorf("without Store: %v", err)
	}
	if _, err := NewService(ServiceConfig{Store: h.store}); err == nil || err.Error() != "audit: NewService: Config.Authorizer is nil" {
		t.Errorf("without Authorizer: %v", err)
	}
	type limits struct {
		top   int
		rate  float64
		burst int
		skew  time.Duration
	}
	defaults := limits{50, 50, 2000, time.Minute}
	for _, tc := range []struct {
		name     string
		in, want limits
	}{
		{"zero", limits{}, defaults},
		{"negative", limits{-1, -1, -1, -time.Nanosecond}, defaults},
		{"smallest", limits{1, 0.001, 1, time.Nanosecond}, limits{1, 0.001, 1, time.Nanosecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewService(ServiceConfig{Store: h.store, Authorizer: h.auth, Clock: h.clk,
				TopDestinations: tc.in.top, EventsPerSecond: tc.in.rate, Burst: tc.in.burst, MaxClockSkew: tc.in.skew})
			if err != nil {
				t.Fatal(err)
			}
			got := limits{s.cfg.TopDestinations, s.cfg.EventsPerSecond, s.cfg.Burst, s.cfg.MaxClockSkew}
			if got != tc.want || s.m.dest.max != tc.want.top {
				t.Errorf("settles on %+v (metrics top %d), want %+v", got, s.m.dest.max, tc.want)
			}
		})
	}
}

// TestServiceStoreFails: when the store cannot commit, the stream ends
// Unavailable (the sidecar keeps its events and resends them) and nothing
// is counted as stored.
func TestServiceStoreFails(t *testing.T) {
	h := newHarness(t)
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	err := h.send(t, shopApp, message("web-1.shop", shopEvent(h.clk.Now(), "u-1")))
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), "audit: storing events: ") {
		t.Fatalf("send to a closed store: %v", err)
	}
	if got := testutil.ToFloat64(h.svc.m.events.WithLabelValues("stored")); got != 0 {
		t.Errorf("stored %v, want 0", got)
	}
	if got := testutil.ToFloat64(h.svc.m.refused.WithLabelValues("Unavailable")); got != 1 {
		t.Errorf("refused{Unavailable} %v, want 1", got)
	}
}

// TestServiceLogsRefusedPeer: a refused stream is logged with the address
// it came from.
func TestServiceLogsRefusedPeer(t *testing.T) {
	h := newHarness(t)
	logs := &logLines{}
	h.svc.log = slog.New(logs)
	err := h.send(t, shopApp, message("", shopEvent(h.clk.Now(), "p-1")))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no identifier: %v", err)
	}
	got := logs.get()
	if len(got) != 1 || got[0].msg != "stream refused" {
		t.Fatalf("logged %+v, want one refusal", got)
	}
	if host, _, err := net.SplitHostPort(got[0].peer); err != nil || host != "127.0.0.1" {
		t.Errorf("peer %q, want 127.0.0.1:<port>", got[0].peer)
	}
}

// TestServiceAcceptsLongestID: an event ID of 256 bytes, the most there
// is room for, is stored; one more byte is refused (TestServiceRefuses).
func TestServiceAcceptsLongestID(t *testing.T) {
	h := newHarness(t)
	id := strings.Repeat("i", 256)
	if err := h.send(t, shopApp, message("web-1.shop", shopEvent(h.clk.Now(), id))); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.store.Query(Query{}); len(got) != 1 || got[0].ID != id {
		t.Errorf("stored %v", ids(got))
	}
}
