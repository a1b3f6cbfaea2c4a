package weftctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/api/names"
)

// controlPlaneApp selects the control plane's pods. Its audit API
// (api/audit: the paths and the JSON) is served on each replica's admin
// port; each replica stores what the sidecars that stream to it sent, so
// every command asks every ready replica and merges.
const controlPlaneApp = names.AppLabel + "=" + names.ControlPlane

// auditFetcher GETs an audit endpoint from every ready control-plane
// replica. The real one speaks TLS to each through a port-forward with the
// user's credentials (cpadmin.go); tests serve the control plane's own
// handler.
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
	ka := newKubeAdmin(c, names.Namespace)
	return &egressEnv{audit: &replicaAudit{kube: c.kube, namespace: names.Namespace, get: ka.cp.get}, kube: c.kube, now: time.Now,
		namespace: c.namespace}, nil
}

// replicaAudit asks every ready replica with get.
type replicaAudit struct {
	kube      kubernetes.Interface
	namespace string
	get       func(ctx context.Context, pod *corev1.Pod, path string, query url.Values) ([]byte, error)
}

var _ auditFetcher = (*replicaAudit)(nil)

func (a *replicaAudit) fetchAudit(ctx context.Context, path string, params map[string]string) ([]auditReply, error) {
	pods, err := a.kube.CoreV1().Pods(a.namespace).List(ctx, metav1.ListOptions{LabelSelector: controlPlaneApp})
	if err != nil {
		return nil, fmt.Errorf("weftctl egress: listing control-plane pods in %s: %w", a.namespace, err)
	}
	var ready []*corev1.Pod
	for i := range pods.Items {
		if podIsReady(&pods.Items[i]) {
			ready = append(ready, &pods.Items[i])
		}
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("weftctl egress: no ready control-plane pod (%s) in %s", controlPlaneApp, a.namespace)
	}
	slices.SortFunc(ready, func(x, y *corev1.Pod) int { return strings.Compare(x.Name, y.Name) })
	query := url.Values{}
	for k, v := range params {
		query.Set(k, v)
	}
	replies := make([]auditReply, len(ready))
	var wg sync.WaitGroup
	for i, p := range ready {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			b, err := a.get(ctx, p, path, query)
			if err != nil {
				err = fmt.Errorf("GET %s: %w", path, err)
			}
			replies[i] = auditReply{replica: p.Name, body: b, err: err}
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
