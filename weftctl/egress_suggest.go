package weftctl

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/api/audit"
	"github.com/weftmesh/weft/api/v1alpha1"
)

// weftctl egress suggest: an EgressPolicy drafted from the audited egress
// of one workload.

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
account. The policy is an allow-list (defaultAction Deny: what it does not
list is refused once enforced), in Audit mode unless --enforce: apply it, watch
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
	var pages []audit.EventsResponse
	for _, decision := range []string{"allow", "audit"} {
		f := o.egressFilter
		f.decision = decision
		params := f.params(now, ns)
		params["limit"] = strconv.Itoa(audit.MaxLimit)
		p, err := fetchAll[audit.EventsResponse](ctx, e.audit, warn, &s.replicas, audit.EventsPath, params)
		if err != nil {
			return nil, err
		}
		pages = append(pages, p...)
	}
	events, truncated := mergeEvents(pages, 2*audit.MaxLimit)
	s.truncated = truncated
	if truncated {
		fmt.Fprintf(warn, "weftctl egress suggest: more than %d connections of one decision in the range; only the newest are used: narrow --since or --workload\n", audit.MaxLimit)
	}
	f := o.egressFilter
	f.decision = "deny"
	if sums, err := fetchAll[audit.SummaryResponse](ctx, e.audit, warn, &s.replicas, audit.SummaryPath, f.params(now, ns)); err == nil {
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
		Spec:     v1alpha1.EgressPolicySpec{Selector: sel, ServiceAccounts: sas, Mode: mode, DefaultAction: v1alpha1.EgressDeny, Rules: rules},
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
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil || !v1alpha1.ValidEgressHost(name) ||
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
		p("More connections than one query returns: only the newest %d of each decision were used.", audit.MaxLimit)
	}
	p("")
	p("REVIEW BEFORE APPLYING. It allows exactly what was seen: traffic that did not happen in")
	p("this range (a monthly job, a failover endpoint) is missing, and the IPs of hosted services")
	p("change. Widen hosts to \"*.domain\" where that is meant, and drop what should not be allowed.")
	if s.policy.Spec.Mode == v1alpha1.EgressAudit {
		p("defaultAction Deny: what it does not list is flagged now, and refused under mode Enforce.")
		p("Mode Audit lets everything through and flags what the policy would deny: watch")
		p("`weftctl egress audit -n %s --decision audit`, then set mode: Enforce.", s.namespace)
	} else {
		p("defaultAction Deny: what it does not list is refused.")
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
