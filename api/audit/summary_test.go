package audit

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// TestSummariesMerge: two replicas' summaries of one destination add up;
// the seen times widen, the sets join (IPs at most 16, the first in order).
func TestSummariesMerge(t *testing.T) {
	t0 := testutil.Fixed
	var ips []string
	for i := range 20 {
		ips = append(ips, fmt.Sprintf("198.51.100.%02d", i))
	}
	m := Summaries{}
	m.Merge(DestinationSummary{Destination: "api.example.com:443", Connections: 2, BytesSent: 10, BytesReceived: 100,
		FirstSeen: t0, LastSeen: t0.Add(time.Minute), Decisions: map[string]int{"allow": 2},
		Protocols: []string{"tls"}, IPs: ips[10:], Workloads: []string{"w1"}, Namespaces: []string{"shop"}})
	m.Merge(DestinationSummary{Destination: "other.example.com:443", Connections: 1, FirstSeen: t0, LastSeen: t0})
	m.Merge(DestinationSummary{Destination: "api.example.com:443", Connections: 3, BytesSent: 5, BytesReceived: 50,
		FirstSeen: t0.Add(-time.Minute), LastSeen: t0.Add(30 * time.Second), Decisions: map[string]int{"allow": 1, "audit": 2},
		Protocols: []string{"http"}, IPs: ips[:10], Policies: []string{"shop/egress"}, Workloads: []string{"w2", "w1"}, Namespaces: []string{"shop"}})

	got := m.Sorted()
	if len(got) != 2 || got[1].Destination != "other.example.com:443" {
		t.Fatalf("Sorted = %+v, want api.example.com:443 (5 connections) first", got)
	}
	a := got[0]
	if a.Connections != 5 || a.BytesSent != 15 || a.BytesReceived != 150 ||
		!a.FirstSeen.Equal(t0.Add(-time.Minute)) || !a.LastSeen.Equal(t0.Add(time.Minute)) ||
		a.Decisions["allow"] != 3 || a.Decisions["audit"] != 2 {
		t.Errorf("merged counts = %+v", a)
	}
	if !slices.Equal(a.IPs, ips[:16]) || !slices.Equal(a.Protocols, []string{"http", "tls"}) ||
		!slices.Equal(a.Workloads, []string{"w1", "w2"}) || !slices.Equal(a.Policies, []string{"shop/egress"}) {
		t.Errorf("merged sets = %+v", a)
	}
}
