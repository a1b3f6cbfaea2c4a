package weftctl

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	adminapi "github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/internal/sleep"
)

// grpcServerErrors are the gRPC statuses that count as failures, as a 5xx
// does: the server could not do what was asked (UNKNOWN, DEADLINE_EXCEEDED,
// INTERNAL, UNAVAILABLE, DATA_LOSS). A client's error (NOT_FOUND,
// INVALID_ARGUMENT, PERMISSION_DENIED…) is a successful answer, as a 4xx is.
var grpcServerErrors = []string{"2", "4", "13", "14", "15"}

// statRow is one workload's (or one route's) golden signals over the
// window: what its sidecars served (inbound requests).
type statRow struct {
	Workload string   `json:"workload"`
	Route    string   `json:"route,omitempty"`
	Meshed   string   `json:"meshed"` // pods with a sidecar / pods
	Requests float64  `json:"requests"`
	Success  *float64 `json:"successRate,omitempty"` // nil: no requests
	RPS      float64  `json:"rps"`
	P50ms    *float64 `json:"latencyP50Ms,omitempty"`
	P95ms    *float64 `json:"latencyP95Ms,omitempty"`
	P99ms    *float64 `json:"latencyP99Ms,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

type statReport struct {
	Namespace string    `json:"namespace"`
	Window    string    `json:"window"`
	Rows      []statRow `json:"rows"`
}

type statOptions struct {
	window  time.Duration
	byRoute bool
	wait    func(context.Context, time.Duration) error
}

func newStat(g *globals) *cobra.Command {
	o := statOptions{wait: sleepCtx}
	cmd := &cobra.Command{
		Use:   "stat",
		Short: "Success rate, requests per second and latency of each workload's HTTP and gRPC traffic",
		Long: `stat reads the request metrics of every sidecar in the namespace twice,
--window apart, and shows for each workload (its Deployment, StatefulSet or
DaemonSet; a bare pod by name) what its sidecars served in between: the
success rate (responses that are not 5xx, and gRPC calls that did not end
UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE or DATA_LOSS), requests
per second, and the 50th, 95th and 99th percentile latency from the
sidecars' histograms (interpolated within a bucket, as Prometheus's
histogram_quantile does). --route splits each workload by route.

