package envoy

import (
	"context"
	"strings"

	"google.golang.org/grpc"
)

// OpenStream opens a stream of one of Envoy's gRPC methods, named in full
// ("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"),
// with the subset's request and response types: the sidecar links no
// generated Envoy service code, only the messages. The client always
// streams; serverStreams says whether the server does too (ADS) or answers
// once (the access-log service). opts apply to this stream only (the ADS
// client's receive limit).
func OpenStream[Req, Res any](ctx context.Context, conn grpc.ClientConnInterface, method string, serverStreams bool, opts ...grpc.CallOption) (*grpc.GenericClientStream[Req, Res], error) {
	desc := &grpc.StreamDesc{StreamName: method[strings.LastIndexByte(method, '/')+1:], ClientStreams: true, ServerStreams: serverStreams}
	s, err := conn.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[Req, Res]{ClientStream: s}, nil
}
