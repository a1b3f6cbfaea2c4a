package weftctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	adminapi "github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/injector"
)

// cpStatus is one control plane replica's /debug/status, or why it did
// not answer.
type cpStatus struct {
	adminapi.Status

	replica string // the pod that answered
	err     error  // why it did not
}

// controlPlanes asks every running control plane replica for its status:
// each one knows only the sidecars whose streams it holds.
func controlPlanes(ctx context.Context, e *env) ([]cpStatus, error) {
	pods, err := e.kube.CoreV1().Pods(e.weftNS).List(ctx, metav1.ListOptions{LabelSelector: names.Selector(names.ControlPlane)})
	if err != nil {
		return nil, fmt.Errorf("weftctl: list control plane pods: %w", err)
	}
	var out []cpStatus
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		st := cpStatus{replica: p.Name}
		b, err := e.admin.controlPlaneGet(ctx, p, adminapi.StatusPath, nil)
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		st.replica, st.err = p.Name, err
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b cpStatus) int { return strings.Compare(a.replica, b.replica) })
	return out, nil
}

// statusReport is `weftctl status -o json|yaml`.
type statusReport struct {
	ControlPlanes []replicaReport `json:"controlPlanes"`
	Sidecars      []sidecarReport `json:"sidecars"`
	// Disconnected are injected pods no replica holds a stream of.
	Disconnected []string `json:"disconnected,omitempty"`
	NACKed       int      `json:"nacked"`
}

type replicaReport struct {
	Pod      string `json:"pod"`
	Version  string `json:"version,omitempty"`
	Sidecars int    `json:"sidecars"`
	Error    string `json:"error,omitempty"`
}

type sidecarReport struct {
	Namespace    string       `json:"namespace"`
	Pod          string       `json:"pod"`
	SPIFFEID     string       `json:"spiffeID"`
	ControlPlane string       `json:"controlPlane"`
	Types        []typeReport `json:"types"`
	CertNotAfter *time.Time   `json:"certNotAfter,omitempty"`
	CertError    string       `json:"certError,omitempty"`
	GenError     string       `json:"generateError,omitempty"`
}

type typeReport struct {
	Type    string `json:"type"`
	State   string `json:"state"`
	Version string `json:"version,omitempty"`
	Acked   string `json:"acked,omitempty"`
	NACKs   int    `json:"nacks"`
	Error   string `json:"error,omitempty"`
	// Withheld: the newest configuration of this type is not sent, over
	// the xDS message limit (the sidecar's generateError says so too).
	Withheld *adminapi.Withheld `json:"withheld,omitempty"`
}

func newStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Each sidecar's xDS state per type (SYNCED, STALE, NACKED) and certificate expiry",
		Long: `Asks every control plane replica which sidecars it serves and, per xDS type,
whether each runs the version it should (SYNCED), an older one (STALE), or
rejected the newest (NACKED, with the sidecar's error). Each sidecar's
certificate expiry comes from its own /metrics (port 15020).

Without -n every namespace is shown. Exits non-zero if any sidecar NACKed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env(cmd.Context())
			if err != nil {
				return err
			}
			r, err := buildStatus(cmd.Context(), e)
			if err != nil {
				return err
			}
			if ok, err := printStructured(g.out, g.output, r); ok || err != nil {
				if err == nil && r.NACKed > 0 {
					err = errFailed{fmt.Sprintf("status: %d sidecar(s) NACKed their configuration", r.NACKed)}
				}
				return err
			}
			printStatus(g, e, r)
			if r.NACKed > 0 {
				return errFailed{fmt.Sprintf("status: %d sidecar(s) NACKed their configuration", r.NACKed)}
			}
			return nil
		},
	}
}

func buildStatus(ctx context.Context, e *env) (*statusReport, error) {
	cps, err := controlPlanes(ctx, e)
	if err != nil {
		return nil, err
	}
	if len(cps) == 0 {
		return nil, fmt.Errorf("weftctl status: no running control plane pod in %s (is weft installed? weftctl check)", e.weftNS)
	}
	r := &statusReport{}
	seen := map[string]bool{}
	for _, cp := range cps {
		rr := replicaReport{Pod: cp.replica, Version: cp.Version, Sidecars: len(cp.Sidecars)}
		if cp.err != nil {
			rr.Error = cp.err.Error()
		}
		r.ControlPlanes = append(r.ControlPlanes, rr)
		for _, n := range cp.Sidecars {
			if e.explicitNS && n.Namespace != e.namespace {
				continue
			}
			seen[n.Namespace+"/"+n.Pod] = true
			sr := sidecarReport{Namespace: n.Namespace, Pod: n.Pod, SPIFFEID: n.SPIFFEID, ControlPlane: cp.replica, GenError: n.GenerateError}
			nacked := false
			for _, t := range n.Types {
				tr := typeReport{Type: t.Type, State: string(t.State), Version: t.Version, Acked: t.Acked, NACKs: t.NACKs, Withheld: t.Withheld}
				if t.LastNACK != nil {
					tr.Error = t.LastNACK.Message
				}
				nacked = nacked || t.State == adminapi.StateNacked
				sr.Types = append(sr.Types, tr)
			}
			if nacked {
				r.NACKed++
			}
			sr.CertNotAfter, sr.CertError = sidecarCertExpiry(ctx, e, n.Namespace, n.Pod)
			r.Sidecars = append(r.Sidecars, sr)
		}
	}
	slices.SortFunc(r.Sidecars, func(a, b sidecarReport) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Pod+a.ControlPlane, b.Pod+b.ControlPlane)
	})
	// Injected pods that no replica serves.
	ns := ""
	if e.explicitNS {
		ns = e.namespace
	}
	pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("weftctl status: list pods: %w", err)
	}
	for _, p := range pods.Items {
		if hasSidecar(&p) && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && !seen[p.Namespace+"/"+p.Name] {
			r.Disconnected = append(r.Disconnected, p.Namespace+"/"+p.Name)
		}
	}
	slices.Sort(r.Disconnected)
	return r, nil
}

// sidecarCertExpiry reads the SVID expiry from the sidecar's /metrics.
func sidecarCertExpiry(ctx context.Context, e *env, ns, name string) (*time.Time, string) {
	pod, err := e.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err.Error()
	}
	b, err := e.admin.podGet(ctx, pod, sidecarHealthPort, "/metrics")
	if err != nil {
		return nil, err.Error()
	}
	v, ok := metricValue(b, adminapi.SVIDExpiryMetric, nil)
	if !ok {
		return nil, "no " + adminapi.SVIDExpiryMetric + " in /metrics"
	}
	sec, frac := math.Modf(v)
	t := time.Unix(int64(sec), int64(frac*1e9)).UTC()
	return &t, ""
}

// metricValue sums the samples of a metric in Prometheus text format whose
// labels include every pair of match.
func metricValue(body []byte, name string, match map[string]string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		labels := ""
		if strings.HasPrefix(rest, "{") {
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		if !strings.HasPrefix(rest, " ") {
			continue // a longer metric name
		}
		if !labelsMatch(labels, match) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

func labelsMatch(labels string, match map[string]string) bool {
	for k, v := range match {
		if !strings.Contains(labels, k+`="`+v+`"`) {
			return false
		}
	}
	return true
}

// hasSidecar reports whether a pod runs weft-proxy.
func hasSidecar(p *corev1.Pod) bool {
	is := func(c corev1.Container) bool { return c.Name == injector.ProxyName }
	return slices.ContainsFunc(p.Spec.InitContainers, is) || slices.ContainsFunc(p.Spec.Containers, is)
}

func printStatus(g *globals, e *env, r *statusReport) {
	now := e.now()
	for _, cp := range r.ControlPlanes {
		if cp.Error != "" {
			fmt.Fprintf(g.out, "control plane %s: UNREACHABLE: %s\n", cp.Pod, cp.Error)
			continue
		}
		fmt.Fprintf(g.out, "control plane %s (weft %s): %d sidecar(s)\n", cp.Pod, cp.Version, cp.Sidecars)
	}
	fmt.Fprintln(g.out)
	if len(r.Sidecars) == 0 {
		fmt.Fprintln(g.out, "no sidecars connected")
	} else {
		t := newTable(g.out, "NAMESPACE", "POD", "SPIFFE ID", "TYPE", "STATE", "VERSION", "ACKED", "NACKS", "CERT EXPIRES")
		for _, s := range r.Sidecars {
			cert := s.CertError
			if s.CertNotAfter != nil {
				cert = until(*s.CertNotAfter, now)
			}
			for i, ty := range s.Types {
				if i == 0 {
					t.row(s.Namespace, s.Pod, s.SPIFFEID, ty.Type, ty.State, short(ty.Version), short(ty.Acked), strconv.Itoa(ty.NACKs), cert)
				} else {
					t.row(" ", " ", " ", ty.Type, ty.State, short(ty.Version), short(ty.Acked), strconv.Itoa(ty.NACKs), " ")
				}
			}
			if len(s.Types) == 0 {
				t.row(s.Namespace, s.Pod, s.SPIFFEID, "", "STALE", "", "", "0", cert)
			}
		}
		t.flush()
	}
	for _, s := range r.Sidecars {
		for _, ty := range s.Types {
			if ty.State == "NACKED" {
				fmt.Fprintf(g.out, "\nNACKED: %s/%s rejected %s version %s: %s\n", s.Namespace, s.Pod, ty.Type, short(ty.Version), ty.Error)
			}
		}
		if s.GenError != "" {
			// A failed generation, or a configuration withheld because a
			// response would exceed the xDS message limit.
			fmt.Fprintf(g.out, "\nnew config for %s/%s not sent (it keeps its last good config): %s\n", s.Namespace, s.Pod, s.GenError)
		}
	}
	for _, d := range r.Disconnected {
		fmt.Fprintf(g.out, "\nNOT CONNECTED: %s runs a sidecar that no control plane replica serves (starting, or cannot reach the control plane)\n", d)
	}
}
