package weftctl

import (
	"time"

	adminapi "github.com/weftmesh/weft/api/admin"
)

// The JSON that `weftctl dashboard` serves to its page (and to anyone who
// curls it): GET /api/graph, /api/egress, /api/egress/suggest and
// /api/health. The page draws only what these say; dashboard_test.go holds
// them to the cluster state they are built from.

// graphView is GET /api/graph: the mesh as workloads and the connections
// their sidecars observed.
type graphView struct {
	Generated time.Time `json:"generated"`
	// Window is the time between the two readings the rates come from; 0
	// until the second reading.
	WindowSeconds float64     `json:"windowSeconds"`
	Namespaces    []string    `json:"namespaces"`
	Nodes         []graphNode `json:"nodes"`
	Edges         []graphEdge `json:"edges"`
	// Errors are sidecars that could not be read, and why.
	Errors []string `json:"errors,omitempty"`
}

// Node kinds.
const (
	nodeWorkload = "workload" // a Deployment, StatefulSet, DaemonSet, Job… (or a bare pod)
	nodeIdentity = "identity" // a SPIFFE ID that several workloads share, or no known pod runs
	nodeAddress  = "address"  // a source address that is no known pod's (outside the mesh)
)

type graphNode struct {
	ID        string `json:"id"` // "<namespace>/<workload>", "spiffe://…" or "ip:<addr>"
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Identities are the SPIFFE IDs its pods run as.
	Identities []string `json:"identities,omitempty"`
	Pods       int      `json:"pods"`
	Meshed     int      `json:"meshed"` // pods with a sidecar
}

// Edge outcomes: what the receiving sidecar verified of the connections,
// the outcomes of its adminapi.PeerConnectionsMetric: mtls (Peers are
// the clients' SPIFFE IDs), plaintext (accepted without TLS on a
// PERMISSIVE port; Peers are source addresses), refused (no or bad
// certificate, denied by policy, not TLS on a STRICT port; Peers are
// source addresses), tls (TLS without a client certificate, a chain weft
// never configures; Peers are source addresses).
const (
	outcomeMTLS      = adminapi.PeerMTLS
	outcomePlaintext = adminapi.PeerPlaintext
	outcomeRefused   = adminapi.PeerRefused
)

// graphEdge is the connections one workload's sidecars accepted (or
// refused) from one source, by outcome. Connections is cumulative since
// the sidecars started; Rate is per second over the window.
type graphEdge struct {
	From        string   `json:"from"`
	To          string   `json:"to"`
	Outcome     string   `json:"outcome"`
	Connections float64  `json:"connections"`
	Rate        float64  `json:"connectionsPerSecond"`
	Peers       []string `json:"peers"`
	// HTTP is the requests the receiving sidecars served to this source
	// over the window (mTLS edges on HTTP ports only).
	HTTP *edgeHTTP `json:"http,omitempty"`
}

type edgeHTTP struct {
	RPS     float64  `json:"rps"`
	Success *float64 `json:"successRate,omitempty"` // nil: no requests in the window
	P99ms   *float64 `json:"latencyP99Ms,omitempty"`
}

// egressView is GET /api/egress: what left the mesh, by workload and
// destination, from the control plane's audit trail.
type egressView struct {
	Since time.Time   `json:"since"`
	Until time.Time   `json:"until"`
	Rows  []egressRow `json:"rows"`
	// Replicas: control-plane replicas answered / asked.
	Replicas string   `json:"replicas"`
	Errors   []string `json:"errors,omitempty"`
}

type egressRow struct {
	Workload    string `json:"workload"`     // the source SPIFFE ID
	WorkloadRef string `json:"workloadName"` // "<namespace>/<workload>" when one workload runs as it
	Destination string `json:"destination"`  // "host:port"
	// Decision is the strictest decision taken: "deny", then "audit"
	// (allowed, flagged by an Audit-mode policy), then "allow".
	Decision      string         `json:"decision"`
	Decisions     map[string]int `json:"decisions"`
	Connections   int64          `json:"connections"`
	BytesSent     int64          `json:"bytesSent"`
	BytesReceived int64          `json:"bytesReceived"`
	LastSeen      time.Time      `json:"lastSeen"`
	Policies      []string       `json:"policies,omitempty"`
}

// suggestView is GET /api/egress/suggest?namespace=&workload=: the
// EgressPolicy `weftctl egress suggest` would print.
type suggestView struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	YAML      string `json:"yaml"`
}

// healthView is GET /api/health.
type healthView struct {
	ControlPlanes []replicaReport `json:"controlPlanes"`
	Sidecars      []sidecarHealth `json:"sidecars"`
	Uninjected    []uninjectedPod `json:"uninjected"` // pods that slipped through injection
	Errors        []string        `json:"errors,omitempty"`
	Counts        map[string]int  `json:"counts"` // SYNCED, STALE, NACKED, DISCONNECTED
}

type sidecarHealth struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Workload  string `json:"workload"`
	SPIFFEID  string `json:"spiffeID,omitempty"`
	// State is the worst of its types' states: NACKED, STALE, SYNCED; or
	// DISCONNECTED when no control-plane replica holds its stream.
	State        string     `json:"state"`
	NACK         string     `json:"nack,omitempty"` // the last NACK's error
	CertNotAfter *time.Time `json:"certNotAfter,omitempty"`
	CertError    string     `json:"certError,omitempty"`
}

type uninjectedPod struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Workload  string `json:"workload"`
	Reason    string `json:"reason"`
}
