package weftctl

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/v1alpha1"
)

// The control plane's audit API (controlplane/audit, http.go), served on
// its admin port. Each replica stores what the sidecars that stream to it
// sent, so every command asks every ready replica and merges.
const (
	auditEventsPath  = "/audit/events"
	auditSummaryPath = "/audit/summary"
	auditMaxLimit    = 10000
	auditPort        = "15014" // the control plane's admin port
	controlPlaneApp  = "app.kubernetes.io/name=weft-controlplane"
)

// auditFetcher GETs an audit endpoint from every ready control-plane
// replica. The real one goes through the API server's pod proxy; tests
// serve the control plane's own handler.
type auditFetcher interface {
	fetchAudit(ctx context.Context, path string, params map[string]string) ([]auditReply, error)
}

// auditReply is one replica's answer: a body or an error.
type auditReply struct {
	replica string
	body    []byte
	err     error
}

// egressEnv is what the egress commands work with; tests put a fake one in
// the command's context (withEgressEnv).
type egressEnv struct {
	audit     auditFetcher
	kube      kubernetes.Interface
	now       func() time.Time
	namespace string // the context's namespace, for suggest without -n
}

type egressEnvKey struct{}

// withEgressEnv makes the egress commands run under ctx use e instead of
// the cluster the kubeconfig names.
func withEgressEnv(ctx context.Context, e *egressEnv) context.Context {
	return context.WithValue(ctx, egressEnvKey{}, e)
}

func (g *globals) egressEnv(ctx context.Context) (*egressEnv, error) {
	if e, ok := ctx.Value(egressEnvKey{}).(*egressEnv); ok {
		return e, nil
	}
	c, err := g.clients()
	if err != nil {
		return nil, err
	}
	return &egressEnv{audit: &podProxyAudit{kube: c.kube, namespace: "weft-system"}, kube: c.kube, now: time.Now,
		namespace: c.namespace}, nil
}

// podProxyAudit reaches the replicas through the API server's pod proxy.
type podProxyAudit struct {
	kube      kubernetes.Interface
	namespace string
}

var _ auditFetcher = (*podProxyAudit)(nil)

func (a *podProxyAudit) fetchAudit(ctx context.Context, path string, params map[string]string) ([]auditReply, error) {
	pods, err := a.kube.CoreV1().Pods(a.namespace).List(ctx, metav1.ListOptions{LabelSelector: controlPlaneApp})
	if err != nil {
		return nil, fmt.Errorf("weftctl egress: listing control-plane pods in %s: %w", a.namespace, err)
	}
	var ready []string
	for _, p := range pods.Items {
		if podIsReady(&p) {
			ready = append(ready, p.Name)
		}
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("weftctl egress: no ready control-plane pod (%s) in %s", controlPlaneApp, a.namespace)
	}
	slices.Sort(ready)
	replies := make([]auditReply, len(ready))
	var wg sync.WaitGroup
	for i, name := range ready {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			b, err := a.kube.CoreV1().Pods(a.namespace).ProxyGet("http", name, auditPort, path, params).DoRaw(ctx)
			if err != nil {
				err = fmt.Errorf("GET %s: %w", path, err)
			}
			replies[i] = auditReply{replica: name, body: b, err: err}
		})
	}
	wg.Wait()
	return replies, nil
}

func podIsReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// replicaSet records which replicas answered.
type replicaSet struct {
	Answered    []string `json:"replicas"`
	Unreachable []string `json:"unreachable,omitempty"` // "<pod>: <error>"
}

