package audit

import (
	"cmp"
	"slices"
	"strings"
	"time"

	apiaudit "github.com/weftmesh/weft/api/audit"
)

func matchWorkload(w string, e apiaudit.Event) bool {
	if w == e.Pod || w == e.SourceID {
		return true
	}
	_, sa, ok := strings.Cut(e.SourceID, "/sa/")
	return ok && w == sa
}

func matchDestination(d string, e apiaudit.Event) bool {
	d = strings.TrimRight(strings.ToLower(d), ".")
	names := []string{e.DstHost, e.SNI, e.Host, e.Destination()}
	if e.DstIP.IsValid() {
		names = append(names, e.DstIP.Unmap().String())
	}
	for _, n := range names {
		n = strings.ToLower(n)
		if n == "" {
			continue
		}
		if n == d || strings.HasPrefix(d, "*.") && strings.HasSuffix(n, d[1:]) {
			return true
		}
	}
	return false
}

// DestinationSummary is what `weftctl egress audit` shows per destination.
type DestinationSummary struct {
	Destination   string         `json:"destination"` // apiaudit.Event.Destination(): "host:port"
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

// Summary groups the events matching q (Limit ignored) by destination,
// most connections first.
func (s *Store) Summary(q Query) ([]DestinationSummary, error) {
	byDest := map[string]*DestinationSummary{}
	err := s.scan(q, false, func(e apiaudit.Event) bool {
		d := byDest[e.Destination()]
		if d == nil {
			d = &DestinationSummary{Destination: e.Destination(), FirstSeen: e.Time, Decisions: map[string]int{}}
			byDest[d.Destination] = d
		}
		d.Connections++
		d.BytesSent += e.BytesSent
		d.BytesReceived += e.BytesReceived
		if e.Time.Before(d.FirstSeen) {
			d.FirstSeen = e.Time
		}
		if e.Time.After(d.LastSeen) {
			d.LastSeen = e.Time
		}
		d.Decisions[e.Decision]++
		d.Protocols = addUnique(d.Protocols, e.Protocol, 0)
		if e.DstIP.IsValid() {
			d.IPs = addUnique(d.IPs, e.DstIP.Unmap().String(), 16)
		}
		d.Policies = addUnique(d.Policies, e.Policy, 0)
		d.Workloads = addUnique(d.Workloads, e.SourceID, 0)
		d.Namespaces = addUnique(d.Namespaces, e.Namespace, 0)
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]DestinationSummary, 0, len(byDest))
	for _, d := range byDest {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b DestinationSummary) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(a.Destination, b.Destination))
	})
	return out, nil
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
