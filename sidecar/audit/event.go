package audit

import (
	"encoding/json"
	"net/netip"
	"time"
)

// Protocols an egress connection is recorded with.
const (
	ProtocolTLS  = "tls"  // TLS, decided by SNI (or IP and port without SNI)
	ProtocolHTTP = "http" // plaintext HTTP/1 or h2c, decided by Host
	ProtocolTCP  = "tcp"  // anything else, decided by IP and port
)

// Event is one egress connection, recorded when it ends.
type Event struct {
	// ID is unique per event and stable across resends: "<instance>-<seq>".
	// Set by the Recorder.
	ID   string    `json:"id"`
	Time time.Time `json:"time"` // when the connection was accepted
	// SourceID, Pod and Namespace are the sidecar's own identity; the
	// Recorder sets them.
	SourceID  string `json:"sourceSpiffeId"`
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	// DstHost is the destination's name when one is known: the SNI or the
	// HTTP Host without port. DstIP and DstPort are the original destination.
	DstHost  string     `json:"dstHost,omitempty"`
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
	// BytesSent went from the app to the destination, BytesReceived back.
	BytesSent     int64         `json:"bytesSent"`
	BytesReceived int64         `json:"bytesReceived"`
	Duration      time.Duration `json:"-"`
}

// LogName is the log_name of the ALS identifier and the "log" field of the
// JSON lines.
const LogName = "weft-egress"

type eventJSON struct {
	Log string `json:"log"`
	*eventAlias
	Duration string `json:"duration"`
}

type eventAlias Event

// MarshalJSON writes the event with "log": "weft-egress" and the duration
// in Go's notation ("1.5s").
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{Log: LogName, eventAlias: (*eventAlias)(&e), Duration: e.Duration.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j eventJSON
	j.eventAlias = (*eventAlias)(e)
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