Only ports that carry HTTP through the sidecar's HTTP engine are counted;
a workload without such traffic shows "-".`,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.env(cmd.Context())
			if err != nil {
				return err
			}
			r, err := buildStat(cmd.Context(), e, o)
			if err != nil {
				return err
			}
			if ok, err := printStructured(g.out, g.output, r); ok || err != nil {
				return err
			}
			printStat(g, r, o.byRoute)
			return nil
		},
	}
	cmd.Flags().DurationVar(&o.window, "window", 10*time.Second, "time between the two readings")
	cmd.Flags().BoolVar(&o.byRoute, "route", false, "one row per workload and route")
	return cmd
}

// sleepCtx waits d of wall time; ctx's error if it ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if !sleep.For(ctx, clock.RealClock{}, d) {
		return ctx.Err()
	}
	return nil
}

// podWorkload names the workload a pod belongs to: its Deployment (the
// ReplicaSet's name without the pod-template-hash), StatefulSet,
// DaemonSet or Job, else the pod itself.
func podWorkload(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return "deploy/" + strings.TrimSuffix(o.Name, "-"+h)
			}
			return "rs/" + o.Name
		}
		return strings.ToLower(o.Kind) + "/" + o.Name
	}
	return "pod/" + p.Name
}

// reading is one sidecar's HTTP metrics, by row key.
type reading struct {
	total, failed map[string]float64
	buckets       map[string]map[float64]float64 // cumulative count by upper bound
}

func buildStat(ctx context.Context, e *env, o statOptions) (*statReport, error) {
	if o.window <= 0 {
		return nil, fmt.Errorf("weftctl stat: --window must be positive")
	}
	list, err := e.kube.CoreV1().Pods(e.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("weftctl stat: list pods in %s: %w", e.namespace, err)
	}
	type podState struct {
		pod      *corev1.Pod
		workload string
		before   *reading
		err      error
	}
	var pods []*podState
	meshed, all := map[string]int{}, map[string]int{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		w := podWorkload(p)
		all[w]++
		if hasSidecar(p) {
			meshed[w]++
			pods = append(pods, &podState{pod: p, workload: w})
		}
	}
	read := func(ps *podState) (*reading, error) {
		b, err := e.admin.podGet(ctx, ps.pod, sidecarHealthPort, "/metrics")
		if err != nil {
			return nil, err
		}
		return parseReading(b, ps.workload, o.byRoute)
	}
	for _, ps := range pods {
		ps.before, ps.err = read(ps)
	}
	if err := o.wait(ctx, o.window); err != nil {
		return nil, err
	}
	rows := map[string]*statRow{}
	row := func(key string) *statRow {
		if r := rows[key]; r != nil {
			return r
		}
		w, route, _ := strings.Cut(key, "\x00")
		r := &statRow{Workload: w, Route: route, Meshed: fmt.Sprintf("%d/%d", meshed[w], all[w])}
		rows[key] = r
		return r
	}
	buckets := map[string]map[float64]float64{}
	for w := range all {
		if !o.byRoute {
			row(w)
		}
	}
	for _, ps := range pods {
		after, err := read(ps)
		if ps.err == nil {
			ps.err = err
		}
		if ps.err != nil {
			r := row(ps.workload)
			r.Errors = append(r.Errors, ps.pod.Name+": "+ps.err.Error())
			continue
		}
		for key, v := range after.total {
			r := row(key)
			d := delta(ps.before.total[key], v)
			r.Requests += d
			f := delta(ps.before.failed[key], after.failed[key])
			if r.Success == nil {
				r.Success = new(float64)
			}
			*r.Success += d - f // successes for now; a rate below
		}
		for key, bs := range after.buckets {
			if buckets[key] == nil {
				buckets[key] = map[float64]float64{}
			}
			for le, v := range bs {
				buckets[key][le] += delta(ps.before.buckets[key][le], v)
			}
		}
	}
	rep := &statReport{Namespace: e.namespace, Window: o.window.String()}
	secs := o.window.Seconds()
	for key, r := range rows {
		r.RPS = r.Requests / secs
		if r.Success != nil {
			if r.Requests > 0 {
				*r.Success /= r.Requests
			} else {
				r.Success = nil
			}
		}
		if bs := buckets[key]; len(bs) > 0 {
			r.P50ms, r.P95ms, r.P99ms = quantileMs(0.50, bs), quantileMs(0.95, bs), quantileMs(0.99, bs)
		}
		rep.Rows = append(rep.Rows, *r)
	}
	slices.SortFunc(rep.Rows, func(a, b statRow) int {
		if c := strings.Compare(a.Workload, b.Workload); c != 0 {
			return c
		}
		return strings.Compare(a.Route, b.Route)
	})
	return rep, nil
}

// delta is a counter's increase between two readings; a counter that went
// down was reset (the sidecar restarted), and its new value is the increase.
func delta(before, after float64) float64 {
	if after < before {
		return after
	}
	return after - before
}

// parseReading reads one sidecar's exposition: inbound requests, failed
// ones and latency buckets, keyed by workload (and route).
func parseReading(body []byte, workload string, byRoute bool) (*reading, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	r := &reading{total: map[string]float64{}, failed: map[string]float64{}, buckets: map[string]map[float64]float64{}}
	key := func(m *dto.Metric) (string, map[string]string, bool) {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["direction"] != "inbound" {
			return "", nil, false
		}
		if byRoute {
			return workload + "\x00" + l["route"], l, true
		}
		return workload, l, true
	}
	if f := fams[adminapi.HTTPRequestsMetric]; f != nil {
		for _, m := range f.GetMetric() {
			k, l, ok := key(m)
			if !ok {
				continue
			}
			v := m.GetCounter().GetValue()
			r.total[k] += v
			if l["class"] == "5xx" || slices.Contains(grpcServerErrors, l["grpc_status"]) {
				r.failed[k] += v
			}
		}
	}
	if f := fams[adminapi.HTTPLatencyMetric]; f != nil {
		for _, m := range f.GetMetric() {
			k, _, ok := key(m)
			if !ok {
				continue
			}
			if r.buckets[k] == nil {
				r.buckets[k] = map[float64]float64{}
			}
			for _, b := range m.GetHistogram().GetBucket() {
				r.buckets[k][b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
	}
	return r, nil
}

// quantileMs is the q-quantile of a histogram's cumulative buckets, in
// milliseconds, computed as Prometheus's histogram_quantile does: the
// bucket that holds the rank, linear interpolation within it (from 0 for
// the first bucket); a rank in the +Inf bucket gives the highest finite
// bound. nil when the histogram is empty.
func quantileMs(q float64, cum map[float64]float64) *float64 {
	les := make([]float64, 0, len(cum))
	for le := range cum {
		les = append(les, le)
	}
	slices.Sort(les)
	if len(les) == 0 || !math.IsInf(les[len(les)-1], 1) {
		return nil
	}
	total := cum[les[len(les)-1]]
	if total == 0 {
		return nil
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, le := range les {
		c := cum[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				v := prevLe * 1000
				return &v
			}
			v := prevLe
			if c > prevCount {
				v += (le - prevLe) * (rank - prevCount) / (c - prevCount)
			}
			v *= 1000
			return &v
		}
		prevLe, prevCount = le, c
	}
	return nil
}

func printStat(g *globals, r *statReport, byRoute bool) {
	header := []string{"WORKLOAD", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"}
	if byRoute {
		header = slices.Insert(header, 1, "ROUTE")
	}
	t := newTable(g.out, header...)
	pct := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatFloat(*v*100, 'f', 2, 64) + "%"
	}
	ms := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatFloat(*v, 'f', 1, 64) + "ms"
	}
	for _, row := range r.Rows {
		cells := []string{row.Workload, row.Meshed, pct(row.Success), strconv.FormatFloat(row.RPS, 'f', 1, 64), ms(row.P50ms), ms(row.P95ms), ms(row.P99ms)}
		if byRoute {
			cells = slices.Insert(cells, 1, row.Route)
		}
		t.row(cells...)
	}
	t.flush()
	for _, row := range r.Rows {
		for _, e := range row.Errors {
			fmt.Fprintf(g.err, "%s: %s\n", row.Workload, e)
		}
	}
}
