// Package audit holds weft's egress audit record: one [Event] per
// connection that left the mesh, and on a plaintext HTTP/1 chain one per
// request (each request is decided on its own Host). The sidecar writes it (a JSON line on its
// stdout, and Envoy's access-log service to the control plane); the control
// plane stores it and serves it at /audit/events; weftctl reads it there.
// One type, so that what a sidecar writes is what an operator reads. The
// paths and the JSON answers of the control plane's audit queries
// (queries.go) are here for the same reason.
//
// This package is a pure core: it imports the standard library only.
package audit

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// Protocols an egress connection is recorded with.
const (
	ProtocolTLS  = "tls"  // TLS, decided by SNI (or IP and port without SNI)
	ProtocolHTTP = "http" // plaintext HTTP/1 or h2c, decided by Host
	ProtocolTCP  = "tcp"  // anything else, decided by IP and port
)

// LogName names weft's egress records: the log_name of the access-log
// stream's identifier and the "log" field of the sidecar's JSON lines.
const LogName = "weft-egress"

// Event is one egress connection, recorded when it ends; on an HTTP chain,
// one request of it (Host its own; bytes its head and body, and its
// responses; a CONNECT or upgrade request keeps the tunnel's bytes),
// recorded when its response ends or it is refused.
//
// Its JSON has the fields' tags below plus "duration" in Go's notation
// ("1.5s").
type Event struct {
	// ID is unique per event and stable across resends: "<instance>-<seq>",
	// a random instance per sidecar start and a sequence number.
	ID   string    `json:"id"`
	Time time.Time `json:"time"` // when the connection was accepted, by the sidecar's clock
	// Received is when the control plane stored the event, by its own
	// clock: the store orders, queries and prunes by it, so no sidecar can
	// date an event out of the trail. The control plane clamps Time to at
	// most Received plus a minute of clock skew.
	Received time.Time `json:"received,omitzero"`
	// SourceID, Pod and Namespace are the recording sidecar's identity.
	SourceID  string `json:"sourceSpiffeId"`
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	// DstHost is the destination's name when one is known: the SNI or the
	// HTTP Host without port, or, through an ExternalName Service, the name
	// the Service points at (Service names the Service). DstIP and DstPort
	// are the original destination.
	DstHost string `json:"dstHost,omitempty"`
	// Service is the ExternalName Service ("<ns>/<name>") whose name the
	// app called (its SNI or Host is one of the Service's names): the
	// connection was decided as egress to DstHost.
	Service  string     `json:"service,omitempty"`
	DstIP    netip.Addr `json:"dstIp"`
	DstPort  uint16     `json:"dstPort"`
	SNI      string     `json:"sni,omitempty"`
	Host     string     `json:"host,omitempty"`
	Protocol string     `json:"protocol"` // ProtocolTLS, ProtocolHTTP or ProtocolTCP
	// Decision is "allow", "deny" or "audit"; Policy ("<ns>/<name>") and
	// Rule say which EgressPolicy rule decided, Outbound the mesh's outbound
	// policy when it decided instead.
	Decision string `json:"decision"`
	Policy   string `json:"policy,omitempty"`
	Rule     string `json:"rule,omitempty"`
	Outbound string `json:"outbound,omitempty"`
	Chain    string `json:"chain,omitempty"` // the outbound filter chain
	// Reason says why a connection a rule allowed was denied or flagged
	// anyway: "name_mismatch: <name> does not resolve to <ip> for this pod
	// (...)" when the SNI or Host that the rule allowed was sent to an
	// address the name did not resolve to (sidecar/dnsproxy); and
	// "name_unknown: <why> (...)" when the connection's name could not be
	// learned (no SNI, ECH, bytes neither TLS nor HTTP, a stalled client)
	// where a rule by name decides more strictly than its chain: then
	// Decision, Policy and Rule are that rule's (deny, or audit when only an
	// Audit-mode policy's rule does).
	Reason string `json:"reason,omitempty"`
	// BytesSent went from the app to the destination, BytesReceived back.
	BytesSent     int64         `json:"bytesSent"`
	BytesReceived int64         `json:"bytesReceived"`
	Duration      time.Duration `json:"-"`
}

// Destination names where an event went: "<host or IP>:<port>" (IPv6 in
// brackets). Summaries and metrics group by it.
func (e Event) Destination() string {
	host := e.DstHost
	switch {
	case host != "":
	case e.DstIP.Is6() && !e.DstIP.Is4In6():
		host = "[" + e.DstIP.String() + "]"
	case e.DstIP.IsValid():
		host = e.DstIP.Unmap().String()
	default:
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(int(e.DstPort))
}

type eventAlias Event

type eventJSON struct {
	*eventAlias
	Duration string `json:"duration"`
}

// MarshalJSON writes the duration in Go's notation ("1.5s").
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{eventAlias: (*eventAlias)(&e), Duration: e.Duration.String()})
}

// UnmarshalJSON reads what MarshalJSON writes (and ignores fields it does
// not know, such as the "log" of a sidecar's JSON line).
func (e *Event) UnmarshalJSON(b []byte) error {
	j := eventJSON{eventAlias: (*eventAlias)(e)}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if j.Duration != "" {
		d, err := time.ParseDuration(j.Duration)
		if err != nil {
			return err
		}
		e.Duration = d
	}
	return nil
}

// MarshalLine writes e as the sidecar's JSON line: "log": LogName first,
// then the event's fields, and a newline. Log collectors select weft's
// egress records by that field.
func MarshalLine(e Event) ([]byte, error) {
	b, err := e.MarshalJSON()
	if err != nil {
		return nil, err
	}
	line := make([]byte, 0, len(b)+len(LogName)+10)
	line = append(line, `{"log":`...)
	line = strconv.AppendQuote(line, LogName)
	line = append(line, ',')
	line = append(line, b[1:]...)
	return append(line, '\n'), nil
}
