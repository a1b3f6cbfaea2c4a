package xds

import (
	"context"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/internal/testutil"
	subsetdisc "github.com/weftmesh/weft/sidecar/internal/envoy/service/discovery/v3"
	"github.com/weftmesh/weft/sidecar/xds/model"
)

func TestClientReceivesUpToTheXDSLimitSotW(t *testing.T)  { testReceivesUpToTheLimit(t, false) }
func TestClientReceivesUpToTheXDSLimitDelta(t *testing.T) { testReceivesUpToTheLimit(t, true) }

// testReceivesUpToTheLimit: a response over gRPC's default receive limit
// (4 MiB) but within names.MaxXDSMessageSize is received and applied (a
// listener with a 5 MiB stat_prefix, which the sidecar ignores).
func testReceivesUpToTheLimit(t *testing.T, delta bool) {
	m := mesh{services: []string{"server.demo"}}
	cache, _, c := serveV1(t, m, delta)
	waitConfig(t, c, "v1", func(*model.Config) bool { return true })

	const big = 5 << 20
	if big <= 4<<20 || big >= names.MaxXDSMessageSize {
		t.Fatalf("a %d-byte listener does not lie between gRPC's default and the xDS limit", big)
	}
	res := m.resources(t)
	for i, r := range res[resource.ListenerType] {
		l := proto.Clone(r).(*listenerv3.Listener)
		if l.GetName() == "inbound" {
			l.StatPrefix = strings.Repeat("x", big)
		}
		res[resource.ListenerType][i] = l
	}
	s, err := cachev3.NewSnapshot("v2", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.SetSnapshot(context.Background(), testNode, s); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, c, "the 5 MiB listeners of v2", func(cfg *model.Config) bool { return cfg.Version[model.ListenerType] == "v2" })
	if st := c.Status(); st.TooLarge != 0 {
		t.Errorf("status = %+v, want no stream ended on a message too large", st)
	}
}

// tooLargeADS answers every stream, SotW or delta, with a response that
// fits (so the stream counts as healthy) and then one over its gRPC
// server's MaxSendMsgSize: gRPC refuses to send it and the stream ends
// with ResourceExhausted, as the control plane's does when a response
// would exceed the limit.
type tooLargeADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	opened chan struct{}
}

const tooLargeMax = 64 << 10

func (s *tooLargeADS) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	s.opened <- struct{}{}
	if err := st.Send(&discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: "v1", Nonce: "1"}); err != nil {
		return err
	}
	return st.Send(&discoveryv3.DiscoveryResponse{TypeUrl: resource.ListenerType, VersionInfo: "v1", Nonce: "2",
		Resources: []*anypb.Any{{TypeUrl: resource.ListenerType, Value: make([]byte, 2*tooLargeMax)}}})
}

func (s *tooLargeADS) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	s.opened <- struct{}{}
	if err := st.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.ClusterType, SystemVersionInfo: "v1", Nonce: "1"}); err != nil {
		return err
	}
	return st.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.ListenerType, SystemVersionInfo: "v1", Nonce: "2",
		Resources: []*discoveryv3.Resource{{Name: "inbound", Version: "1",
			Resource: &anypb.Any{TypeUrl: resource.ListenerType, Value: make([]byte, 2*tooLargeMax)}}}})
}

func TestBackoffGrowsAcrossTooLargeSotW(t *testing.T)  { testBackoffGrowsAcrossTooLarge(t, false) }
func TestBackoffGrowsAcrossTooLargeDelta(t *testing.T) { testBackoffGrowsAcrossTooLarge(t, true) }

// testBackoffGrowsAcrossTooLarge (security review F2): streams that got a
// response and then ended with ResourceExhausted do not reset the
// reconnect backoff. On the client's fake clock, the k-th such end waits
// at least Initial*2^(k-1)/2 (a reset backoff waits at most Initial).
func testBackoffGrowsAcrossTooLarge(t *testing.T, delta bool) {
	srv := &tooLargeADS{opened: make(chan struct{}, 10)}
	gs := grpc.NewServer(grpc.MaxSendMsgSize(tooLargeMax))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	addr := testutil.ServeGRPC(t, gs, testutil.Listen(t))
	clock := testutil.FakeClock(t)
	const initial = time.Second
	c, err := New(ClientConfig{
		NodeID: testNode, Delta: delta, Clock: clock, Backoff: Backoff{Initial: initial, Max: time.Hour},
		Dial: func(context.Context) (grpc.ClientConnInterface, error) {
			return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, c.Run)

	for k := 1; k <= 4; k++ {
		testutil.Receive(t, srv.opened, "stream")
		// The stream ends; the client waits on its clock.
		testutil.Eventually(t, "the client waiting to reconnect", func() bool {
			return c.Status().TooLarge == uint64(k) && clock.HasWaiters()
		})
		st := c.Status()
		if !strings.Contains(st.LastError, "ResourceExhausted") || st.Connected {
			t.Fatalf("end %d: status %+v, want the stream ended with ResourceExhausted", k, st)
		}
		least := initial << (k - 1) / 2
		clock.Step(least - time.Nanosecond)
		if !clock.HasWaiters() {
			t.Fatalf("end %d: the client reconnected before %v: the backoff was reset", k, least)
		}
		clock.Step(initial << (k - 1)) // past the longest delay: reconnect
	}
}

// TestSendReportsWhyTheStreamEnded: a request sent on a stream the server
// already ended reports the server's status, not io.EOF, so a
// ResourceExhausted end is seen as one.
func TestSendReportsWhyTheStreamEnded(t *testing.T) {
	gs := grpc.NewServer()
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "envoy.service.discovery.v3.AggregatedDiscoveryService", HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "StreamAggregatedResources", ClientStreams: true, ServerStreams: true,
			Handler: func(any, grpc.ServerStream) error {
				return status.Error(codes.ResourceExhausted, "grpc: trying to send message larger than max (17825792 vs. 16777216)")
			}}},
	}, struct{}{})
	addr := testutil.ServeGRPC(t, gs, testutil.Listen(t))
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := openADS[subsetdisc.DiscoveryRequest, subsetdisc.DiscoveryResponse](context.Background(), conn, adsSotwMethod)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	// Requests go out until the end reaches the client; then send fails
	// (blocked sends return then too).
	for err == nil {
		err = s.send(&subsetdisc.DiscoveryRequest{TypeUrl: model.ClusterType})
	}
	if status.Code(err) != codes.ResourceExhausted || !messageTooLarge(err) {
		t.Fatalf("send on an ended stream: %v, want the server's ResourceExhausted", err)
	}
}
