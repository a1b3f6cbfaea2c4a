package audit

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// Event is one egress connection as a sidecar reported it. The JSON is the
// sidecar's JSON line (sidecar/audit.Event).
type Event struct {
	ID            string        `json:"id"`
	Time          time.Time     `json:"time"`
	SourceID      string        `json:"sourceSpiffeId"`
	Pod           string        `json:"pod"`
	Namespace     string        `json:"namespace"`
	DstHost       string        `json:"dstHost,omitempty"`
	DstIP         netip.Addr    `json:"dstIp"`
	DstPort       uint16        `json:"dstPort"`
	SNI           string        `json:"sni,omitempty"`
	Host          string        `json:"host,omitempty"`
	Protocol      string        `json:"protocol"`
	Decision      string        `json:"decision"`
	Policy        string        `json:"policy,omitempty"`
	Rule          string        `json:"rule,omitempty"`
	Outbound      string        `json:"outbound,omitempty"`
	Chain         string        `json:"chain,omitempty"`
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

// UnmarshalJSON reads what MarshalJSON writes.
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