// fetchAll GETs path from every replica and decodes each answer into a new
// T. Replicas that fail are warned about (their events are missing); it is
// an error only when none answers.
func fetchAll[T any](ctx context.Context, f auditFetcher, warn io.Writer, rs *replicaSet, path string, params map[string]string) ([]T, error) {
	replies, err := f.fetchAudit(ctx, path, params)
	if err != nil {
		return nil, err
	}
	var out []T
	var errs []error
	for _, r := range replies {
		var v T
		if r.err == nil {
			if err := json.Unmarshal(r.body, &v); err != nil {
				r.err = fmt.Errorf("decoding %s: %w", path, err)
			}
		}
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.replica, r.err))
			if !slices.ContainsFunc(rs.Unreachable, func(s string) bool { return strings.HasPrefix(s, r.replica+": ") }) {
				rs.Unreachable = append(rs.Unreachable, r.replica+": "+r.err.Error())
				fmt.Fprintf(warn, "weftctl egress: control-plane replica %s did not answer, the events it stores are missing: %v\n", r.replica, r.err)
			}
			continue
		}
		if !slices.Contains(rs.Answered, r.replica) {
			rs.Answered = append(rs.Answered, r.replica)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("weftctl egress: no control-plane replica answered: %w", errors.Join(errs...))
	}
	return out, nil
}

// The audit API's JSON (controlplane/audit: EventsResponse, SummaryResponse,
// DestinationSummary), restated: weftctl does not import the control plane.
// The events themselves are api/audit's, the one type sidecars write.
type (
	auditEvents struct {
		Events    []audit.Event `json:"events"`
		Truncated bool          `json:"truncated"`
	}
	auditSummary struct {
		Destinations []destinationSummary `json:"destinations"`
	}
	destinationSummary struct {
		Destination   string         `json:"destination"`
		Protocols     []string       `json:"protocols"`
		IPs           []string       `json:"ips,omitempty"`
		Connections   int64          `json:"connections"`
		BytesSent     int64          `json:"bytesSent"`
		BytesReceived int64          `json:"bytesReceived"`
		FirstSeen     time.Time      `json:"firstSeen"`
		LastSeen      time.Time      `json:"lastSeen"`
		Decisions     map[string]int `json:"decisions"`
		Policies      []string       `json:"policies,omitempty"`
		Workloads     []string       `json:"workloads"`
		Namespaces    []string       `json:"namespaces"`
	}
)

func newEgress(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "egress",
		Short: "Show the egress weft recorded and turn it into EgressPolicies",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newEgressAudit(g), newEgressSuggest(g))
	return cmd
}

// egressFilter is the audit query both commands send.
type egressFilter struct {
	since                           time.Duration
	workload, destination, decision string
}

func (f egressFilter) params(now time.Time, namespace string) map[string]string {
	p := map[string]string{
		"since": now.Add(-f.since).UTC().Format(time.RFC3339Nano),
		"until": now.UTC().Format(time.RFC3339Nano),
	}
	for k, v := range map[string]string{"namespace": namespace, "workload": f.workload, "destination": f.destination, "decision": f.decision} {
		if v != "" {
			p[k] = v
		}
	}
	return p
}

func (f egressFilter) check() error {
	switch {
	case f.since <= 0:
		return fmt.Errorf("weftctl egress: --since %s: want a positive duration such as 1h", f.since)
	case f.decision != "" && !slices.Contains([]string{"allow", "deny", "audit"}, f.decision):
		return fmt.Errorf("weftctl egress: --decision %q: want allow, deny or audit", f.decision)
	}
	return nil
}

// ---- weftctl egress audit

