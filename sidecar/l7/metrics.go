package l7

import (
	"net/http"
	"time"

	"github.com/weftmesh/weft/api/admin"
	"github.com/weftmesh/weft/internal/metrics"
)

// Metrics are the golden signals of the HTTP data plane, per direction,
// route, destination cluster (outbound) and peer identity: requests by
// status class and gRPC status, latency, requests in flight, retries.
// Every label's values come from the configuration (routes, clusters) or
// from verified SPIFFE IDs, so the series are bounded.
type Metrics struct {
	requests *metrics.CounterVec
	latency  *metrics.HistogramVec
	inFlight *metrics.GaugeVec
	retries  *metrics.CounterVec
	ejected  *metrics.CounterVec
}

// NewMetrics registers the families in r.
func NewMetrics(r *metrics.Registry) (*Metrics, error) {
	m := &Metrics{}
	var err error
	if m.requests, err = r.NewCounterVec(admin.HTTPRequestsMetric,
		"HTTP requests the sidecar finished, by direction, route, destination cluster (outbound), peer SPIFFE ID, status class (2xx..5xx) and gRPC status (empty for other requests).",
		"direction", "route", "dst", "peer", "class", "grpc_status"); err != nil {
		return nil, err
	}
	if m.latency, err = r.NewHistogramVec(admin.HTTPLatencyMetric,
		"Time from a request's head to the end of its response, by direction, route, destination cluster (outbound), peer SPIFFE ID and status class.",
		metrics.LatencyBuckets, "direction", "route", "dst", "peer", "class"); err != nil {
		return nil, err
	}
	if m.inFlight, err = r.NewGaugeVec("weft_sidecar_http_requests_in_flight",
		"HTTP requests being served, by direction and route.", "direction", "route"); err != nil {
		return nil, err
	}
	if m.retries, err = r.NewCounterVec("weft_sidecar_http_retries_total",
		"Tries after a request's first, by route and destination cluster.", "route", "dst"); err != nil {
		return nil, err
	}
	if m.ejected, err = r.NewCounterVec("weft_sidecar_http_ejections_total",
		"Endpoints taken out of rotation by outlier detection (consecutive failures), by cluster.", "cluster"); err != nil {
		return nil, err
	}
	return m, nil
}

// Ejected counts an ejection of an endpoint of cluster (a balancer's
// OnEject).
func (m *Metrics) Ejected(cluster string) {
	if m != nil {
		m.ejected.With(cluster).Inc()
	}
}

// requestInfo is what the forwarder learns of a request for its metrics:
// the cluster it went to, the server's identity, the retries.
type requestInfo struct {
	dst, peer string
	retries   int
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and the deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusClasses are the class labels by status/100, written out so that
// counting a request builds no string.
var statusClasses = [...]string{1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

// record counts one finished request.
func (m *Metrics) record(direction, route string, info *requestInfo, w *statusWriter, start time.Time) {
	m.recordStatus(direction, route, info, w.status, w.Header(), time.Since(start))
}

// recordStatus counts one request answered with status (0: none, counted
// as 5xx) and headers h, d after its head arrived.
func (m *Metrics) recordStatus(direction, route string, info *requestInfo, status int, h http.Header, d time.Duration) {
	class := "5xx" // a handler that panicked (an aborted response) wrote nothing final
	if s := status; s >= 100 && s < 600 {
		class = statusClasses[s/100]
	}
	gs := h.Get("Grpc-Status")
	if gs == "" {
		gs = h.Get(http.TrailerPrefix + "Grpc-Status")
	}
	m.requests.With(direction, route, info.dst, info.peer, class, gs).Inc()
	m.latency.With(direction, route, info.dst, info.peer, class).Observe(d.Seconds())
	if info.retries > 0 {
		m.retries.With(route, info.dst).Add(uint64(info.retries))
	}
}

// serve runs next for one request, counted in m (nil: not counted).
func (m *Metrics) serve(direction, route string, info *requestInfo, w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request)) {
	if m == nil {
		next(w, r)
		return
	}
	start := time.Now()
	g := m.inFlight.With(direction, route)
	g.Inc()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		g.Dec()
		m.record(direction, route, info, sw, start)
	}()
	next(sw, r)
}
