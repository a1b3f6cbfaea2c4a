package controlplane

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/weftmesh/weft/api/names"
)

// serverOptions are the control plane's gRPC server's options: creds for
// its TLS, and streams, the stream interceptors (Run: the ADS server's,
// the xDS streams' authorization).
func serverOptions(creds credentials.TransportCredentials, streams ...grpc.StreamServerInterceptor) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
		// A sidecar holds three streams (ADS, access log, certificates);
		// no client needs more than a handful, nor messages past 4 MiB (an
		// access-log batch of 1,000 capped events is well under), nor 10s
		// for its TLS handshake.
		grpc.MaxConcurrentStreams(32),
		grpc.MaxRecvMsgSize(4 << 20),
		// What a sidecar receives (names.MaxXDSMessageSize, its ADS
		// client's limit). The ADS server already withholds a snapshot
		// that would need a larger response (ads.Config.MaxMessageSize);
		// this is the last word on the wire.
		grpc.MaxSendMsgSize(names.MaxXDSMessageSize),
		grpc.ConnectionTimeout(10 * time.Second),
		// Every sidecar holds a connection that is idle most of the time:
		// its buffers are what the control plane pays per sidecar while
		// nothing happens. gRPC's defaults give each connection a 32 KiB
		// read buffer and a 32 KiB write buffer for its whole life; the
		// writes borrow a pooled buffer instead, and the reads go to the
		// TLS connection, which buffers a record itself (so no read
		// becomes a system call that was not one). docs/scale.md has the
		// figures.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(0),
		grpc.ChainStreamInterceptor(streams...),
	}
}