// egressAuditReport is `egress audit -o json|yaml`.
type egressAuditReport struct {
	Since        time.Time            `json:"since"`
	Until        time.Time            `json:"until"`
	Namespace    string               `json:"namespace,omitempty"` // "": all
	Destinations []destinationSummary `json:"destinations"`
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
and merges the answers. -n filters by namespace (default: all namespaces).`,
		Example: `  weftctl egress audit --since 24h
  weftctl egress audit -n shop --decision deny
  weftctl egress audit --destination '*.example.com' --events -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if limit < 1 || limit > auditMaxLimit {
				return fmt.Errorf("weftctl egress audit: --limit %d: want 1 to %d", limit, auditMaxLimit)
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
	sums, err := fetchAll[auditSummary](ctx, e.audit, warn, &r.replicaSet, auditSummaryPath, f.params(now, namespace))
	if err != nil {
		return nil, err
	}
	r.Destinations = mergeSummaries(sums)
	return r, nil
}

// mergeSummaries adds up the replicas' summaries per destination, most
// connections first. (An event a sidecar resent to a second replica after
// a failover is counted by both.)
func mergeSummaries(sums []auditSummary) []destinationSummary {
	by := map[string]*destinationSummary{}
	for _, s := range sums {
		for _, d := range s.Destinations {
			m := by[d.Destination]
			if m == nil {
				m = &destinationSummary{Destination: d.Destination, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen, Decisions: map[string]int{}}
				by[d.Destination] = m
			}
			m.Connections += d.Connections
			m.BytesSent += d.BytesSent
			m.BytesReceived += d.BytesReceived
			if d.FirstSeen.Before(m.FirstSeen) {
				m.FirstSeen = d.FirstSeen
			}
			if d.LastSeen.After(m.LastSeen) {
				m.LastSeen = d.LastSeen
			}
			for k, n := range d.Decisions {
				m.Decisions[k] += n
			}
			m.Protocols = union(m.Protocols, d.Protocols, 0)
			m.IPs = union(m.IPs, d.IPs, 16)
			m.Policies = union(m.Policies, d.Policies, 0)
			m.Workloads = union(m.Workloads, d.Workloads, 0)
			m.Namespaces = union(m.Namespaces, d.Namespaces, 0)
		}
	}
	out := make([]destinationSummary, 0, len(by))
	for _, d := range by {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b destinationSummary) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(a.Destination, b.Destination))
	})
	return out
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

func egressEvents(ctx context.Context, e *egressEnv, warn io.Writer, f egressFilter, namespace string, limit int) (*egressEventsReport, error) {
	now := e.now()
	r := &egressEventsReport{Since: now.Add(-f.since).UTC(), Until: now.UTC(), Namespace: namespace}
	params := f.params(now, namespace)
	params["limit"] = strconv.Itoa(limit)
	pages, err := fetchAll[auditEvents](ctx, e.audit, warn, &r.replicaSet, auditEventsPath, params)
	if err != nil {
		return nil, err
	}
	r.Events, r.Truncated = mergeEvents(pages, limit)
	return r, nil
}

