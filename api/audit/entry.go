package audit

// The access-log wire form of an Event. A sidecar sends each Event to the
// control plane as an Envoy TCPAccessLogEntry over the access-log service
// (stream LogName); the weft fields travel as strings in the entry's
// filter_metadata[EntryMetadataKey] under these names. The sidecar writes
// them (sidecar/audit.Entry) and the control plane reads them
// (controlplane/audit): both import these constants, so neither can rename
// a field alone.
const EntryMetadataKey = "weft.egress"

// Field names of the EntryMetadataKey struct.
const (
	FieldID        = "id"
	FieldSource    = "source_spiffe_id"
	FieldPod       = "pod"
	FieldNamespace = "namespace"
	FieldDstHost   = "dst_host"
	FieldService   = "service"
	FieldSNI       = "sni"
	FieldHost      = "host"
	FieldProtocol  = "protocol"
	FieldDecision  = "decision"
	FieldPolicy    = "policy"
	FieldRule      = "rule"
	FieldOutbound  = "outbound"
	FieldChain     = "chain"
	FieldReason    = "reason"
)
