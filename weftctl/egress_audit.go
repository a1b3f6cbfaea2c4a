package weftctl

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/api/audit"
)

// weftctl egress audit: what left the mesh, summarised by destination or
// event by event, merged from every control-plane replica.

// egressAuditReport is `egress audit -o json|yaml`.
type egressAuditReport struct {
	Since        time.Time                  `json:"since"`
	Until        time.Time                  `json:"until"`
	Namespace    string                     `json:"namespace,omitempty"` // "": all
	Destinations []audit.DestinationSummary `json:"destinations"`
	replicaSet
}

// egressEventsReport is `egress audit --events -o json|yaml`.
type egressEventsReport struct {
	Since     time.Time     `json:"since"`
	Until     time.Time     `json:"until"`
	Namespace string        `json:"namespace,omitempty"`
	Events    []audit.Event `json:"events"` // newest first
	Truncated bool          `json:"truncated"`
	replicaSet
}

func newEgressAudit(g *globals) *cobra.Command {
	var f egressFilter
	var events bool
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show where workloads connected outside the mesh",
		Long: `audit shows the egress connections weft recorded, one row per destination:
connections, bytes sent and received, when first and last seen, the decisions
(allow, deny, audit: what an Audit-mode policy would deny) and the policies that
made them, and the workloads (namespace/service-account) that connected.
--events prints the connections themselves, newest first.

Every control-plane replica stores what its sidecars sent it; audit asks each
and merges the answers. -n filters by namespace (default: all namespaces).

The trail is served over TLS to callers RBAC allows: audit port-forwards to
each replica and presents your kubeconfig's client certificate or token; you
need the ClusterRole weft-audit-reader bound in weft-system
(kubectl create rolebinding NAME -n weft-system --clusterrole weft-audit-reader --user YOU).`,
		Example: `  weftctl egress audit --since 24h
  weftctl egress audit -n shop --decision deny
  weftctl egress audit --destination '*.example.com' --events -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if limit < 1 || limit > audit.MaxLimit {
				return fmt.Errorf("weftctl egress audit: --limit %d: want 1 to %d", limit, audit.MaxLimit)
			}
			e, err := g.egressEnv(cmd.Context())
			if err != nil {
				return err
			}
			if events {
				r, err := egressEvents(cmd.Context(), e, g.err, f, g.namespace, limit)
				if err != nil {
					return err
				}
				if ok, err := printStructured(g.out, g.output, r); ok {
					return err
				}
				printEgressEvents(g.out, r)
				return nil
			}
			r, err := egressAudit(cmd.Context(), e, g.err, f, g.namespace)
			if err != nil {
				return err
			}
			if ok, err := printStructured(g.out, g.output, r); ok {
				return err
			}
			printEgressAudit(g.out, r, e.now())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&f.since, "since", time.Hour, "how far back to look")
	fl.StringVar(&f.workload, "workload", "", "only this source: pod name, service account or SPIFFE ID")
	fl.StringVar(&f.destination, "destination", "", "only this destination: host, *.domain, IP or host:port")
	fl.StringVar(&f.decision, "decision", "", "only this decision: allow, deny or audit")
	fl.BoolVar(&events, "events", false, "print the recorded connections instead of the per-destination table")
	fl.IntVar(&limit, "limit", 1000, "with --events: at most this many, the newest")
	return cmd
}

func egressAudit(ctx context.Context, e *egressEnv, warn io.Writer, f egressFilter, namespace string) (*egressAuditReport, error) {
	now := e.now()
	r := &egressAuditReport{Since: now.Add(-f.since).UTC(), Until: now.UTC(), Namespace: namespace}
	sums, err := fetchAll[audit.SummaryResponse](ctx, e.audit, warn, &r.replicaSet, audit.SummaryPath, f.params(now, namespace))
	if err != nil {
		return nil, err
	}
	r.Destinations = mergeSummaries(sums)
	for _, s := range sums {
		if s.Truncated {
			fmt.Fprintln(warn, "weftctl egress audit: a control-plane replica matched more destinations than it sends; only the busiest are counted: narrow --since, -n or --workload")
			break
		}
	}
	return r, nil
}

// mergeSummaries adds up the replicas' summaries per destination, most
// connections first.
func mergeSummaries(sums []audit.SummaryResponse) []audit.DestinationSummary {
	m := audit.Summaries{}
	for _, s := range sums {
		for _, d := range s.Destinations {
			m.Merge(d)
		}
	}
	return m.Sorted()
}

func egressEvents(ctx context.Context, e *egressEnv, warn io.Writer, f egressFilter, namespace string, limit int) (*egressEventsReport, error) {
	now := e.now()
	r := &egressEventsReport{Since: now.Add(-f.since).UTC(), Until: now.UTC(), Namespace: namespace}
	params := f.params(now, namespace)
	params["limit"] = strconv.Itoa(limit)
	pages, err := fetchAll[audit.EventsResponse](ctx, e.audit, warn, &r.replicaSet, audit.EventsPath, params)
	if err != nil {
		return nil, err
	}
	r.Events, r.Truncated = mergeEvents(pages, limit)
	return r, nil
}

// mergeEvents merges the replicas' events newest first, once each (a
// sidecar that failed over may have sent one to two replicas), at most
// limit; truncated says there were more.
func mergeEvents(pages []audit.EventsResponse, limit int) (events []audit.Event, truncated bool) {
	seen := map[string]bool{}
	for _, p := range pages {
		truncated = truncated || p.Truncated
		for _, ev := range p.Events {
			if !seen[ev.ID] {
				seen[ev.ID] = true
				events = append(events, ev)
			}
		}
	}
	slices.SortFunc(events, func(a, b audit.Event) int { return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(a.ID, b.ID)) })
	if len(events) > limit {
		events, truncated = events[:limit], true
	}
	if events == nil {
		events = []audit.Event{}
	}
	return events, truncated
}

func printEgressAudit(w io.Writer, r *egressAuditReport, now time.Time) {
	fmt.Fprintf(w, "Egress %s, %s to %s (%s), from %s.\n", scopeOf(r.Namespace), egressStamp(r.Since), egressStamp(r.Until),
		span(r.Until.Sub(r.Since)), replicasOf(r.replicaSet))
	if len(r.Destinations) == 0 {
		fmt.Fprintln(w, "No egress connections recorded.")
		return
	}
	t := newTable(w, "DESTINATION", "PROTOCOL", "DECISION", "CONNECTIONS", "BYTES OUT/IN", "FIRST SEEN", "LAST SEEN", "WORKLOADS", "POLICY")
	for _, d := range r.Destinations {
		t.row(d.Destination, strings.Join(d.Protocols, ","), decisionsOf(d.Decisions), strconv.FormatInt(d.Connections, 10),
			bytesOf(d.BytesSent)+"/"+bytesOf(d.BytesReceived), human(now.Sub(d.FirstSeen))+" ago", human(now.Sub(d.LastSeen))+" ago",
			abbreviate(d.Workloads, 3), strings.Join(d.Policies, ","))
	}
	t.flush()
}

func printEgressEvents(w io.Writer, r *egressEventsReport) {
	fmt.Fprintf(w, "Egress connections %s, %s to %s, from %s, newest first.\n", scopeOf(r.Namespace), egressStamp(r.Since),
		egressStamp(r.Until), replicasOf(r.replicaSet))
	t := newTable(w, "TIME", "SOURCE", "DESTINATION", "PROTOCOL", "SNI/HOST", "DECISION", "POLICY", "BYTES OUT/IN", "DURATION")
	for _, e := range r.Events {
		policy := e.Policy
		if policy != "" && e.Rule != "" {
			policy += "#" + e.Rule
		}
		if policy == "" && e.Outbound != "" {
			policy = "outbound " + e.Outbound
		}
		name := cmp.Or(e.SNI, e.Host)
		if e.Service != "" {
			name += " (ExternalName " + e.Service + ")"
		}
		t.row(egressStamp(e.Time), e.Namespace+"/"+e.Pod, e.Destination(), e.Protocol, name, e.Decision, policy,
			bytesOf(e.BytesSent)+"/"+bytesOf(e.BytesReceived), e.Duration.String())
	}
	t.flush()
	if r.Truncated {
		fmt.Fprintf(w, "Only the newest %d are shown: narrow the filters or raise --limit.\n", len(r.Events))
	}
}

func scopeOf(namespace string) string {
	if namespace == "" {
		return "from all namespaces"
	}
	return "from namespace " + namespace
}

func replicasOf(rs replicaSet) string {
	s := fmt.Sprintf("%d control-plane replica", len(rs.Answered))
	if len(rs.Answered) != 1 {
		s += "s"
	}
	if len(rs.Unreachable) > 0 {
		s += fmt.Sprintf(" (%d did not answer)", len(rs.Unreachable))
	}
	return s
}

// decisionsOf is "allow" when all connections were allowed, else counts:
// "allow 3, audit 1".
func decisionsOf(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	if len(keys) == 1 {
		return keys[0]
	}
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// abbreviate shortens workload SPIFFE IDs to "<namespace>/<service
// account>" and lists at most n of them.
func abbreviate(ids []string, n int) string {
	var out []string
	for _, id := range ids {
		if ns, sa, ok := workloadOf(id); ok {
			id = ns + "/" + sa
		}
		out = append(out, id)
	}
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("+%d more", len(out)-n))
	}
	return strings.Join(out, ",")
}

// workloadOf splits spiffe://<td>/ns/<ns>/sa/<sa>.
func workloadOf(id string) (ns, sa string, ok bool) {
	_, path, found := strings.Cut(strings.TrimPrefix(id, "spiffe://"), "/")
	seg := strings.Split(path, "/")
	if !found || len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return "", "", false
	}
	return seg[1], seg[3], true
}

// bytesOf is n in binary units: 512B, 1.5KiB, 20.0MiB.
func bytesOf(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	f, unit := float64(n)/1024, 0
	for f >= 1024 && unit < 4 {
		f, unit = f/1024, unit+1
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + [...]string{"KiB", "MiB", "GiB", "TiB", "PiB"}[unit]
}
