package admin

import "time"

// StatusPath is where the control plane serves [Status], on its admin
// port over TLS.
const StatusPath = "/debug/status"

// Status is what the control plane's /debug/status reports (read by
// weftctl status and check).
type Status struct {
	Version      string    `json:"version"`
	TrustDomain  string    `json:"trustDomain"`
	Started      time.Time `json:"started"`
	Roots        []Cert    `json:"roots"`
	Intermediate Cert      `json:"intermediate"`
	// IntermediateOnly: the CA Secret holds no root key (weftctl install
	// --ca-dir); the intermediate is renewed where the root key lives.
	IntermediateOnly bool      `json:"intermediateOnly,omitempty"`
	ServingCertAfter time.Time `json:"servingCertNotAfter"`
	// Sidecars is each connected sidecar's xDS state per type.
	Sidecars []NodeStatus `json:"sidecars"`
}

// Cert describes one CA certificate.
type Cert struct {
	Fingerprint string    `json:"sha256"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
}

// State is how far a sidecar has come with one resource type.
type State string

const (
	// StateSynced: the sidecar ACKed the version it should run.
	StateSynced State = "SYNCED"
	// StateStale: the sidecar runs an older version, or has not answered yet.
	StateStale State = "STALE"
	// StateNacked: the sidecar rejected the latest version it was sent.
	StateNacked State = "NACKED"
)

// NodeStatus is one connected sidecar, as /debug/status and weftctl status
// show it.
type NodeStatus struct {
	Node      string    `json:"node"` // "<pod>.<namespace>"
	Pod       string    `json:"pod"`
	Namespace string    `json:"namespace"`
	SPIFFEID  string    `json:"spiffeID"`
	Streams   int       `json:"streams"`
	Connected time.Time `json:"connected"`
	// Generated is when the last good snapshot was built; GenerateError is
	// the last error if the newest attempt failed, or was withheld because
	// a response would exceed the xDS message limit (see
	// TypeStatus.Withheld); the sidecar keeps the previous snapshot
	// meanwhile.
	Generated     time.Time    `json:"generated,omitzero"`
	GenerateError string       `json:"generateError,omitempty"`
	Types         []TypeStatus `json:"types"`
}

// TypeStatus is one resource type of one sidecar.
type TypeStatus struct {
	Type     string    `json:"type"` // short name: "listener", "cluster", ...
	TypeURL  string    `json:"typeURL"`
	State    State     `json:"state"`
	Version  string    `json:"version,omitempty"` // what the sidecar should run (its snapshot)
	Sent     string    `json:"sent,omitempty"`    // last version sent
	SentAt   time.Time `json:"sentAt,omitzero"`
	Acked    string    `json:"acked,omitempty"` // last version ACKed
	AckedAt  time.Time `json:"ackedAt,omitzero"`
	NACKs    int       `json:"nacks"` // NACKs since the sidecar connected
	LastNACK *NACK     `json:"lastNack,omitempty"`
	// Withheld is set while the newest snapshot is not sent because this
	// type's response would exceed the xDS message limit: the sidecar
	// keeps running Version.
	Withheld *Withheld `json:"withheld,omitempty"`
}

// Withheld is a response the control plane did not send because its
// encoded size exceeds the xDS message limit (names.MaxXDSMessageSize),
// which is also what the sidecar accepts.
type Withheld struct {
	Version string    `json:"version"` // the version not sent
	Size    int       `json:"size"`    // bytes, encoded
	Limit   int       `json:"limit"`   // bytes
	Time    time.Time `json:"time"`
}

// NACK is the last rejection of a type by a sidecar.
type NACK struct {
	Version string    `json:"version"`
	Message string    `json:"message"` // the sidecar's error_detail
	Time    time.Time `json:"time"`
}
