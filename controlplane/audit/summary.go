package audit

import (
	"strings"

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

// Summary groups the events matching q (Limit ignored) by destination, or
// by source workload and destination (q.ByWorkload), most connections
// first.
func (s *Store) Summary(q Query) ([]apiaudit.DestinationSummary, error) {
	sums := apiaudit.Summaries{}
	add := sums.Add
	if q.ByWorkload {
		add = sums.AddByWorkload
	}
	err := s.scan(q, false, func(e apiaudit.Event) bool {
		add(e)
		return true
	})
	if err != nil {
		return nil, err
	}
	return sums.Sorted(), nil
}
