package audit

import "time"

// The control plane's audit queries, served on its admin port behind its
// guard (controlplane/audit) and read by weftctl (egress audit, egress
// suggest, check, dashboard): the paths and the JSON of their answers.
const (
	EventsPath  = "/audit/events"
	SummaryPath = "/audit/summary"
	StorePath   = "/audit/store"
	// MaxLimit is the largest limit= of EventsPath: the most events one
	// answer holds.
	MaxLimit = 10000
)

// EventsResponse is the JSON of GET EventsPath.
type EventsResponse struct {
	Events    []Event `json:"events"` // newest first
	Truncated bool    `json:"truncated"`
}

// SummaryResponse is the JSON of GET SummaryPath.
type SummaryResponse struct {
	Since        time.Time            `json:"since,omitzero"`
	Until        time.Time            `json:"until,omitzero"`
	Destinations []DestinationSummary `json:"destinations"`
	// Truncated: more rows matched than the control plane answers
	// (controlplane/audit.MaxSummaryRows); the busiest are here.
	Truncated bool `json:"truncated,omitempty"`
}

// StoreResponse is the JSON of GET StorePath: how full the store is, for
// weftctl check's warning well before the oldest events are evicted.
type StoreResponse struct {
	Events   int `json:"events"`
	Capacity int `json:"capacity"`
	// Retention is in seconds, as its JSON name says.
	Retention time.Duration `json:"retentionSeconds"`
	Path      string        `json:"path"`
}
