package ads

import (
	"context"
	"slices"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/controlplane/streamauth"
	"github.com/weftmesh/weft/controlplane/xds"
	"github.com/weftmesh/weft/internal/peersvid"
)

// adsService prefixes the full method names of the ADS service (SotW and
// delta); only these require a client certificate.
var adsService = "/" + discoverygrpc.AggregatedDiscoveryService_ServiceDesc.ServiceName + "/"

// peerID returns the SPIFFE ID of the stream's client certificate, verified
// against the configured bundle whatever the TLS layer did (it only
// requests a certificate, since the same port serves the certificate
// service). Every failure is codes.Unauthenticated.
func (s *Server) peerID(ctx context.Context) (spiffeid.ID, error) {
	return peersvid.ID(ctx, s.bundle, s.clock.Now(), "xds", "ADS")
}

// authorize checks the first request's node ID against the stream's grant:
// it must parse and name the pod whose token the stream carries (a pod of
// the same ServiceAccount cannot claim a sibling's node).
func (s *Server) authorize(node *core.Node, g *streamauth.Grant) (xds.Node, error) {
	nodeID := node.GetId()
	pod, ns, err := xds.ParseNodeID(nodeID)
	if err != nil {
		return xds.Node{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if pod != g.Pod || ns != g.Namespace {
		return xds.Node{}, status.Errorf(codes.PermissionDenied, "xds: node %q refused: the stream's token is pod %s/%s's", nodeID, g.Namespace, g.Pod)
	}
	return xds.Node{Name: pod, Namespace: ns, ID: g.ID,
		DestinationListeners: slices.Contains(node.GetClientFeatures(), names.FeatureDestinationListeners)}, nil
}

// guard authorizes an ADS stream (streamauth: certificate, token, pod,
// peer address) and serves it with handler on a stream that fails once
// the grant ends; the grant's cause is then the stream's status.
func (s *Server) guard(ss grpc.ServerStream, handler func(grpc.ServerStream) error) error {
	g, err := s.auth.Authorize(ss.Context(), "xds", "ADS")
	if err != nil {
		s.refuse(err, "", peerAddr(ss.Context()))
		return err
	}
	err = handler(limitStream{ServerStream: streamauth.Stream(ss, g), s: s, node: g.NodeID()})
	if cause := g.Err(); cause != nil {
		s.refuse(cause, g.NodeID(), peerAddr(ss.Context()))
		return cause
	}
	return err
}

// limitStream is an ADS stream that never sends a message over the
// message limit. It is the last check on the wire: generate withholds any
// snapshot that could need a larger response, so it only meets what that
// check cannot foresee (a delta stream whose removed_resources name more
// than the last published snapshot held). By then go-control-plane has
// recorded the response as sent, and a stream that silently dropped it
// would never be answered for its type again (see Server.generate); so the
// stream ends, with ResourceExhausted as gRPC's own MaxSendMsgSize would
// end it. The sidecar keeps its configuration and reconnects with a
// backoff that a ResourceExhausted end does not reset.
type limitStream struct {
	grpc.ServerStream
	s    *Server
	node string
}

func (l limitStream) SendMsg(m any) error {
	if pm, ok := m.(proto.Message); ok {
		if size := proto.Size(pm); size > l.s.maxMsg {
			return l.s.tooLarge(l.node, pm, size)
		}
	}
	return l.ServerStream.SendMsg(m)
}

// tooLarge logs, counts and records a response limitStream refused, and
// returns the stream's end.
func (s *Server) tooLarge(node string, m proto.Message, size int) error {
	var typeURL, version string
	switch r := m.(type) {
	case *discoverygrpc.DiscoveryResponse:
		typeURL, version = r.GetTypeUrl(), r.GetVersionInfo()
	case *discoverygrpc.DeltaDiscoveryResponse:
		typeURL, version = r.GetTypeUrl(), r.GetSystemVersionInfo()
	}
	s.mu.Lock()
	if n := s.nodes[node]; n != nil {
		n.typeState(typeURL).withheld = &Withheld{Version: version, Size: size, Limit: s.maxMsg, Time: s.clock.Now()}
	}
	s.mu.Unlock()
	s.metrics.oversized.WithLabelValues(typeName(typeURL)).Inc()
	s.log.Error("response not sent: over the xDS message limit; ending the stream (the sidecar keeps its configuration)",
		"node", node, "type", typeName(typeURL), "version", version, "size_bytes", size, "limit_bytes", s.maxMsg)
	return status.Errorf(codes.ResourceExhausted, "xds: %s response of %d bytes not sent: over the xDS message limit of %d bytes",
		typeName(typeURL), size, s.maxMsg)
}

// StreamInterceptor refuses ADS streams without a valid client certificate
// before go-control-plane sees them; other services on the same gRPC
// server (the certificate service) pass through untouched. The stream
// callbacks check again, so the interceptor is an early exit, not the only
// gate.
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, adsService) {
			return handler(srv, ss)
		}
		if _, err := s.peerID(ss.Context()); err != nil {
			s.refuse(err, "", peerAddr(ss.Context()))
			return err
		}
		return handler(srv, ss)
	}
}

// refuse logs and counts a refused stream.
func (s *Server) refuse(err error, nodeID, addr string) {
	code := status.Code(err)
	s.metrics.refused.WithLabelValues(code.String()).Inc()
	s.log.Warn("ADS stream refused", "node", nodeID, "peer", addr, "code", code.String(), "err", status.Convert(err).Message())
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
