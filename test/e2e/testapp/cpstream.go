package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
)

// cpStream is the app as an attacker on the control plane: with what the
// Workload API gave it (the pod's SVID, key and bundle) as its client
// certificate, and optionally a bearer token, it opens the control
// plane's ADS stream (asking for listeners as -node) or its access-log
// stream (writing one egress event as -node), and prints
// "accepted: ..." or "refused: <code>: <message>"; exit 1 when refused.
func cpStream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cp-stream", flag.ExitOnError)
	kind := fs.String("kind", "ads", "ads or als")
	addr := fs.String("addr", names.DefaultControlPlaneAddr, "control plane")
	node := fs.String("node", "", "node ID <pod>.<namespace> to claim")
	tokenFile := fs.String("token-file", "", "send this file's token as authorization: Bearer")
	token := fs.String("token", "", "send this token as authorization: Bearer")
	cpNS := fs.String("cp-namespace", names.Namespace, "the control plane's namespace (its SPIFFE ID)")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	cpID := spiffeid.RequireFromSegments(svid.ID.TrustDomain(), "ns", *cpNS, "sa", names.ControlPlane)
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(cpID)))))
	if err != nil {
		return err
	}
	defer conn.Close()
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		*token = strings.TrimSpace(string(b))
	}
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	fmt.Printf("as %s, node %q, token %v\n", svid.ID, *node, *token != "")
	switch *kind {
	case "ads":
		err = adsOnce(ctx, conn, *node)
	case "als":
		err = alsOnce(ctx, conn, *node, svid.ID.String())
	default:
		return fmt.Errorf("-kind %q: want ads or als", *kind)
	}
	if err != nil {
		st := status.Convert(err)
		fmt.Printf("refused: %s: %s\n", st.Code(), st.Message())
		return errors.New("refused")
	}
	return nil
}

func adsOnce(ctx context.Context, conn *grpc.ClientConn, node string) error {
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener"}); err != nil {
		_, err = st.Recv() // the status
		return err
	}
	r, err := st.Recv()
	if err != nil {
		return err
	}
	fmt.Printf("accepted: %d listeners, version %s\n", len(r.GetResources()), r.GetVersionInfo())
	return nil
}

func alsOnce(ctx context.Context, conn *grpc.ClientConn, node, source string) error {
	pod, ns, _ := strings.Cut(node, ".")
	if i := strings.LastIndexByte(node, '.'); i > 0 {
		pod, ns = node[:i], node[i+1:]
	}
	id := fmt.Sprintf("forged-%d", time.Now().UnixNano())
	md, err := structpb.NewStruct(map[string]any{"id": id, "source_spiffe_id": source, "pod": pod, "namespace": ns,
		"dst_host": "forged.example.com", "decision": "allow", "protocol": "tls"})
	if err != nil {
		return err
	}
	st, err := alsv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
	if err != nil {
		return err
	}
	msg := &alsv3.StreamAccessLogsMessage{
		Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: node}, LogName: apiaudit.LogName},
		LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{
			LogEntry: []*accesslogdatav3.TCPAccessLogEntry{{CommonProperties: &accesslogdatav3.AccessLogCommon{
				StreamId: id, StartTime: timestamppb.Now(),
				Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{apiaudit.EntryMetadataKey: md}},
			}}},
		}},
	}
	_ = st.Send(msg) // a refusal shows in CloseAndRecv
	if _, err := st.CloseAndRecv(); err != nil {
		return err
	}
	fmt.Printf("accepted: event %s stored\n", id)
	return nil
}
