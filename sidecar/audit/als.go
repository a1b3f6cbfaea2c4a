package audit

import (
	"strconv"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiaudit "github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/names"
	corev3 "github.com/weftmesh/weft/sidecar/internal/envoy/config/core/v3"
	accesslogdatav3 "github.com/weftmesh/weft/sidecar/internal/envoy/data/accesslog/v3"
	alsv3 "github.com/weftmesh/weft/sidecar/internal/envoy/service/accesslog/v3"
)

// MetadataKey is the filter_metadata namespace of an entry's weft fields
// (api/audit declares it and the field names, for both sides).
const MetadataKey = apiaudit.EntryMetadataKey

// Entry converts e to the access-log entry the control plane receives.
func Entry(e apiaudit.Event) *accesslogdatav3.TCPAccessLogEntry {
	fields := map[string]*structpb.Value{}
	for k, v := range map[string]string{
		apiaudit.FieldID: e.ID, apiaudit.FieldSource: e.SourceID, apiaudit.FieldPod: e.Pod, apiaudit.FieldNamespace: e.Namespace,
		apiaudit.FieldDstHost: e.DstHost, apiaudit.FieldService: e.Service, apiaudit.FieldSNI: e.SNI, apiaudit.FieldHost: e.Host,
		apiaudit.FieldProtocol: e.Protocol, apiaudit.FieldDecision: e.Decision, apiaudit.FieldPolicy: e.Policy,
		apiaudit.FieldRule: e.Rule, apiaudit.FieldOutbound: e.Outbound, apiaudit.FieldChain: e.Chain, apiaudit.FieldReason: e.Reason,
	} {
		if v != "" {
			fields[k] = structpb.NewStringValue(v)
		}
	}
	cluster := names.PassthroughCluster
	if e.Decision == "deny" {
		cluster = names.BlackHoleCluster
	}
	common := &accesslogdatav3.AccessLogCommon{
		SampleRate:      1,
		StreamId:        e.ID,
		StartTime:       timestamppb.New(e.Time),
		Duration:        durationpb.New(e.Duration),
		UpstreamCluster: cluster,
		AccessLogType:   accesslogdatav3.AccessLogType_TcpConnectionEnd,
		Metadata:        &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: {Fields: fields}}},
	}
	if e.DstIP.IsValid() {
		addr := socketAddress(e.DstIP.String(), e.DstPort)
		common.DownstreamLocalAddress = addr
		if e.Decision != "deny" {
			common.UpstreamRemoteAddress = addr
		}
	}
	if e.SNI != "" {
		common.TlsProperties = &accesslogdatav3.TLSProperties{TlsSniHostname: e.SNI}
	}
	return &accesslogdatav3.TCPAccessLogEntry{
		CommonProperties: common,
		ConnectionProperties: &accesslogdatav3.ConnectionProperties{
			ReceivedBytes: uint64(max(e.BytesSent, 0)), SentBytes: uint64(max(e.BytesReceived, 0)),
		},
	}
}

// Identifier is the first message's identifier: node "<pod>.<namespace>",
// log_name "weft-egress".
func Identifier(pod, namespace string) *alsv3.StreamAccessLogsMessage_Identifier {
	return &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: pod + "." + namespace}, LogName: apiaudit.LogName}
}

func socketAddress(ip string, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// alsMethod is the access-log service's one method, opened by name with
// envoy.OpenStream.
const alsMethod = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"

// seqID formats an event ID.
func seqID(instance string, seq uint64) string { return instance + "-" + strconv.FormatUint(seq, 10) }
