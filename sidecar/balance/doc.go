// Package balance chooses the endpoint of a cluster that the next request
// (or connection) goes to, and takes failing endpoints out of rotation.
//
// The choice is "power of two choices" over a latency-weighted load: two
// distinct endpoints are drawn at random and the one with the lower cost
// wins, where an endpoint's cost is its peak-sensitive moving average of
// response time multiplied by one more than the requests in flight to it.
// This is the peak-EWMA balancer of Finagle, which Linkerd's proxy uses: a
// slow endpoint's average jumps to a slow response at once and decays
// back over the decay time, so it loses traffic immediately and wins it
// back gradually; an endpoint with requests piling up costs more in
// proportion. Two random choices (rather than the global minimum) keep
// many independent clients from stampeding the one endpoint that looks
// best to all of them. An endpoint that has not answered yet starts at
// the default response time.
//
// Costs within a tolerance of each other (Config.Tolerance, 25 % by
// default) are a tie, and the endpoint picked longer ago wins it. Peak-EWMA
// alone gives alike endpoints unequal shares: each estimate is the recent
// peak of a noisy series, so whichever endpoint was lucky lately wins every
// draw until its own peak comes. Simulated (BenchmarkSpreadAmongEqualEndpoints,
// one client sending 900 sequential requests over 3 alike endpoints whose
// answers vary log-normally by σ 0.25) the shares strayed from 4 % to
// 174 % of even; with the tolerance every window of 900 stays within
// ±10 %, as round robin would, while an endpoint answering 2× slower still
// gets a fifth of its share and one 5× slower a twentieth
// (BenchmarkSlowEndpointShare). In-flight requests double the cost per
// request, far beyond the tolerance, so least-request behaviour is kept.
//
// Outlier ejection follows Envoy's consecutive-failures detection
// (Cluster.outlier_detection): an endpoint that fails Consecutive times in
// a row (a connect failure, a reset, a 5xx or, for gRPC, an unavailable
// status: the caller decides what a failure is) is ejected for
// BaseEjection × the number of times it has been ejected, at most
// MaxEjection, and never more than MaxEjectionPercent of the endpoints at
// once (at least one may be). When every endpoint is ejected the balancer
// picks among all of them rather than fail every request (Envoy's panic
// mode).
//
// The package is pure: no I/O, no goroutines; time comes from
// Config.Clock and randomness from Config.Rand, so tests move both. It
// imports the standard library and k8s.io/utils/clock's interfaces only.
package balance
