package audit

import (
	"cmp"
	"slices"
	"time"
)

// DestinationSummary is the egress to one destination, summed over its
// events: what the control plane serves per destination at /audit/summary
// and `weftctl egress audit` shows, added up over the replicas.
type DestinationSummary struct {
	// Workload is the source SPIFFE ID when the summary is by workload and
	// destination (the audit API's by=workload); "" when by destination.
	Workload      string         `json:"workload,omitempty"`
	Destination   string         `json:"destination"` // Event.Destination(): "host:port"
	Protocols     []string       `json:"protocols"`
	IPs           []string       `json:"ips,omitempty"` // up to 16 distinct destination IPs
	Connections   int64          `json:"connections"`
	BytesSent     int64          `json:"bytesSent"`
	BytesReceived int64          `json:"bytesReceived"`
	FirstSeen     time.Time      `json:"firstSeen"`
	LastSeen      time.Time      `json:"lastSeen"`
	Decisions     map[string]int `json:"decisions"` // decision → connections
	Policies      []string       `json:"policies,omitempty"`
	Workloads     []string       `json:"workloads"` // source SPIFFE IDs
	Namespaces    []string       `json:"namespaces"`
}

// maxSummaryIPs is how many destination IPs a DestinationSummary lists.
const maxSummaryIPs = 16

// Summaries sums egress by destination, or by workload and destination: a
// control plane its events (Add, AddByWorkload), weftctl the replicas'
// summaries (Merge).
type Summaries map[string]*DestinationSummary

// Add counts e under its destination.
func (m Summaries) Add(e Event) { m.add("", e) }

// AddByWorkload counts e under its source workload (SPIFFE ID) and
// destination.
func (m Summaries) AddByWorkload(e Event) { m.add(e.SourceID, e) }

func (m Summaries) add(workload string, e Event) {
	d := m.count(workload, e.Destination(), 1, e.BytesSent, e.BytesReceived, e.Time, e.Time)
	d.Decisions[e.Decision]++
	d.Protocols = addUnique(d.Protocols, e.Protocol, 0)
	if e.DstIP.IsValid() {
		d.IPs = addUnique(d.IPs, e.DstIP.Unmap().String(), maxSummaryIPs)
	}
	d.Policies = addUnique(d.Policies, e.Policy, 0)
	d.Workloads = addUnique(d.Workloads, e.SourceID, 0)
	d.Namespaces = addUnique(d.Namespaces, e.Namespace, 0)
}

// Merge adds s, another count of its destination (another control plane
// replica's). An event a sidecar resent to a second replica after a
// failover is counted by both.
func (m Summaries) Merge(s DestinationSummary) {
	d := m.count(s.Workload, s.Destination, s.Connections, s.BytesSent, s.BytesReceived, s.FirstSeen, s.LastSeen)
	for k, n := range s.Decisions {
		d.Decisions[k] += n
	}
	d.Protocols = union(d.Protocols, s.Protocols, 0)
	d.IPs = union(d.IPs, s.IPs, maxSummaryIPs)
	d.Policies = union(d.Policies, s.Policies, 0)
	d.Workloads = union(d.Workloads, s.Workloads, 0)
	d.Namespaces = union(d.Namespaces, s.Namespaces, 0)
}

// count adds connections seen from first to last to the summary of
// workload ("" when by destination alone) and dest, which it returns.
func (m Summaries) count(workload, dest string, connections, sent, received int64, first, last time.Time) *DestinationSummary {
	key := workload + " " + dest // a SPIFFE ID has no space
	d := m[key]
	if d == nil {
		d = &DestinationSummary{Workload: workload, Destination: dest, FirstSeen: first, LastSeen: last, Decisions: map[string]int{}}
		m[key] = d
	}
	d.Connections += connections
	d.BytesSent += sent
	d.BytesReceived += received
	if first.Before(d.FirstSeen) {
		d.FirstSeen = first
	}
	if last.After(d.LastSeen) {
		d.LastSeen = last
	}
	return d
}

// Sorted returns the summaries, most connections first.
func (m Summaries) Sorted() []DestinationSummary {
	out := make([]DestinationSummary, 0, len(m))
	for _, d := range m {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b DestinationSummary) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Workload, b.Workload))
	})
	return out
}

// addUnique inserts v into the sorted set s (at most limit entries if
// limit > 0); "" is skipped.
func addUnique(s []string, v string, limit int) []string {
	if v == "" {
		return s
	}
	i, found := slices.BinarySearch(s, v)
	if found || limit > 0 && len(s) >= limit {
		return s
	}
	return slices.Insert(s, i, v)
}

// union returns the sorted union of a and b, at most limit entries if
// limit > 0.
func union(a, b []string, limit int) []string {
	out := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a), b...))))
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