// mergeEvents merges the replicas' events newest first, once each (a
// sidecar that failed over may have sent one to two replicas), at most
// limit; truncated says there were more.
func mergeEvents(pages []auditEvents, limit int) (events []audit.Event, truncated bool) {
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
		t.row(egressStamp(e.Time), e.Namespace+"/"+e.Pod, e.Destination(), e.Protocol, cmp.Or(e.SNI, e.Host), e.Decision, policy,
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

// ---- weftctl egress suggest

type suggestOptions struct {
	egressFilter
	enforce bool
	name    string
}

func newEgressSuggest(g *globals) *cobra.Command {
	var o suggestOptions
	cmd := &cobra.Command{
		Use:   "suggest",
		Short: "Turn the egress weft recorded into an EgressPolicy allow-list",
		Long: `suggest writes an EgressPolicy (YAML) that allows the egress weft recorded
from a namespace (-n, default: the context's), or from one workload of it:
what was allowed or audited, never what was denied. Hosts seen as TLS SNI are
allowed on their TLS ports, HTTP Host names on their HTTP ports, connections
without a name by destination IP (/32 or /128) and port as TCP.

With --workload naming a pod, the policy selects the pods that share its app
label (all its labels when it has none); naming a service account, that
account. The policy is in Audit mode unless --enforce: apply it, watch
` + "`weftctl egress audit --decision audit`" + ` for what it would deny, then enforce it.
Review it first: it allows exactly what was seen in the time range.`,
		Example: `  weftctl egress suggest -n shop --since 7d > shop-egress.yaml
  weftctl egress suggest -n shop --workload web-7d9f8-x2x1q --enforce`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			e, err := g.egressEnv(cmd.Context())
			if err != nil {
				return err
			}
			ns := cmp.Or(g.namespace, e.namespace, "default")
			s, err := suggest(cmd.Context(), e, g.err, o, ns)
			if err != nil {
				return err
			}
			switch g.output {
			case "", "table", "yaml":
				b, err := yaml.Marshal(s.policy)
				if err != nil {
					return fmt.Errorf("weftctl egress suggest: yaml: %w", err)
				}
				_, err = fmt.Fprintf(g.out, "%s%s", s.header(), b)
				return err
			}
			_, err = printStructured(g.out, g.output, s.policy)
			return err
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&o.since, "since", 24*time.Hour, "how far back to look")
	fl.StringVar(&o.workload, "workload", "", "only this source: pod name, service account or SPIFFE ID; selects its pods")
	fl.BoolVar(&o.enforce, "enforce", false, "mode Enforce instead of Audit")
	fl.StringVar(&o.name, "name", "", "the policy's name (default: <app>-egress, or egress-allowlist)")
	return cmd
}

// suggestedPolicy is the EgressPolicy as written: only the fields a user
// applies (no status, no server-set metadata).
type suggestedPolicy struct {
	APIVersion string                    `json:"apiVersion"`
	Kind       string                    `json:"kind"`
	Metadata   suggestedMeta             `json:"metadata"`
	Spec       v1alpha1.EgressPolicySpec `json:"spec"`
}

type suggestedMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// suggestion is a suggested policy and what it was made from.
type suggestion struct {
	policy         suggestedPolicy
	since, until   time.Time
	namespace      string
	workload       string
	selectedBy     string
	events         int            // allowed and audited connections used
	decisions      map[string]int // of those
	denied         int64          // left out
	truncated      bool
	replicas       replicaSet
	seen           []seenDestination
	skipped        int // events without a destination address
	namedByAddress int // events with a name unfit for hosts, allowed by IP
}

// seenDestination is one host or address of the policy and its traffic.
type seenDestination struct {
	name      string // host or CIDR
	ports     []v1alpha1.EgressPort
	conns     int
	decisions map[string]int
	policies  []string
	last      time.Time
}

func (o suggestOptions) check() error {
	if o.name != "" && !dnsSubdomain.MatchString(o.name) {
		return fmt.Errorf("weftctl egress suggest: --name %q is not a lowercase DNS subdomain name", o.name)
	}
	return o.egressFilter.check()
}

func suggest(ctx context.Context, e *egressEnv, warn io.Writer, o suggestOptions, ns string) (*suggestion, error) {
	now := e.now()
	s := &suggestion{since: now.Add(-o.since).UTC(), until: now.UTC(), namespace: ns, workload: o.workload, decisions: map[string]int{}}
	var pages []auditEvents
	for _, decision := range []string{"allow", "audit"} {
		f := o.egressFilter
		f.decision = decision
		params := f.params(now, ns)
		params["limit"] = strconv.Itoa(auditMaxLimit)
		p, err := fetchAll[auditEvents](ctx, e.audit, warn, &s.replicas, auditEventsPath, params)
		if err != nil {
			return nil, err
		}
		pages = append(pages, p...)
	}
	events, truncated := mergeEvents(pages, 2*auditMaxLimit)
	s.truncated = truncated
	if truncated {
		fmt.Fprintf(warn, "weftctl egress suggest: more than %d connections of one decision in the range; only the newest are used: narrow --since or --workload\n", auditMaxLimit)
	}
	f := o.egressFilter
	f.decision = "deny"
	if sums, err := fetchAll[auditSummary](ctx, e.audit, warn, &s.replicas, auditSummaryPath, f.params(now, ns)); err == nil {
		for _, d := range mergeSummaries(sums) {
			s.denied += d.Connections
		}
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("weftctl egress suggest: no allowed or audited egress recorded %s since %s; nothing to suggest",
			scopeOf(ns)+workloadPhrase(o.workload), egressStamp(s.since))
	}
	rules, err := s.rules(events)
	if err != nil {
		return nil, err
	}
	sel, sas, name, err := selectWorkload(ctx, e.kube, ns, o.workload, events)
	if err != nil {
		return nil, err
	}
	s.selectedBy = describeSelection(sel, sas)
	mode := v1alpha1.EgressAudit
	if o.enforce {
		mode = v1alpha1.EgressEnforce
	}
	s.policy = suggestedPolicy{
		APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.EgressPolicyKind,
		Metadata: suggestedMeta{Name: cmp.Or(o.name, name), Namespace: ns},
		Spec:     v1alpha1.EgressPolicySpec{Selector: sel, ServiceAccounts: sas, Mode: mode, Rules: rules},
	}
	return s, nil
}

func workloadPhrase(w string) string {
	if w == "" {
		return ""
	}
	return " by workload " + w
}

// The schema's limits and patterns (api/v1alpha1/egresspolicy_types.go).
const (
	maxEgressRules = 128
	maxRuleEntries = 64 // hosts or cidrs of one rule
	maxRulePorts   = 32
)

var (
	egressHostRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
)

// rules groups what the events reached: hosts by their ports and
// protocols (TLS for SNI, HTTP for Host), addresses without a usable name
// as /32 or /128 CIDRs on TCP ports. Destinations with the same ports
// share a rule.
func (s *suggestion) rules(events []audit.Event) ([]v1alpha1.EgressRule, error) {
	hosts, cidrs := map[string]*seenDestination{}, map[string]*seenDestination{}
	for _, ev := range events {
		name, proto := eventHost(ev)
		into := hosts
		if name == "" {
			ip := ev.DstIP
			if !ip.IsValid() {
				s.skipped++
				continue
			}
			if ev.SNI != "" || ev.Host != "" {
				s.namedByAddress++
			}
			ip = ip.Unmap()
			name, proto, into = netip.PrefixFrom(ip, ip.BitLen()).String(), v1alpha1.EgressTCP, cidrs
		}
		d := into[name]
		if d == nil {
			d = &seenDestination{name: name, decisions: map[string]int{}}
			into[name] = d
		}
		port := v1alpha1.EgressPort{Number: int32(ev.DstPort), Protocol: proto}
		if ev.DstPort != 0 && !slices.Contains(d.ports, port) {
			d.ports = append(d.ports, port)
		}
		d.conns++
		d.decisions[ev.Decision]++
		if ev.Policy != "" && !slices.Contains(d.policies, ev.Policy) {
			d.policies = append(d.policies, ev.Policy)
		}
		if ev.Time.After(d.last) {
			d.last = ev.Time
		}
		s.events++
		s.decisions[ev.Decision]++
	}
	var rules []v1alpha1.EgressRule
	for _, kind := range []struct {
		seen    map[string]*seenDestination
		byHosts bool
	}{{hosts, true}, {cidrs, false}} {
		group := kind.seen
		byPorts := map[string][]*seenDestination{}
		for _, name := range slices.Sorted(maps.Keys(group)) {
			d := group[name]
			slices.SortFunc(d.ports, func(a, b v1alpha1.EgressPort) int {
				return cmp.Or(cmp.Compare(a.Number, b.Number), cmp.Compare(a.Protocol, b.Protocol))
			})
			slices.Sort(d.policies)
			if len(d.ports) > maxRulePorts {
				return nil, fmt.Errorf("weftctl egress suggest: %s was reached on %d ports, more than a rule can name (%d); write a rule without ports for it",
					name, len(d.ports), maxRulePorts)
			}
			key := fmt.Sprint(d.ports)
			byPorts[key] = append(byPorts[key], d)
			s.seen = append(s.seen, *d)
		}
		for _, key := range slices.SortedFunc(maps.Keys(byPorts), func(a, b string) int {
			return cmp.Compare(byPorts[a][0].name, byPorts[b][0].name)
		}) {
			ds := byPorts[key]
			for chunk := range slices.Chunk(ds, maxRuleEntries) {
				r := v1alpha1.EgressRule{Ports: chunk[0].ports, Action: v1alpha1.EgressAllow}
				for _, d := range chunk {
					if kind.byHosts {
						r.Hosts = append(r.Hosts, d.name)
					} else {
						r.CIDRs = append(r.CIDRs, d.name)
					}
				}
				rules = append(rules, r)
			}
		}
	}
	if len(rules) > maxEgressRules {
		return nil, fmt.Errorf("weftctl egress suggest: %d rules, more than an EgressPolicy holds (%d); narrow --workload or --since",
			len(rules), maxEgressRules)
	}
	return rules, nil
}

// eventHost is the name the sidecar decided ev by and how: the SNI for
// TLS, the Host (without port) for HTTP; "" when there is none fit for an
// EgressPolicy's hosts (absent, an IP literal, not a DNS name).
func eventHost(ev audit.Event) (string, v1alpha1.EgressProtocol) {
	name, proto := ev.SNI, v1alpha1.EgressTLS
	if name == "" && ev.Protocol == "http" {
		name, proto = ev.Host, v1alpha1.EgressHTTP
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil || len(name) > 253 || !egressHostRE.MatchString(name) ||
		strings.HasPrefix(name, "*.") {
		return "", ""
	}
	return name, proto
}

// Labels that name one pod (or one revision), never a workload.
var perPodLabels = []string{"pod-template-hash", "controller-revision-hash", "pod-template-generation",
	"statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index", "batch.kubernetes.io/controller-uid",
	"controller-uid", "batch.kubernetes.io/job-completion-index"}

// selectWorkload says which pods the policy selects: none given, the whole
// namespace; a pod, those sharing its app label (all its workload labels
// without one, its service account without labels); a service account or
// SPIFFE ID, that account. It also returns the policy's default name.
func selectWorkload(ctx context.Context, kube kubernetes.Interface, ns, workload string, events []audit.Event) (*metav1.LabelSelector, []string, string, error) {
	if workload == "" {
		return nil, nil, "egress-allowlist", nil
	}
	if wns, sa, ok := workloadOf(workload); ok {
		if wns != ns {
			return nil, nil, "", fmt.Errorf("weftctl egress suggest: --workload %s is not in namespace %s", workload, ns)
		}
		return nil, []string{sa}, dnsName(sa) + "-egress", nil
	}
	pod, err := kube.CoreV1().Pods(ns).Get(ctx, workload, metav1.GetOptions{})
	switch {
	case err == nil:
		if app := pod.Labels["app"]; app != "" {
			return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, nil, dnsName(app) + "-egress", nil
		}
		labels := maps.Clone(pod.Labels)
		for _, k := range perPodLabels {
			delete(labels, k)
		}
		if len(labels) > 0 {
			return &metav1.LabelSelector{MatchLabels: labels}, nil, dnsName(workload) + "-egress", nil
		}
		sa := cmp.Or(pod.Spec.ServiceAccountName, "default")
		return nil, []string{sa}, dnsName(sa) + "-egress", nil
	case !apierrors.IsNotFound(err):
		return nil, nil, "", fmt.Errorf("weftctl egress suggest: pod %s/%s: %w", ns, workload, err)
	}
	// Not a pod (any more): a service account whose events were found?
	if slices.ContainsFunc(events, func(ev audit.Event) bool { _, sa, _ := workloadOf(ev.SourceID); return sa == workload }) {
		return nil, []string{workload}, dnsName(workload) + "-egress", nil
	}
	return nil, nil, "", fmt.Errorf("weftctl egress suggest: pod %s/%s not found, and %q is not the service account of any recorded connection: "+
		"name a running pod, a service account or a SPIFFE ID", ns, workload, workload)
}

func describeSelection(sel *metav1.LabelSelector, sas []string) string {
	switch {
	case sel != nil:
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(sel.MatchLabels)) {
			parts = append(parts, k+"="+sel.MatchLabels[k])
		}
		return "the pods labelled " + strings.Join(parts, ",")
	case len(sas) > 0:
		return "the pods running as service account " + strings.Join(sas, ", ")
	}
	return "every pod of the namespace"
}

// dnsName makes s a DNS label-ish name: lowercase, [a-z0-9-], at most 50.
func dnsName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	return cmp.Or(strings.Trim(string(b[:min(len(b), 50)]), "-"), "workload")
}

// header is the comment above the YAML: where the policy comes from, what
// it allows and why it needs review.
func (s *suggestion) header() string {
	var b bytes.Buffer
	p := func(format string, args ...any) {
		fmt.Fprintln(&b, strings.TrimRight("# "+fmt.Sprintf(format, args...), " "))
	}
	p("EgressPolicy suggested by `weftctl egress suggest` from the egress weft recorded")
	p("%s%s, %s to %s (%s), on %s.", scopeOf(s.namespace), workloadPhrase(s.workload), egressStamp(s.since), egressStamp(s.until),
		span(s.until.Sub(s.since)), replicasOf(s.replicas))
	p("Made from %s (%s) to %s; it selects %s.", plural(int64(s.events), "connection"), decisionsOf(s.decisions),
		plural(int64(len(s.seen)), "destination"), s.selectedBy)
	if s.denied > 0 {
		p("Left out: %s denied (weftctl egress audit -n %s --decision deny).", plural(s.denied, "connection"), s.namespace)
	}
	if s.namedByAddress > 0 {
		p("%s named the destination by something no host rule can match (an IP, a wildcard): allowed by IP.",
			plural(int64(s.namedByAddress), "connection"))
	}
	if s.skipped > 0 {
		p("%s without a destination address are not in it.", plural(int64(s.skipped), "connection"))
	}
	if s.truncated {
		p("More connections than one query returns: only the newest %d of each decision were used.", auditMaxLimit)
	}
	p("")
	p("REVIEW BEFORE APPLYING. It allows exactly what was seen: traffic that did not happen in")
	p("this range (a monthly job, a failover endpoint) is missing, and the IPs of hosted services")
	p("change. Widen hosts to \"*.domain\" where that is meant, and drop what should not be allowed.")
	if s.policy.Spec.Mode == v1alpha1.EgressAudit {
		p("Mode Audit lets everything through and flags what the policy would deny: watch")
		p("`weftctl egress audit -n %s --decision audit`, then set mode: Enforce.", s.namespace)
	}
	p("")
	p("Seen:")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, d := range s.seen {
		var ports []string
		for _, pt := range d.ports {
			ports = append(ports, fmt.Sprintf("%d/%s", pt.Number, pt.Protocol))
		}
		line := fmt.Sprintf("#   %s\t%s\t%s\tlast %s\t%s", d.name, strings.Join(ports, ","), plural(int64(d.conns), "connection"),
			egressStamp(d.last), decisionsOf(d.decisions))
		if len(d.policies) > 0 {
			line += " (" + strings.Join(d.policies, ", ") + ")"
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()
	return b.String()
}

// egressStamp is t in UTC, to the second.
func egressStamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// span is a --since duration as people write it: 1h, 24h, 1h30m.
func span(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// plural is "1 connection", "2 connections".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.FormatInt(n, 10) + " " + noun + "s"
}
