package audit

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
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
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			break // the server ended the stream: CloseAndRecv has its status
		}
	}
	_, err = st.CloseAndRecv()
	return err
}

// open opens a stream as id presenting o.
func (h *harness) open(t *testing.T, id spiffeid.ID, o peerOpts) (grpc.ClientStreamingClient[alsv3.StreamAccessLogsMessage, alsv3.StreamAccessLogsResponse], error) {
	t.Helper()
	var opts []grpc.DialOption
	if o.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(streamauthtest.Bearer(o.token)))
	}
	if o.from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(o.from)}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	}
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
			for _, e := range []string{"f-1", "f-2", "f-3", "f-4", "f-5", "f-6", "f-7"} {
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
	if _, _, err := h.store.Insert(sampleEvents(t0)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.svc.Handler())
	defer srv.Close()
	get := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil && resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	var er EventsResponse
	if code := get("/audit/events?namespace=shop&limit=2", &er); code != 200 || !er.Truncated || len(er.Events) != 2 || er.Events[0].ID != "b-1" {
		t.Errorf("events: %d %+v", code, er)
	}
	// since as a duration back from the service's (fake) clock: t0.
	er = EventsResponse{}
	if code := get("/audit/events?since=1h&decision=audit", &er); code != 200 || er.Truncated || len(er.Events) != 1 || er.Events[0].ID != "c-1" {
		t.Errorf("events since 1h: %d %+v", code, er)
	}
	er = EventsResponse{}
	if code := get("/audit/events?until="+t0.Add(90*time.Second).Format(time.RFC3339), &er); code != 200 || len(er.Events) != 2 {
		t.Errorf("events until: %d %+v", code, er)
	}
	var sr SummaryResponse
	if code := get("/audit/summary?destination=*.example.com", &sr); code != 200 || len(sr.Destinations) != 2 ||
		sr.Destinations[0].Destination != "api.example.com:443" {
		t.Errorf("summary: %d %+v", code, sr)
	}
	for _, bad := range []string{"/audit/events?since=yesterday", "/audit/events?limit=0", "/audit/events?limit=20000",
		"/audit/events?decision=maybe", "/audit/summary?limit=5"} {
		if code := get(bad, nil); code != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", bad, code)
		}
	}
	if resp, err := http.Post(srv.URL+"/audit/events", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %v %v", resp.StatusCode, err)
	}
}
